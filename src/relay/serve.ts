/**
 * `peerup relay serve` / `relay-server serve`: runs the relay until its signal fires, reloading
 * relay_authorized_keys whenever the file changes (or on SIGHUP).
 *
 * @packageDocumentation
 */

import * as os from 'node:os'
import { multiaddr } from '@multiformats/multiaddr'
import { loadIdentity, peerIdOf } from '../auth/identity.ts'
import { loadRelayConfig, resolveIn } from '../config/load.ts'
import { archiveLastGood } from '../config/safety.ts'
import { type Env, readEnv } from '../env.ts'
import type { Logger } from '../log/index.ts'
import { createRelayMetrics, libp2pMetricsInto, MetricsServer } from '../metrics/index.ts'
import { Telemetry } from '../metrics/telemetry.ts'
import { type Component, Optional, startAll, stopAll } from '../util/components.ts'
import { SystemdNotify } from '../util/sd-notify.ts'
import { type FileWatch, watchFile } from '../util/watch.ts'
import { RelayAdminServer } from './admin.ts'
import { RelayPairingService } from './pairing.ts'
import {
  countCircuits,
  type RelayHandle,
  type StartRelayOptions,
  startRelay,
  stopFailedLogger,
} from './server.ts'

export interface RunRelayOptions {
  configFile: string
  log: Logger
  signal: AbortSignal
  onReady?: (relay: RelayHandle, extra: { metricsAddress: string | undefined }) => void
  /** For NOTIFY_SOCKET and WATCHDOG_USEC; the process environment by default. */
  env?: Env
}

/**
 * Runs the relay until `signal` fires: its components, in the order they start (and the reverse
 * of the order they stop), are the telemetry (opt-in, `telemetry:` in relay-server.yaml), the
 * relay node, `/metrics`, pairing (sponsoring, group codes), its admin socket, the reload of
 * relay_authorized_keys, and systemd's notifications.
 */
export async function runRelay(options: RunRelayOptions): Promise<void> {
  const { log } = options
  const { config, dir } = await loadRelayConfig(options.configFile)
  const env = options.env ?? readEnv()
  const metrics = config.telemetry.metrics.enabled ? createRelayMetrics() : undefined
  const telemetry = new Telemetry({ relay: metrics, audit: config.telemetry.audit, dir })
  const relay = new RelayNode(() => ({
    config,
    dir,
    log,
    observer: telemetry.observer,
    ...(metrics === undefined ? {} : { libp2pMetrics: libp2pMetricsInto(metrics.registry) }),
  }))
  const metricsServer =
    metrics === undefined
      ? undefined
      : new MetricsServer(
          { registry: metrics.registry, log: log.child('metrics') },
          {
            listenAddress: config.telemetry.metrics.listen_address,
            beforeScrape: () => {
              metrics.reservations.set(relay.handle.node.services.relay.reservations.size)
              metrics.circuits.set(countCircuits(relay.handle.node))
            },
          },
        )
  const pairing = new RelayPairingService({
    get relay() {
      return relay.handle
    },
    get observer() {
      return telemetry.observer
    },
    config,
    dir,
    log: log.child('pairing'),
  })
  const components: Component[] = [
    telemetry,
    relay,
    ...(metricsServer === undefined ? [] : [metricsServer]),
    pairing,
    // A relay that cannot open its admin socket still relays; it only cannot make group codes.
    new Optional(new RelayAdminServer({ pairing, log: log.child('admin') }, { dir }), (err) =>
      log.warn('relay admin socket unavailable: `relay pair` will not work', { error: err as Error }),
    ),
    new RelayKeysReload(relay, { keysFile: resolveIn(dir, config.security.authorized_keys_file), log }),
    new SystemdNotify(
      { log: log.child('notify') },
      {
        notifySocket: env.notifySocket,
        watchdogUsec: env.watchdogUsec,
        announce: async () => {
          log.info('relay started', {
            peer: relay.handle.peerId,
            addresses: relay.handle.addresses().join(' '),
            authorized: relay.handle.authorized.size,
          })
          // The config this start succeeded with is the one `relay config rollback` comes back to.
          await archiveLastGood(options.configFile).catch((err: unknown) =>
            log.warn('could not archive the last-known-good config', { error: err as Error }),
          )
          return `relaying as ${relay.handle.peerId}`
        },
        // The watchdog is pinged while the node runs.
        healthy: () => relay.handle.node.status === 'started',
      },
    ),
  ]
  const stopFailed = stopFailedLogger(log)
  await startAll(components, stopFailed)
  try {
    options.onReady?.(relay.handle, { metricsAddress: metricsServer?.address })
    if (!options.signal.aborted) {
      await new Promise<void>((resolve) =>
        options.signal.addEventListener('abort', () => resolve(), { once: true }),
      )
    }
    log.info('relay stopping')
  } finally {
    await stopAll(components, stopFailed)
  }
}

