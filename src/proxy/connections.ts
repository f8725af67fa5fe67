/**
 * The proxied connections of a node: those open now, with counters pipe() keeps up to date in
 * place (src/pipe/pipe.ts `Meter`), a bounded history of those that ended and how, and the bytes
 * of all of them by peer, service and side since the node started — what `peerup daemon
 * connections` and `/metrics` show. Nothing here runs per chunk: a rate is the difference between
 * two looks at the counters, a second apart, taken only while connections are open.
 *
 * @packageDocumentation
 */

import type {
  ApiPath,
  ClosedConnection,
  ConnectionEnd,
  ConnectionSide,
  OpenConnection,
} from '../api/index.ts'
import {
  FramingCutError,
  ListenerClosedError,
  LocalClosedError,
  RemoteResetError,
  TransferInterruptedError,
} from '../pipe/errors.ts'
import type { PipeResult, Tracked } from '../pipe/pipe.ts'
import { SessionExpiredError, SessionRefusedError } from '../pipe/session.ts'
import type { Component } from '../util/components.ts'
import { ServiceClosedError } from './errors.ts'

/** Connections that ended kept for `peerup daemon connections`, the newest. */
export const CONNECTION_HISTORY = 100

/** How often the rates of open connections are brought up to date. */
export const RATE_INTERVAL_MS = 1_000

/** What is known of a connection when its far end opened. */
export interface ConnectionInit {
  side: ConnectionSide
  peerId: string
  service: string
  /** What it is joined to on this machine (a listener's address, `stdio`, a service's address). */
  local: string
  /** The proxy of `proxies:`, or the `daemon connect` id, that accepted it. */
  proxy?: string | undefined
  resumable: boolean
  /** The path its bytes take now; undefined while a session waits for its link. */
  path: () => ApiPath | undefined
}

/** The bytes of connections that share a peer, service and side. */
export interface ConnectionTotal {
  side: ConnectionSide
  peerId: string
  service: string
  connections: number
  bytesIn: number
  bytesOut: number
}

/** How a connection that was reset ended, by what reset it. */
export function connectionEnd(result: PipeResult): ConnectionEnd {
  const e = result.error
  if (!result.reset) {
    return 'clean'
  }
  if (e instanceof SessionExpiredError) {
    return 'expired'
  }
  if (e instanceof ListenerClosedError || e instanceof ServiceClosedError) {
    return 'closed'
  }
  if (e instanceof SessionRefusedError) {
    return 'refused'
  }
  if (e instanceof TransferInterruptedError) {
    return 'interrupted'
  }
  const code = (e as NodeJS.ErrnoException | undefined)?.code
  return e instanceof RemoteResetError ||
    e instanceof LocalClosedError ||
    e instanceof FramingCutError ||
    code === 'ECONNRESET' ||
    code === 'EPIPE'
    ? 'reset'
    : 'failed'
}

/** One open connection: pipe() counts into it; the sampler keeps its rate. */
class Live implements Tracked {
  bytesIn = 0
  bytesOut = 0
  /** The counters and time at the last sample. */
  sampled = { at: 0, bytesIn: 0, bytesOut: 0 }
  rate = { bytesIn: 0, bytesOut: 0 }
  /** The last path seen, for when the link is gone (a session that expired). */
  lastPath: ApiPath | undefined
  readonly id: number
  readonly init: ConnectionInit
  readonly since: number
  readonly done: (result: PipeResult) => void

  constructor(id: number, init: ConnectionInit, done: (live: Live, result: PipeResult) => void) {
    this.id = id
    this.init = init
    this.since = Date.now()
    this.sampled.at = this.since
    this.done = (result) => done(this, result)
  }

  /** The path now, remembered for when the link is gone. */
  path(): ApiPath | undefined {
    const path = this.init.path()
    if (path !== undefined) {
      this.lastPath = path
    }
    return path
  }

  fields() {
    const { side, peerId, service, local, proxy, resumable } = this.init
    return {
      id: this.id,
      side,
      peerId,
      service,
      local,
      ...(proxy === undefined ? {} : { proxy }),
      resumable,
      since: new Date(this.since).toISOString(),
      bytesIn: this.bytesIn,
      bytesOut: this.bytesOut,
    }
  }
}

/**
 * The table of a node's proxied connections. `open()` makes the record a connection's pipe()
 * counts into; its `done()` moves it to the history. `stop()` ends the rate sampler.
 */
export class ProxiedConnections implements Component {
  readonly #open = new Set<Live>()
  /** Newest last; at most {@link CONNECTION_HISTORY}. */
  readonly #closed: ClosedConnection[] = []
  /** Bytes of the connections that ended, by side, peer and service. */
  readonly #ended = new Map<string, ConnectionTotal>()
  #nextId = 1
  #sampler: NodeJS.Timeout | undefined

