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
import type { RelayConfig } from '../config/schema.ts'
import { type Env, readEnv } from '../env.ts'
import type { Logger } from '../log/index.ts'
import { openAuditLog } from '../metrics/audit.ts'
import { createRelayMetrics, libp2pMetricsInto, startMetricsServer } from '../metrics/index.ts'
import { createObserver } from '../metrics/observer.ts'
import { createNotifier } from '../util/sd-notify.ts'
import { watchFile } from '../util/watch.ts'
import { startRelayAdmin } from './admin.ts'
import { startRelayPairing } from './pairing.ts'
import { countCircuits, type RelayHandle, startRelay } from './server.ts'

/** Options of {@link runRelay}. */
export interface RunRelayOptions {
  configFile: string
  log: Logger
  signal: AbortSignal
  onReady?: (relay: RelayHandle, extra: { metricsAddress: string | undefined }) => void
  /** For NOTIFY_SOCKET and WATCHDOG_USEC; the process environment by default. */
  env?: Env
}

/** Runs the relay until `signal` fires. */
export async function runRelay(options: RunRelayOptions): Promise<void> {
  const { log } = options
  const { config, dir } = await loadRelayConfig(options.configFile)
  // Metrics and the audit log are opt-in (telemetry: in relay-server.yaml).
  const metrics = config.telemetry.metrics.enabled ? createRelayMetrics() : undefined
  const audit = config.telemetry.audit.enabled
    ? await openAuditLog(resolveIn(dir, config.telemetry.audit.file))
    : undefined
  const observer = createObserver({ relay: metrics, audit })
  const relay = await startRelay({
    config,
    dir,
    log,
    observer,
    ...(metrics === undefined ? {} : { libp2pMetrics: libp2pMetricsInto(metrics.registry) }),
  }).catch(async (err: unknown) => {
    await audit?.close()
    throw err
  })
  const metricsServer =
    metrics === undefined
      ? undefined
      : await startMetricsServer(
          metrics.registry,
          config.telemetry.metrics.listen_address,
          log.child('metrics'),
          () => {
            metrics.reservations.set(relay.node.services.relay.reservations.size)
            metrics.circuits.set(countCircuits(relay.node))
          },
        ).catch(async (err: unknown) => {
          await relay.stop()
          await audit?.close()
          throw err
        })
  // Pairing (sponsoring, group codes) and its admin socket; a relay that cannot open the socket
  // still relays, it only cannot make group codes.
  const pairing = await startRelayPairing({ relay, config, dir, log: log.child('pairing'), observer }).catch(
    async (err: unknown) => {
      await relay.stop()
      throw err
    },
  )
  const admin = await startRelayAdmin({ dir, pairing, log: log.child('admin') }).catch((err: unknown) => {
    log.warn('relay admin socket unavailable: `relay pair` will not work', { error: err as Error })
    return undefined
  })
  const keysFile = resolveIn(dir, config.security.authorized_keys_file)
  const reload = (why: string): void => {
    relay
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
  const watcher = watchFile(keysFile, () => reload('file changed'))
  const onHup = (): void => reload('SIGHUP')
  process.on('SIGHUP', onHup)
  const env = options.env ?? readEnv()
  const notifier = await createNotifier(env.notifySocket, log.child('notify'))
  let watchdog: NodeJS.Timeout | undefined
  try {
    log.info('relay started', {
      peer: relay.peerId,
      addresses: relay.addresses().join(' '),
      authorized: relay.authorized.size,
    })
    // The config this start succeeded with is the one `relay config rollback` comes back to.
    await archiveLastGood(options.configFile).catch((err: unknown) =>
      log.warn('could not archive the last-known-good config', { error: err as Error }),
    )
    // systemd (Type=notify): ready now; the watchdog is pinged while the node runs.
    await notifier.notify(`READY=1\nSTATUS=relaying as ${relay.peerId}`)
    if (notifier.enabled && env.watchdogUsec !== undefined) {
      watchdog = setInterval(
        () => {
          if (relay.node.status === 'started') {
            notifier.notify('WATCHDOG=1').catch(() => {})
          }
        },
        Math.max(Math.floor(env.watchdogUsec / 2000), 100),
      )
    }
    options.onReady?.(relay, { metricsAddress: metricsServer?.address })
    if (!options.signal.aborted) {
      await new Promise<void>((resolve) =>
        options.signal.addEventListener('abort', () => resolve(), { once: true }),
      )
    }
    log.info('relay stopping')
    await notifier.notify('STOPPING=1')
  } finally {
    clearInterval(watchdog)
    notifier.close()
    watcher.close()
    process.off('SIGHUP', onHup)
    await admin?.close()
    await pairing.stop()
    await relay.stop()
    await metricsServer?.close()
    await audit?.close()
  }
}

/** What `relay info` prints. */
export interface RelayInfo {
  peerId: string
  /** Full addresses to give to `peerup init --relay`. */
  addresses: string[]
}

/**
 * The relay's peer id and the addresses nodes should use, read from its files (the relay need
 * not be running): announce_addresses when set, else the listen addresses with wildcards replaced
 * by this machine's non-loopback interface addresses.
 */
export async function relayInfo(configFile: string): Promise<RelayInfo> {
  const { config, dir } = await loadRelayConfig(configFile)
  const peerId = peerIdOf(await loadIdentity(resolveIn(dir, config.identity.key_file)))
  return { peerId, addresses: advertisedAddresses(config, peerId) }
}

function advertisedAddresses(config: RelayConfig, peerId: string): string[] {
  const base =
    config.network.announce_addresses.length > 0
      ? config.network.announce_addresses
      : expandWildcards(config.network.listen_addresses)
  return [...new Set(base.map((a) => (a.includes('/p2p/') ? a : `${a}/p2p/${peerId}`)))]
}

function expandWildcards(listen: string[]): string[] {
  const ifaces = Object.values(os.networkInterfaces()).flatMap((list) => list ?? [])
  const out: string[] = []
  for (const a of listen) {
    const components = multiaddr(a).getComponents()
    const ip = components[0]
    const rest = a.slice(a.indexOf('/', 1 + (ip?.name.length ?? 0) + 1))
    if (ip?.name === 'ip4' && ip.value === '0.0.0.0') {
      for (const i of ifaces.filter((x) => x.family === 'IPv4' && !x.internal)) {
        out.push(`/ip4/${i.address}${rest}`)
      }
    } else if (ip?.name === 'ip6' && ip.value === '::') {
      // Link-local addresses are useless to a peer elsewhere.
      for (const i of ifaces.filter(
        (x) => x.family === 'IPv6' && !x.internal && !x.address.startsWith('fe80'),
      )) {
        out.push(`/ip6/${i.address}${rest}`)
      }
    } else {
      out.push(a)
    }
  }
  return out
}
