/**
 * `runDaemon()`: the long-running agent in the foreground. In order: claim the local API socket
 * (so a second daemon on the same config stops before it touches the network), start the node
 * with its services and reservations, serve the API, write the cookie, tell systemd READY. It
 * follows authorized_keys and the names in config.yaml as they change, pings systemd's watchdog
 * while its health checks pass, and stops in reverse order when its signal fires or a client asks
 * (`POST /v1/shutdown`).
 *
 * @packageDocumentation
 */

import * as path from 'node:path'
import { loadNodeConfig, resolveIn } from '../config/load.ts'
import { NODE_FILES } from '../config/paths.ts'
import {
  archiveLastGood,
  ConfigNotConfirmedError,
  readPending,
  rollbackConfig,
  safetyFiles,
  settlePendingAtStart,
} from '../config/safety.ts'
import { type Env, readEnv } from '../env.ts'
import { catchUpGroups } from '../invite/catchup.ts'
import type { Logger } from '../log/index.ts'
import { openAuditLog } from '../metrics/audit.ts'
import {
  createNodeMetrics,
  libp2pMetricsInto,
  type NodeMetrics,
  setCounter,
  startMetricsServer,
} from '../metrics/index.ts'
import { createObserver, NO_OBSERVER, type Observer } from '../metrics/observer.ts'
import type { NodeRuntime } from '../p2p/runtime.ts'
import { startNodeRuntime } from '../p2p/runtime.ts'
import { removeCookie, writeCookie } from '../util/cookie.ts'
import { type ApiLimits, createLocalApiServer, type Route, type UpgradeRoute } from '../util/local-api.ts'
import { createNotifier } from '../util/sd-notify.ts'
import { listenOnSocket, socketAnswers } from '../util/socket.ts'
import { watchFile } from '../util/watch.ts'
import { VERSION } from '../version.ts'
import { DaemonEvents } from './events.ts'
import { ProxyManager } from './proxies.ts'
import { daemonRoutes, statusOf } from './server.ts'

/** What a started daemon tells its caller. */
export interface DaemonReady {
  peerId: string
  socketPath: string
  cookieFile: string
  addresses: string[]
  services: string[]
  /** Where `/metrics` is served, when metrics are on. */
  metricsAddress: string | undefined
  /** The API's route table as served (a test that must cover every route reads it here). */
  routes: readonly Route[]
  upgrades: readonly UpgradeRoute[]
}

/** Options of {@link runDaemon}. */
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