/**
 * The relay node (src/relay/server.ts) as a component of `relay serve`. Its options are asked for
 * when it starts: the observer is the telemetry's, started before it.
 */
class RelayNode implements Component {
  readonly #options: () => StartRelayOptions
  #handle: RelayHandle | undefined

  constructor(options: () => StartRelayOptions) {
    this.#options = options
  }

  /** The running relay; only once started. */
  get handle(): RelayHandle {
    if (this.#handle === undefined) {
      throw new Error('the relay has not started')
    }
    return this.#handle
  }

  async start(): Promise<void> {
    this.#handle = await startRelay(this.#options())
  }

  /** Stops it (the handle stays readable, for what still asks during the shutdown). */
  async stop(): Promise<void> {
    await this.#handle?.stop()
  }
}

/**
 * Reloads relay_authorized_keys (`keysFile`) whenever the file changes, and on SIGHUP: `start()`
 * watches the file and listens for the signal, `stop()` ends both.
 */
class RelayKeysReload implements Component {
  readonly #components: { handle: RelayHandle }
  readonly #init: { keysFile: string; log: Logger }
  #watch: FileWatch | undefined
  readonly #onHup = (): void => this.#reload('SIGHUP')

  constructor(components: { handle: RelayHandle }, init: { keysFile: string; log: Logger }) {
    this.#components = components
    this.#init = init
  }

  start(): void {
    this.#watch = watchFile(this.#init.keysFile, () => this.#reload('file changed'))
    process.on('SIGHUP', this.#onHup)
  }

  stop(): void {
    process.off('SIGHUP', this.#onHup)
    this.#watch?.close()
    this.#watch = undefined
  }

  #reload(why: string): void {
    const { log } = this.#init
    this.#components.handle
      .reloadAuthorized()
      .then(({ added, removed }) => {
        if (added.length > 0 || removed.length > 0) {
          log.info('relay_authorized_keys reloaded', { why, added: added.length, removed: removed.length })
        }
      })
      .catch((err: unknown) =>
        log.error('relay_authorized_keys reload failed; keeping the previous set', { error: err as Error }),
      )
  }
}

/**
 * What `relay info` prints: the relay's peer id and the full addresses nodes should use (to give
 * to `peerup init --relay`), read from its files (the relay need not be running):
 * announce_addresses when set, else the listen addresses with wildcards replaced by this
 * machine's non-loopback interface addresses.
 */
export async function relayInfo(configFile: string) {
  const { config, dir } = await loadRelayConfig(configFile)
  const peerId = peerIdOf(await loadIdentity(resolveIn(dir, config.identity.key_file)))
  const { announce_addresses: announce, listen_addresses: listen } = config.network
  const base = announce.length > 0 ? announce : expandWildcards(listen)
  return {
    peerId,
    addresses: [...new Set(base.map((a) => (a.includes('/p2p/') ? a : `${a}/p2p/${peerId}`)))],
  }
}

const WILDCARD_FAMILIES: Record<string, string> = { 'ip4/0.0.0.0': 'IPv4', 'ip6/::': 'IPv6' }

function expandWildcards(listen: string[]): string[] {
  const ifaces = Object.values(os.networkInterfaces()).flatMap((list) => list ?? [])
  return listen.flatMap((a) => {
    const ip = multiaddr(a).getComponents()[0]
    const family = ip === undefined ? undefined : WILDCARD_FAMILIES[`${ip.name}/${ip.value}`]
    if (ip === undefined || family === undefined) {
      return [a]
    }
    const rest = a.slice(a.indexOf('/', 1 + ip.name.length + 1))
    // Link-local addresses are useless to a peer elsewhere.
    return ifaces
      .filter((x) => x.family === family && !x.internal && !x.address.startsWith('fe80'))
      .map((x) => `/${ip.name}/${x.address}${rest}`)
  })
}