  start(): void {}

  stop(): void {
    clearInterval(this.#sampler)
    this.#sampler = undefined
  }

  /** A record for a connection whose far end just opened; pass it to pipe() as its meter. */
  open(init: ConnectionInit): Tracked {
    const live = new Live(this.#nextId++, init, (l, result) => this.#end(l, result))
    live.lastPath = init.path()
    this.#open.add(live)
    this.#sampler ??= setInterval(() => this.#sample(), RATE_INTERVAL_MS).unref()
    return live
  }

  /** The connections open now, oldest first. */
  list(): OpenConnection[] {
    return [...this.#open].map((l) => {
      const path = l.path()
      return {
        ...l.fields(),
        ...(path === undefined ? {} : { path }),
        bytesInPerSecond: l.rate.bytesIn,
        bytesOutPerSecond: l.rate.bytesOut,
      }
    })
  }

  /** The connections that ended lately, newest first. */
  history(): ClosedConnection[] {
    return this.#closed.toReversed()
  }

  /** The bytes of every connection since the start, open ones as they are now, by side, peer and service. */
  totals(): ConnectionTotal[] {
    const totals = new Map<string, ConnectionTotal>()
    for (const [key, t] of this.#ended) {
      totals.set(key, { ...t })
    }
    for (const l of this.#open) {
      const t = totalFor(totals, l.init)
      t.connections++
      t.bytesIn += l.bytesIn
      t.bytesOut += l.bytesOut
    }
    return [...totals.values()]
  }

  /** Bytes of the open connections that `proxy` accepted (its listener's total adds the ended ones). */
  openBytesOf(proxy: string): { bytesIn: number; bytesOut: number } {
    const sum = { bytesIn: 0, bytesOut: 0 }
    for (const l of this.#open) {
      if (l.init.proxy === proxy) {
        sum.bytesIn += l.bytesIn
        sum.bytesOut += l.bytesOut
      }
    }
    return sum
  }

  #end(live: Live, result: PipeResult): void {
    if (!this.#open.delete(live)) {
      return
    }
    const t = totalFor(this.#ended, live.init)
    t.connections++
    t.bytesIn += live.bytesIn
    t.bytesOut += live.bytesOut
    const path = live.path() ?? live.lastPath
    const end = connectionEnd(result)
    const now = Date.now()
    this.#closed.push({
      ...live.fields(),
      ...(path === undefined ? {} : { path }),
      ended: new Date(now).toISOString(),
      durationMs: now - live.since,
      end,
      ...(end === 'clean' || result.error === undefined ? {} : { error: result.error.message }),
    })
    if (this.#closed.length > CONNECTION_HISTORY) {
      this.#closed.shift()
    }
    if (this.#open.size === 0) {
      this.stop()
    }
  }

  /** Each open connection's rate over the time since the last sample. */
  #sample(): void {
    const now = Date.now()
    for (const l of this.#open) {
      const s = l.sampled
      const seconds = (now - s.at) / 1000
      if (seconds > 0) {
        l.rate.bytesIn = Math.round((l.bytesIn - s.bytesIn) / seconds)
        l.rate.bytesOut = Math.round((l.bytesOut - s.bytesOut) / seconds)
      }
      s.at = now
      s.bytesIn = l.bytesIn
      s.bytesOut = l.bytesOut
      // Remembered while the link is there: a session that expires has none at its end.
      l.path()
    }
  }
}

function totalFor(totals: Map<string, ConnectionTotal>, init: ConnectionInit): ConnectionTotal {
  const key = `${init.side} ${init.peerId} ${init.service}`
  let t = totals.get(key)
  if (t === undefined) {
    t = {
      side: init.side,
      peerId: init.peerId,
      service: init.service,
      connections: 0,
      bytesIn: 0,
      bytesOut: 0,
    }
    totals.set(key, t)
  }
  return t
}

/** The sum of the totals that share a key, and the first of them (for the fields the key is made of). */
export interface TotalSum {
  of: ConnectionTotal
  connections: number
  bytesIn: number
  bytesOut: number
}

/** `totals` added up by `key` (by peer, by service and side), in the order each key first appears. */
export function sumBy(totals: ConnectionTotal[], key: (t: ConnectionTotal) => string): TotalSum[] {
  const sums = new Map<string, TotalSum>()
  for (const t of totals) {
    const k = key(t)
    const sum = sums.get(k) ?? { of: t, connections: 0, bytesIn: 0, bytesOut: 0 }
    sum.connections += t.connections
    sum.bytesIn += t.bytesIn
    sum.bytesOut += t.bytesOut
    sums.set(k, sum)
  }
  return [...sums.values()]
}