/** Runs the daemon until `signal` fires or a client asks it to stop. */
export async function runDaemon(options: DaemonOptions): Promise<void> {
  const { log } = options
  const env = options.env ?? readEnv()
  // An apply whose deadline passed while no daemon ran is undone before anything loads the config.
  const settled = await settlePendingAtStart(options.configFile)
  if (settled.action === 'reverted') {
    log.error('config apply was not confirmed before its deadline: previous config restored', {
      applied_at: settled.pending.appliedAt,
      deadline: settled.pending.deadline,
    })
  } else if (settled.action === 'cleared') {
    log.warn(
      'a config apply did not complete (config.yaml is not what it wrote): its confirmation was dropped',
    )
  }
  const { dir, config: startConfig } = await loadNodeConfig(options.configFile)
  const socketPath = path.join(dir, NODE_FILES.socket)
  const cookieFile = path.join(dir, NODE_FILES.cookie)
  const stopping = new AbortController()
  let failure: Error | undefined
  const stop = AbortSignal.any([options.signal, stopping.signal])
  const cleanups: Array<() => Promise<void> | void> = []
  const cleanup = async (): Promise<void> => {
    for (const fn of cleanups.splice(0).reverse()) {
      try {
        await fn()
      } catch (err) {
        log.warn('cleanup step failed', { error: err as Error })
      }
    }
  }

  // Routes are filled in once the node runs; until the cookie exists every request is refused.
  const routes: Route[] = []
  const upgrades: UpgradeRoute[] = []
  let cookie: string | undefined
  // Replaced once telemetry is set up; requests before that are refused anyway (no cookie yet).
  let observer: Observer = NO_OBSERVER
  const server = createLocalApiServer({
    routes,
    upgrades,
    cookie: () => cookie,
    version: VERSION,
    statusOf,
    ...(options.apiLimits === undefined ? {} : { limits: options.apiLimits }),
    onAccess: (a) => {
      observer.apiAccess(a.method, a.route, a.status, a.durationMs)
      log.debug('api request', { method: a.method, path: a.route, status: a.status })
    },
  })
  const notifier = await createNotifier(env.notifySocket, log.child('notify'))
  cleanups.push(() => notifier.close())
  // Cleanups run in reverse: listeners and proxies, libp2p, the socket, then the cookie. The cookie
  // is removed only once ours: a second daemon refused at the socket must not delete the first's.
  let cookieWritten = false
  cleanups.push(async () => {
    if (cookieWritten) {
      await removeCookie(cookieFile)
    }
  })
  try {
    const closeSocket = await listenOnSocket(server, socketPath, { what: 'a peerup daemon' })
    cleanups.push(async () => {
      const closing = closeSocket()
      // Event streams and keep-alive connections would hold close() open forever.
      server.closeAllConnections()
      await closing
    })

    // Metrics and the audit log are opt-in (telemetry: in config.yaml); read at start.
    const telemetry = startConfig.telemetry
    const metrics = telemetry.metrics.enabled ? createNodeMetrics() : undefined
    const audit = telemetry.audit.enabled
      ? await openAuditLog(resolveIn(dir, telemetry.audit.file))
      : undefined
    if (audit !== undefined) {
      cleanups.push(() => audit.close())
    }
    observer = createObserver({ node: metrics, audit })
    const rt = await startNodeRuntime({
      configFile: options.configFile,
      log,
      exposeServices: true,
      observer,
      ...(metrics === undefined ? {} : { libp2pMetrics: libp2pMetricsInto(metrics.registry) }),
    })
    cleanups.push(() => rt.stop())
    const events = new DaemonEvents(rt)
    events.start()
    cleanups.push(() => events.stop())
    const proxies = new ProxyManager(rt, log.child('proxies'), observer)
    let metricsAddress: string | undefined
    if (metrics !== undefined) {
      const server = await startMetricsServer(
        metrics.registry,
        telemetry.metrics.listen_address,
        log.child('metrics'),
        () => refreshNodeMetrics(metrics, rt),
      )
      cleanups.push(() => server.close())
      metricsAddress = server.address
    }
    cleanups.push(() => proxies.closeAll())
    cleanups.push(() => {
      // No new API connections; watchers learn we stop and their streams end.
      server.close()
      events.publish({ type: 'stopping', time: new Date().toISOString() })
    })

    // Group members who joined while this machine was not waiting: learned from the relay each
    // time a reservation is (re)gained.
    const catchUp = (relayId: string): void => {
      const conn = rt.node
        .getConnections()
        .find((c) => c.remotePeer.toString() === relayId && c.status === 'open' && c.limits === undefined)
      if (conn === undefined) {
        return
      }
      const host = {
        peerId: rt.peerId,
        configFile: rt.configFile,
        authorizedKeysFile: resolveIn(rt.dir, rt.config.security.authorized_keys_file),
        authorized: rt.authorized,
      }
      catchUpGroups(host, conn, log.child('groups')).catch((err: unknown) =>
        log.warn('catching up with relay groups failed', { error: err as Error }),
      )
    }
    const offCatchUp = rt.supervisor.onChange((e) => {
      if (e.reserved) {
        catchUp(e.relay)
      }
    })
    for (const r of rt.supervisor.status().filter((x) => x.reserved)) {
      catchUp(r.peerId)
    }
    cleanups.push(() => {
      offCatchUp()
    })
    // `peerup auth add|remove` (and any editor) rewrite authorized_keys: the daemon follows at once,
    // and the runtime's change listener closes a revoked peer's connections.
    const reloadAuth = (why: string): void => {
      rt.reloadAuthorized()
        .then(({ added, removed }) => {
          if (added.length > 0 || removed.length > 0 || why === 'SIGHUP') {
            log.info('authorized_keys reloaded', { why, added: added.length, removed: removed.length })
          }
        })
        .catch((err: unknown) =>
          log.error('authorized_keys reload failed; keeping the previous set', { error: err as Error }),
        )
    }
    const keysWatch = watchFile(resolveIn(rt.dir, rt.config.security.authorized_keys_file), () =>
      reloadAuth('file changed'),
    )
    cleanups.push(() => keysWatch.close())
    // config.yaml changes (an edit, `service add`, `auth add --name`, `config apply`, a rollback)
    // apply at once where they can: names, services, relays; the rest is reported for a restart.
    const reloadConfig = (why: string): void => {
      loadNodeConfig(rt.configFile)
        .then(({ config }) => rt.applyConfig(config))
        .then(({ applied, restartNeeded }) => {
          events.publish({
            type: 'config',
            time: new Date().toISOString(),
            action: 'reloaded',
            applied,
            restartNeeded,
          })
          if (applied.length > 0 || why === 'SIGHUP') {
            log.info('config reloaded', { why, applied: applied.join(',') })
          }
          if (restartNeeded.length > 0) {
            log.warn('config changes that need a restart of the daemon', { keys: restartNeeded.join(',') })
          }
        })
        .catch((err: unknown) =>
          log.error('config.yaml changed but does not load; the running config is kept', {
            error: err as Error,
          }),
        )
    }
    const configWatch = watchFile(rt.configFile, () => reloadConfig('file changed'))
    cleanups.push(() => configWatch.close())
    const onHup = (): void => {
      reloadConfig('SIGHUP')
      reloadAuth('SIGHUP')
    }
    process.on('SIGHUP', onHup)
    cleanups.push(() => {
      process.off('SIGHUP', onHup)
    })

    // Commit-confirmed apply: at the deadline without a confirmation, the previous config goes
    // back and the daemon exits non-zero, so systemd restarts it on the good one.
    let deadline: NodeJS.Timeout | undefined
    const armPending = async (): Promise<void> => {
      clearTimeout(deadline)
      deadline = undefined
      const pending = await readPending(rt.configFile)
      if (pending === undefined) {
        return
      }
      const remaining = Math.max(Date.parse(pending.deadline) - Date.now(), 0)
      log.warn('config apply waiting for `peerup config confirm`', { deadline: pending.deadline })
      deadline = setTimeout(() => {
        readPending(rt.configFile)
          .then(async (still) => {
            if (still?.appliedAt !== pending.appliedAt) {
              return
            }
            await rollbackConfig(rt.configFile)
            failure = new ConfigNotConfirmedError(
              `config apply of ${pending.appliedAt} was not confirmed by ${pending.deadline}: previous config restored`,
              { hint: 'the daemon exits so that its service manager restarts it on the restored config' },
            )
            log.error('config apply not confirmed: previous config restored, exiting', {
              deadline: pending.deadline,
            })
            events.publish({
              type: 'config',
              time: new Date().toISOString(),
              action: 'reverted',
              applied: [],
              restartNeeded: [],
            })
            stopping.abort(failure)
          })
          .catch((err: unknown) => log.error('restoring the previous config failed', { error: err as Error }))
      }, remaining)
    }
    const pendingWatch = watchFile(safetyFiles(rt.configFile).pending, () => {
      const wasArmed = deadline !== undefined
      armPending()
        .then(async () => {
          if (wasArmed && deadline === undefined && (await readPending(rt.configFile)) === undefined) {
            log.info('config apply confirmed')
            await archiveLastGood(rt.configFile)
            events.publish({
              type: 'config',
              time: new Date().toISOString(),
              action: 'confirmed',
              applied: [],
              restartNeeded: [],
            })
          }
        })
        .catch(() => {})
    })
    cleanups.push(() => {
      pendingWatch.close()
      clearTimeout(deadline)
    })
    await armPending()

    const started = daemonRoutes({
      rt,
      proxies,
      events,
      observer,
      log,
      startedAt: new Date(),
      shutdown: () => stopping.abort(new Error('shutdown requested through the API')),
    })
    routes.push(...started.routes)
    upgrades.push(...started.upgrades)
    // Written after the socket is secured and the API serves (ADR-F02); rotated at every start.
    cookie = await writeCookie(cookieFile)
    cookieWritten = true

    const services = rt.services.list().map((s) => s.name)
    log.info('daemon started', { peer: rt.peerId, socket: socketPath, services: services.join(',') })
    await notifier.notify(`READY=1\nSTATUS=serving ${services.length} services as ${rt.peerId}`)

    if (notifier.enabled && env.watchdogUsec !== undefined) {
      const everyMs = Math.max(Math.floor(env.watchdogUsec / 2000), 100)
      const healthy = async (): Promise<boolean> => {
        const relays = rt.supervisor.status()
        return (
          rt.node.status === 'started' &&
          (relays.length === 0 || relays.some((r) => r.reserved)) &&
          (await socketAnswers(socketPath))
        )
      }
      const timer = setInterval(() => {
        healthy()
          .then((ok) =>
            ok ? notifier.notify('WATCHDOG=1') : log.warn('health check failed: no watchdog ping'),
          )
          .catch(() => {})
      }, everyMs)
      cleanups.push(() => clearInterval(timer))
    }

    // A start that got this far on a confirmed config is the one to come back to.
    if ((await readPending(rt.configFile)) === undefined) {
      await archiveLastGood(rt.configFile)
    }
    options.onReady?.({
      peerId: rt.peerId,
      socketPath,
      cookieFile,
      addresses: rt.node.getMultiaddrs().map(String),
      services,
      metricsAddress,
      routes,
      upgrades,
    })
    if (!stop.aborted) {
      await new Promise<void>((resolve) => stop.addEventListener('abort', () => resolve(), { once: true }))
    }
    log.info('daemon stopping', { why: (stop.reason as Error | undefined)?.message })
    await notifier.notify('STOPPING=1')
  } finally {
    await cleanup()
  }
  if (failure !== undefined) {
    throw failure
  }
}

/** Gauges and totals kept by the node itself, read into the registry just before a scrape. */
function refreshNodeMetrics(metrics: NodeMetrics, rt: NodeRuntime): void {
  const byType = { DIRECT: 0, RELAYED: 0 }
  for (const p of rt.paths.list()) {
    if (p.path !== undefined) {
      byType[p.path.type]++
    }
  }
  for (const [pathType, n] of Object.entries(byType)) {
    metrics.connectedPeers.set({ path_type: pathType }, n)
  }
  const c = rt.paths.counters()
  setCounter(metrics.directAttempts, c.attempts)
  setCounter(metrics.directFailures, c.failures)
  for (const [transport, n] of Object.entries(c.successes)) {
    setCounter(metrics.directSuccesses, n, { transport })
  }
  setCounter(metrics.timeToDirectSum, c.timeToDirectSumMs / 1000)
  setCounter(metrics.timeToDirectCount, c.timeToDirectCount)
}
