/**
 * `runDaemon()`: the long-running agent in the foreground, assembled as an ordered list of
 * components (src/util/components.ts; the order is {@link assembleDaemon}'s list). The local API
 * socket comes first, so a second daemon on the same config stops before it touches the network.
 * It stops in the reverse order when its signal fires or a client asks (`POST /v1/shutdown`); a
 * start that fails half-way stops what had started.
 *
 * @packageDocumentation
 */

import * as path from 'node:path'
import { loadNodeConfig } from '../config/load.ts'
import { NODE_FILES } from '../config/paths.ts'
import { archiveLastGood, readPending } from '../config/safety.ts'
import { type Env, readEnv } from '../env.ts'
import type { Logger } from '../log/index.ts'
import { NO_OBSERVER, type Observer } from '../metrics/observer.ts'
import type { NodeRuntime } from '../p2p/runtime.ts'
import { type Component, componentName, startAll, stopAll } from '../util/components.ts'
import type { ApiLimits, Route, UpgradeRoute } from '../util/local-api.ts'
import { SystemdNotify } from '../util/sd-notify.ts'
import { socketAnswers } from '../util/socket.ts'
import { DaemonApi, DaemonApiSocket } from './api-socket.ts'
import { settleApplyAtStart } from './confirm.ts'
import type { DaemonEvents } from './events.ts'
import type { ConfigGateway } from './gateway.ts'
import { DaemonNetworks } from './networks.ts'
import type { PersistentProxies } from './persistent-proxies.ts'
import type { ProxyManager } from './proxies.ts'
import type { ConfigApplier } from './reload.ts'
import { DaemonUi } from './ui.ts'

/** What a started daemon tells its caller. */
export interface DaemonReady {
  peerId: string
  socketPath: string
  cookieFile: string
  addresses: string[]
  services: string[]
  /** The networks that run (docs/cli.md "Several networks"), the main one first. */
  networks: Array<{ name: string; peerId: string }>
  /** Where `/metrics` is served, when metrics are on. */
  metricsAddress: string | undefined
  /** Where the web dashboard is served, when it is on. */
  uiAddress: string | undefined
  /** The API's route table as served (a test that must cover every route reads it here). */
  routes: readonly Route[]
  upgrades: readonly UpgradeRoute[]
}

export interface DaemonOptions {
  configFile: string
  log: Logger
  /** Stops the daemon when aborted (the CLI's first SIGINT/SIGTERM). */
  signal: AbortSignal
  /** For NOTIFY_SOCKET and WATCHDOG_USEC; the process environment by default. */
  env?: Env
  /** Called once the daemon serves its API. */
  onReady?: (info: DaemonReady) => void
  /** The local API's timeouts and connection cap (default `API_LIMITS`; tests shorten them). */
  apiLimits?: Partial<ApiLimits>
}

/**
 * What the daemon's components share. Each value is read at start or later, by which time the
 * component that provides it (earlier in the list) has started.
 */
export interface DaemonComponents {
  log: Logger
  /** Metrics and audit: the telemetry's, which does nothing until it starts. */
  observer: Observer
  /** The node: only once it started. */
  runtime: NodeRuntime
  /** Made on the running node when their turn to start comes (see `Deferred`). */
  events: DaemonEvents
  proxies: ProxyManager
  /** The proxies of config.yaml's `proxies:`. */
  persistentProxies: PersistentProxies
  /** The SOCKS and HTTP CONNECT gateway of config.yaml's `socks:`. */
  gateway: ConfigGateway
  /** Applies config.yaml, for the file watcher and the rollback of an unconfirmed apply alike. */
  configApplier: ConfigApplier
  api: DaemonApiSocket
  /** The web dashboard (off unless config.yaml's `ui.listen_address` is set). */
  ui: DaemonUi
  /** Starts the orderly shutdown (the same as SIGTERM). */
  shutdown(reason: Error): void
}

export interface DaemonExit {
  /**
   * Config keys that need the daemon to run again (an unconfirmed apply was undone, and what it
   * restored differs from what the daemon started with): the caller runs itself again.
   */
  restart: string[] | undefined
}

/** Runs the daemon until `signal` fires or a client asks it to stop. */
export async function runDaemon(options: DaemonOptions): Promise<DaemonExit> {
  const { log } = options
  await settleApplyAtStart(options.configFile, log)
  const stopping = new AbortController()
  const stop = AbortSignal.any([options.signal, stopping.signal])
  const daemon = await assembleDaemon(options, stopping)
  const stopFailed = (err: unknown, component: Component): void =>
    log.warn('cleanup step failed', { component: componentName(component), error: err as Error })
  await startAll(daemon.list, stopFailed)
  try {
    const rt = daemon.networks.main.runtime
    // A start that got this far on a confirmed config is the one to come back to.
    if ((await readPending(rt.configFile)) === undefined) {
      await archiveLastGood(rt.configFile)
    }
    options.onReady?.({
      peerId: rt.peerId,
      socketPath: daemon.api.socketPath,
      cookieFile: daemon.api.cookieFile,
      addresses: rt.node.getMultiaddrs().map(String),
      services: rt.services.list().map((s) => s.name),
      networks: daemon.networks.running.map((n) => ({ name: n.name, peerId: n.runtime.peerId })),
      metricsAddress: daemon.metrics?.address,
      uiAddress: daemon.ui.address,
      routes: daemon.api.routes,
      upgrades: daemon.api.upgrades,
    })
    if (!stop.aborted) {
      await new Promise<void>((resolve) => stop.addEventListener('abort', () => resolve(), { once: true }))
    }
    log.info('daemon stopping', { why: (stop.reason as Error | undefined)?.message })
  } finally {
    await stopAll(daemon.list, stopFailed)
  }
  // An unconfirmed apply of any network's config that needs a fresh start restarts the daemon.
  return { restart: daemon.networks.restart }
}

