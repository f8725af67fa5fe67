/**
 * The proxies of config.yaml's `proxies:` (`peerup proxy add`), run by the daemon while they are
 * in the file. Each listens whether its peer can be reached or not; each accepted connection waits
 * for the peer (up to `proxy.connect_timeout`, src/p2p/wait.ts), so a proxy comes back by itself
 * after a restart of the daemon, the relay or the peer. config.yaml is the one truth: every change
 * (the API, `peerup proxy …` without a daemon, an editor, `config apply`) ends in
 * {@link PersistentProxies.sync}.
 *
 * @packageDocumentation
 */

import type { PersistentProxyState } from '../api/index.ts'
import { loadNodeConfig } from '../config/load.ts'
import {
  addProxyToFile,
  checkNewProxy,
  listProxies,
  type NewProxy,
  type ProxyInfo,
  removeProxyFromFile,
  requireProxy,
  setProxyEnabledInFile,
} from '../config/proxies.ts'
import { formatError } from '../errors.ts'
import { ListenError, OpenError } from '../pipe/errors.ts'
import { type Listener, startListener } from '../pipe/listener.ts'
import { formatHostPort, type HostPort, parseHostPort } from '../util/address.ts'
import type { Component } from '../util/components.ts'
import { listenFailure, probeListen } from '../util/port.ts'
import { backoffDelayMs } from '../util/retry.ts'
import { proxyBytes, proxyCounting } from './proxies.ts'
import type { DaemonComponents } from './run.ts'

/** First delay before a proxy whose port could not be bound tries again; it doubles up to the next. */
const REBIND_BASE_MS = 1_000
/** Longest delay between two tries to bind a proxy's port. */
const REBIND_MAX_MS = 30_000

/** What {@link PersistentProxies} uses; read at start and later. */
type PersistentProxiesComponents = Pick<DaemonComponents, 'runtime' | 'log' | 'observer'>

/** One proxy as it runs. */
class Entry {
  info: ProxyInfo
  listener: Listener | undefined
  /** Why an enabled proxy does not listen. */
  reason: string | undefined
  since = new Date()
  rebind: { timer: NodeJS.Timeout | undefined; attempts: number } = { timer: undefined, attempts: 0 }
  /** In the order `proxy list` shows them. */
  readonly counts = {
    totalConnections: 0,
    failedConnections: 0,
    lastError: undefined as string | undefined,
    bytesIn: 0,
    bytesOut: 0,
  }

  constructor(info: ProxyInfo) {
    this.info = info
  }
}

function sameProxy(a: ProxyInfo, b: ProxyInfo): boolean {
  return (['name', 'peer', 'service', 'bind', 'enabled'] as const).every((key) => a[key] === b[key])
}

/**
 * The daemon's persistent proxies: `start()` brings up those of config.yaml, `stop()` closes
 * them. Changes are made one at a time, each starting from the file as it is.
 */
export class PersistentProxies implements Component {
  readonly #components: PersistentProxiesComponents
  readonly #entries = new Map<string, Entry>()
  #queue: Promise<unknown> = Promise.resolve()
  #stopped = false

  constructor(components: PersistentProxiesComponents) {
    this.#components = components
  }

  /** Listens on every enabled proxy of config.yaml (a port that cannot be bound is retried). */
  async start(): Promise<void> {
    await this.sync()
  }

