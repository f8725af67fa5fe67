/**
 * The proxy listeners a daemon runs for `POST /v1/connect` (`peerup daemon connect`): each a local
 * TCP port forwarded to a peer's service, kept until `DELETE /v1/connect/:id` or the daemon stops;
 * and those held for as long as a request lasts (`POST /v1/connect/hold`: `peerup proxy PEER
 * SERVICE PORT`, whose bytes then go through the daemon alone, not through the command's process
 * as well: docs/decisions/0008-proxy-in-the-daemon.md).
 *
 * @packageDocumentation
 */

import { randomBytes } from 'node:crypto'
import type { ConnectHoldLine, ConnectRequest, ProxyState } from '../api/index.ts'
import { NotFoundError } from '../errors.ts'
import type { Logger } from '../log/index.ts'
import { NO_OBSERVER, type Observer } from '../metrics/observer.ts'
import type { NodeRuntime } from '../p2p/runtime.ts'
import { type Listener, type ListenerInit, startListener } from '../pipe/listener.ts'
import { formatHostPort, parseListenAddress } from '../util/address.ts'
import { Channel } from '../util/channel.ts'

/** Failed connections a held listener's caller may fall behind on before its lines are cut off. */
const HOLD_BACKLOG = 256

/**
 * A proxy listener's hooks: its connections counted in `counts` (the bytes of those that ended;
 * the open ones' are in `rt.connections`, under `proxy`) and reported to `observer` under
 * `service()` as it is at each; each connection recorded in `rt.connections` as accepted on
 * `local()` by `proxy`; a connection that could not be opened goes to `onFailed`.
 */
export function proxyCounting(
  counts: { totalConnections: number; bytesIn: number; bytesOut: number },
  where: { rt: NodeRuntime; proxy: string; service: () => string; local: () => string },
  observer: Observer,
  onFailed: (error: Error) => void = () => {},
): Pick<ListenerInit, 'onConnection' | 'track'> {
  const { rt, proxy, service, local } = where
  return {
    onConnection: (e) => {
      if (e.type === 'opened') {
        counts.totalConnections++
        observer.proxyOpened(service(), 'outbound')
      } else if (e.type === 'closed') {
        counts.bytesIn += e.result.bytesIn
        counts.bytesOut += e.result.bytesOut
        observer.proxyClosed(service(), 'outbound')
      } else {
        onFailed(e.error)
      }
    },
    track: (far) => rt.trackOutbound(far, local(), proxy),
  }
}

/** A listener's byte counts: those of its connections that ended, and those of its open ones now. */
export function proxyBytes(
  counts: { bytesIn: number; bytesOut: number },
  rt: NodeRuntime,
  proxy: string,
): { bytesIn: number; bytesOut: number } {
  const open = rt.connections.openBytesOf(proxy)
  return { bytesIn: counts.bytesIn + open.bytesIn, bytesOut: counts.bytesOut + open.bytesOut }
}

interface Entry {
  state: Omit<ProxyState, 'activeConnections'>
  listener: Listener
}

/**
 * The daemon's proxy listeners: a component with nothing to do at start (listeners come with
 * `POST /v1/connect`) whose `stop()` closes every listener still open.
 */
export class ProxyManager {
  readonly #rt: NodeRuntime
  readonly #log: Logger
  readonly #entries = new Map<string, Entry>()
  readonly #observer: Observer

  constructor(rt: NodeRuntime, log: Logger, observer: Observer = NO_OBSERVER) {
    this.#rt = rt
    this.#log = log
    this.#observer = observer
  }

  /** Nothing to start: listeners are added on request. */
  start(): void {}

  /** Stops every listener, resetting their connections. */
  async stop(): Promise<void> {
    const all = [...this.#entries.values()]
    this.#entries.clear()
    await Promise.all(all.map((e) => e.listener.close()))
  }

  /** Starts a listener; the peer is reached once first, so a wrong name or a refusal is an error now. */
  async add(req: ConnectRequest, signal?: AbortSignal): Promise<ProxyState> {
    await this.#rt.reach(req.peer, signal)
    return this.#start(req, {
      open: async (s) => (await this.#rt.openSession(req.peer, req.service, { signal: s })).end,
    })
  }

  /**
   * A listener held for as long as `signal` is not aborted: it listens at once, whether the peer
   * answers or not, and each connection waits up to `waitMs` for the peer (src/p2p/wait.ts), whose
   * answer is then final. Yields `listening`, then a line for each connection that failed; the
   * listener closes (resetting its connections) when the caller goes away.
   */
  async *hold(req: ConnectRequest, waitMs: number, signal: AbortSignal): AsyncGenerator<ConnectHoldLine> {
    const failed = new Channel<ConnectHoldLine>(HOLD_BACKLOG)
    const proxy = await this.#start(req, {
      open: async (s) => (await this.#rt.openSession(req.peer, req.service, { signal: s, waitMs })).end,
      retry: { attempts: 1 },
      onFailed: (err) => failed.push({ type: 'failed', error: err.message }),
    })
    const end = (): void => failed.end()
    signal.addEventListener('abort', end, { once: true })
    try {
      yield { type: 'listening', proxy }
      if (!signal.aborted) {
        yield* failed
      }
    } finally {
      signal.removeEventListener('abort', end)
      await this.remove(proxy.id).catch(() => {})
    }
  }

  async #start(
    req: ConnectRequest,
    how: Pick<ListenerInit, 'open' | 'retry'> & { onFailed?: (err: Error) => void },
  ): Promise<ProxyState> {
    const { host, port } = parseListenAddress(req.listen)
    const peer = req.peer
    const id = randomBytes(4).toString('hex')
    const state: Entry['state'] = {
      id,
      peer,
      service: req.service,
      listen: '',
      createdAt: new Date().toISOString(),
      totalConnections: 0,
      bytesIn: 0,
      bytesOut: 0,
    }
    const listener = await startListener({
      host,
      port,
      log: this.#log.child(`proxy.${id}`),
      open: how.open,
      ...(how.retry === undefined ? {} : { retry: how.retry }),
      ...proxyCounting(
        state,
        { rt: this.#rt, proxy: id, service: () => req.service, local: () => state.listen },
        this.#observer,
        how.onFailed,
      ),
    })
    const a = listener.address
    state.listen = formatHostPort(a.host, a.port)
    this.#entries.set(id, { state, listener })
    return this.#describe({ state, listener })
  }

  /** Stops a listener and resets its connections. */
  async remove(id: string): Promise<void> {
    const entry = this.#entries.get(id)
    if (entry === undefined) {
      throw new NotFoundError(`no proxy with id ${id}`, { hint: 'list them with `peerup daemon proxies`' })
    }
    this.#entries.delete(id)
    await entry.listener.close()
  }

  list(): ProxyState[] {
    return [...this.#entries.values()].map((e) => this.#describe(e))
  }

  get size(): number {
    return this.#entries.size
  }

  #describe(e: Entry): ProxyState {
    return {
      ...e.state,
      activeConnections: e.listener.connections,
      ...proxyBytes(e.state, this.#rt, e.state.id),
    }
  }
}