/**
 * Makes the daemon's components (`list`, in the order they start), and returns those of them
 * {@link runDaemon} reads from; nothing runs before they start. Each network is one component
 * (src/daemon/network-stack.ts) inside {@link DaemonNetworks}; the API socket and cookie,
 * `/metrics`, the dashboard and systemd are the daemon's, one each.
 */
async function assembleDaemon(options: DaemonOptions, stopping: AbortController) {
  const { log } = options
  const env = options.env ?? readEnv()
  const { dir, config } = await loadNodeConfig(options.configFile)
  const shared: DaemonComponents = {
    log,
    get observer() {
      return networks.main.shared.observer
    },
    get runtime() {
      return networks.main.runtime
    },
    get events() {
      return networks.main.shared.events
    },
    get proxies() {
      return networks.main.shared.proxies
    },
    get persistentProxies() {
      return networks.main.shared.persistentProxies
    },
    get gateway() {
      return networks.main.shared.gateway
    },
    get configApplier() {
      return networks.main.shared.configApplier
    },
    get api() {
      return api
    },
    get ui() {
      return ui
    },
    shutdown: (reason) => stopping.abort(reason),
  }
  // Until the routes are in, every request is refused: there is no cookie yet.
  const api: DaemonApiSocket = new DaemonApiSocket(
    {
      log,
      get observer(): Observer {
        // Requests before the main network runs (refused: no cookie yet) are not counted.
        try {
          return networks.main.shared.observer
        } catch {
          return NO_OBSERVER
        }
      },
    },
    {
      socketPath: path.join(dir, NODE_FILES.socket),
      cookieFile: path.join(dir, NODE_FILES.cookie),
      limits: options.apiLimits,
    },
  )
  // Metrics and the audit log are opt-in (telemetry: in config.yaml); read at start.
  // prom-client is loaded only when they are on (docs/decisions/0018-daemon-idle-memory.md).
  const metricsModule = config.telemetry.metrics.enabled ? await import('../metrics/index.ts') : undefined
  const networks: DaemonNetworks = new DaemonNetworks(
    {
      log,
      api,
      get ui() {
        return ui
      },
      shutdown: shared.shutdown,
    },
    { mainConfigFile: options.configFile, createMetrics: metricsModule?.createNodeMetrics },
  )
  const metrics =
    metricsModule === undefined
      ? undefined
      : new metricsModule.MetricsServer(
          {
            registry: () =>
              metricsModule.mergedRegistry(
                networks.running.flatMap((n) => (n.metrics === undefined ? [] : [n.metrics.registry])),
              ),
            log: log.child('metrics'),
          },
          {
            listenAddress: config.telemetry.metrics.listen_address,
            beforeScrape: () => {
              for (const stack of networks.running) {
                stack.refreshMetrics()
              }
            },
          },
        )
  // After the API's routes are in: it serves the same table.
  const ui = new DaemonUi(shared)
  const list: Component[] = [
    api,
    networks,
    ...(metrics === undefined ? [] : [metrics]),
    new DaemonApi({ api, networks }),
    ui,
    systemdNotify(log, env, networks, api),
  ]
  return { list, networks, api, metrics, ui }
}

/** sd_notify: ready once everything runs, and a watchdog that pings while the main network is healthy. */
function systemdNotify(log: Logger, env: Env, networks: DaemonNetworks, api: DaemonApiSocket): SystemdNotify {
  return new SystemdNotify(
    { log: log.child('notify') },
    {
      notifySocket: env.notifySocket,
      watchdogUsec: env.watchdogUsec,
      announce: () => {
        const rt = networks.main.runtime
        const services = rt.services.list().map((s) => s.name)
        log.info('daemon started', {
          peer: rt.peerId,
          socket: api.socketPath,
          services: services.join(','),
          networks: networks.running.map((n) => n.name).join(','),
        })
        return `serving ${services.length} services as ${rt.peerId}`
      },
      // Healthy: the node runs, holds a reservation on some relay (when it has any) and its API answers.
      healthy: async () => {
        const rt = networks.main.runtime
        const relays = rt.supervisor.status()
        return (
          rt.node.status === 'started' &&
          (relays.length === 0 || relays.some((r) => r.reserved)) &&
          (await socketAnswers(api.socketPath))
        )
      },
      onUnhealthy: () => log.warn('health check failed: no watchdog ping'),
    },
  )
}