  /** Closes every listener, resetting the connections they carry. */
  async stop(): Promise<void> {
    await this.#serial(async () => {
      this.#stopped = true
      const all = [...this.#entries.values()]
      this.#entries.clear()
      await Promise.all(all.map((e) => this.#close(e)))
    })
  }

  /** Brings the listeners in line with config.yaml; returns `proxies.<name>` for each one changed. */
  sync(): Promise<string[]> {
    return this.#serial(() => this.#sync())
  }

  /**
   * Adds a proxy: checked, then (when enabled) listening, then written to config.yaml — so a bad
   * peer, a taken name or port, or a port in use leaves the file as it was.
   */
  add(p: NewProxy): Promise<PersistentProxyState> {
    return this.#serial(async () => {
      const config = await this.#sync().then(() => this.#config())
      const checked = checkNewProxy(config, p)
      const { listen, ...info } = checked
      const entry = new Entry({ ...info, bind: '' })
      // Listening first: the port it got is the one recorded (a free one when none was given).
      const listener = checked.enabled ? await this.#startListener(entry, listen) : undefined
      try {
        // Switched off: its port is recorded as given, or a free one is picked now.
        const bound = listener?.address ?? (listen.port === 0 ? await probeListen(listen) : listen)
        entry.info = await addProxyToFile(this.#components.runtime.configFile, checked, bound)
      } catch (err) {
        await listener?.close()
        throw err
      }
      entry.listener = listener
      this.#entries.set(entry.info.name, entry)
      this.#components.log.info('proxy added', { name: entry.info.name, bind: entry.info.bind })
      return this.#describe(entry)
    })
  }

  remove(name: string): Promise<ProxyInfo> {
    return this.#serial(async () => {
      const info = await removeProxyFromFile(this.#components.runtime.configFile, name)
      const entry = this.#entries.get(name)
      this.#entries.delete(name)
      if (entry !== undefined) {
        await this.#close(entry)
      }
      this.#components.log.info('proxy removed', { name })
      return info
    })
  }

  /**
   * Switches a proxy on (listening first, so a port in use is an error and the file keeps it
   * off) or off (its connections are reset), and records it in config.yaml.
   */
  setEnabled(name: string, enabled: boolean): Promise<PersistentProxyState> {
    return this.#serial(async () => {
      const config = await this.#sync().then(() => this.#config())
      const info = requireProxy(config, name)
      const entry = this.#entries.get(name) ?? new Entry(info)
      let listener: Listener | undefined
      if (enabled && entry.listener === undefined) {
        listener = await this.#startListener(entry, parseHostPort(info.bind))
      }
      try {
        entry.info = await setProxyEnabledInFile(this.#components.runtime.configFile, name, enabled)
      } catch (err) {
        await listener?.close()
        throw err
      }
      this.#entries.set(name, entry)
      if (listener !== undefined) {
        this.#listening(entry, listener)
      } else if (!enabled) {
        await this.#close(entry)
        entry.since = new Date()
      }
      return this.#describe(entry)
    })
  }

  list(): PersistentProxyState[] {
    return [...this.#entries.values()].map((e) => this.#describe(e))
  }

  async #config() {
    return (await loadNodeConfig(this.#components.runtime.configFile)).config
  }

  /** Runs `fn` after every change before it. */
  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn, fn)
    this.#queue = run.catch(() => {})
    return run
  }

  async #sync(): Promise<string[]> {
    if (this.#stopped) {
      return []
    }
    const wanted = new Map(listProxies(await this.#config()).map((p) => [p.name, p]))
    const changed: string[] = []
    for (const [name, entry] of this.#entries) {
      if (!wanted.has(name)) {
        this.#entries.delete(name)
        await this.#close(entry)
        changed.push(`proxies.${name}`)
      }
    }
    for (const info of wanted.values()) {
      const entry = this.#entries.get(info.name)
      const before = entry?.info
      if (before !== undefined && sameProxy(before, info)) {
        continue
      }
      changed.push(`proxies.${info.name}`)
      if (entry !== undefined && before?.bind === info.bind && before.enabled === info.enabled) {
        // Another peer or service: the next connection goes there, those open stay where they are.
        entry.info = info
        continue
      }
      if (entry !== undefined) {
        await this.#close(entry)
      }
      const next = new Entry(info)
      this.#entries.set(info.name, next)
      if (info.enabled) {
        await this.#bind(next)
      }
    }
    return changed
  }

  /** Binds an entry's port; when that fails, says why and tries again later, by itself. */
  async #bind(entry: Entry): Promise<void> {
    const { log } = this.#components
    entry.rebind.timer = undefined
    try {
      this.#listening(entry, await this.#startListener(entry, parseHostPort(entry.info.bind)))
      entry.rebind.attempts = 0
    } catch (err) {
      const reason = (err as Error).message
      if (entry.reason !== reason) {
        log.warn('proxy cannot listen; trying again', { name: entry.info.name, error: reason })
        entry.since = new Date()
      }
      entry.reason = reason
      entry.rebind.attempts++
      const delay = backoffDelayMs(entry.rebind.attempts, { baseMs: REBIND_BASE_MS, maxMs: REBIND_MAX_MS })
      entry.rebind.timer = setTimeout(() => {
        void this.#serial(async () => {
          if (
            this.#entries.get(entry.info.name) === entry &&
            entry.info.enabled &&
            entry.listener === undefined
          ) {
            await this.#bind(entry)
          }
        })
      }, delay)
      entry.rebind.timer.unref()
    }
  }

  #listening(entry: Entry, listener: Listener): void {
    clearTimeout(entry.rebind.timer)
    entry.rebind.timer = undefined
    entry.listener = listener
    entry.reason = undefined
    entry.since = new Date()
  }

  async #close(entry: Entry): Promise<void> {
    clearTimeout(entry.rebind.timer)
    entry.rebind.timer = undefined
    const listener = entry.listener
    entry.listener = undefined
    await listener?.close()
  }

  /**
   * A listener whose connections go to the entry's peer and service as they are at each
   * connection; a port that cannot be bound is an error that says why (in use: a conflict).
   */
  async #startListener(entry: Entry, at: HostPort): Promise<Listener> {
    const { runtime: rt, log, observer } = this.#components
    const { counts } = entry
    // Where the record of a connection says it came in; the port once bound (0 picks one).
    let local = formatHostPort(at.host, at.port)
    try {
      const listener = await startListener({
        host: at.host,
        port: at.port,
        log: log.child(`proxy.${entry.info.name}`),
        open: async (signal) => {
          const { peer, service } = entry.info
          const waitMs = rt.config.proxy.connect_timeout
          return (await rt.openSession(peer, service, { signal, waitMs })).end
        },
        // The wait above is the retry: it ends only when waiting cannot help or the bound passed.
        retry: { attempts: 1 },
        ...proxyCounting(
          counts,
          {
            rt,
            proxy: entry.info.name,
            service: () => entry.info.service,
            local: () => local,
          },
          observer,
          (error) => {
            counts.failedConnections++
            // Why it could not be proxied, for `proxy list`.
            counts.lastError = formatError(
              error instanceof OpenError && error.cause instanceof Error ? error.cause : error,
            )
          },
        ),
      })
      local = formatHostPort(listener.address.host, listener.address.port)
      return listener
    } catch (err) {
      const cause = err instanceof ListenError ? (err.cause as NodeJS.ErrnoException | undefined) : undefined
      throw cause?.code === undefined ? err : listenFailure(at, cause)
    }
  }

  #describe(e: Entry): PersistentProxyState {
    const rt = this.#components.runtime
    let peerId: string | undefined
    let peerError: string | undefined
    try {
      peerId = rt.resolve(e.info.peer)
    } catch (err) {
      peerError = (err as Error).message
    }
    return {
      name: e.info.name,
      peer: e.info.peer,
      peerId,
      peerError,
      service: e.info.service,
      bind: e.info.bind,
      enabled: e.info.enabled,
      listening: e.listener !== undefined,
      reason: e.info.enabled && e.listener === undefined ? (e.reason ?? 'starting') : undefined,
      since: e.since.toISOString(),
      activeConnections: e.listener?.connections ?? 0,
      ...e.counts,
      ...proxyBytes(e.counts, rt, e.info.name),
    }
  }
}
