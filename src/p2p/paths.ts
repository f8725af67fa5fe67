/**
 * The path tracker: for every peer this node is connected to, the path new streams take (the best
 * open connection: DIRECT via tcp/webrtc, or RELAYED via which relay), since when, and how the
 * upgrade from relayed to direct went. It is the one source the daemon's `paths` endpoint,
 * `status --watch`, the events stream and (later) Prometheus read: typed events for every change,
 * and plain counters.
 *
 * @packageDocumentation
 */

import type { Connection, PeerId } from '@libp2p/interface'
import { TypedEventEmitter } from 'main-event'
import type { UpgradeStatus } from '../api/index.ts'
import type { PeerupLibp2p } from './node.ts'
import { bestConnection, classifyConnection, type PathInfo, samePath } from './path.ts'

/** A peer's path changed: new streams now go `current` (undefined: no connection left). */
export interface PathChange {
  peer: string
  previous: PathInfo | undefined
  current: PathInfo | undefined
  /** When (ms since the epoch). */
  at: number
}

/** The direct-path transports an upgrade can end on. */
export type DirectTransport = NonNullable<UpgradeStatus['transport']>

/** One step of an upgrade from relayed to direct. */
export interface UpgradeEvent {
  peer: string
  outcome: 'started' | 'succeeded' | 'failed'
  /** 1 for the first attempt with this peer, then counting up. */
  attempt: number
  /** The transport that worked (`succeeded`). */
  transport: DirectTransport | undefined
  /** `succeeded`: time from the relayed connection to the direct one; `failed`: the attempt's duration. */
  elapsedMs: number | undefined
  /** `failed`: what went wrong, per transport tried. */
  error: string | undefined
  at: number
}

export interface PathEvents {
  path: CustomEvent<PathChange>
  upgrade: CustomEvent<UpgradeEvent>
}

/** What the tracker knows about one peer. */
export interface PeerPath {
  peer: string
  /** The path new streams take; undefined when no connection is open. */
  path: PathInfo | undefined
  /** When `path` last changed (ms since the epoch). */
  since: number
  /** The path before the last change. */
  previous: PathInfo | undefined
  /** Open connections to the peer (a relayed one can linger beside a direct one while streams finish). */
  connections: number
  /** The upgrade history with the peer (the API's own type). */
  upgrade: UpgradeStatus
}

/** Counters of upgrades, for a metrics layer to read (names as they would be exported). */
export interface UpgradeCounters {
  /** peerup_direct_upgrade_attempts_total */
  attempts: number
  /** peerup_direct_upgrade_successes_total{transport} */
  successes: Record<DirectTransport, number>
  /** peerup_direct_upgrade_failures_total */
  failures: number
  /** Recent time-to-direct samples in ms, oldest first (at most {@link TIME_TO_DIRECT_SAMPLES}). */
  timeToDirectMs: number[]
  /** Sum and count of every sample ever taken, for a histogram's _sum and _count. */
  timeToDirectSumMs: number
  timeToDirectCount: number
}

/** How many time-to-direct samples are kept. */
export const TIME_TO_DIRECT_SAMPLES = 256

/**
 * Watches the node's connections and keeps {@link PeerPath} per peer: a component whose `start()`
 * subscribes to the node's connection events and whose `stop()` unsubscribes.
 */
export class PathTracker extends TypedEventEmitter<PathEvents> {
  readonly #node: PeerupLibp2p
  readonly #peers = new Map<string, PeerPath>()
  readonly #counters: UpgradeCounters = {
    attempts: 0,
    successes: { tcp: 0, webrtc: 0 },
    failures: 0,
    timeToDirectMs: [],
    timeToDirectSumMs: 0,
    timeToDirectCount: 0,
  }
  readonly #onConnection = (evt: CustomEvent<Connection>): void => this.refresh(evt.detail.remotePeer)

  constructor(components: { node: PeerupLibp2p }) {
    super()
    this.#node = components.node
  }

  /** Starts watching; connections already open are taken in at once. */
  start(): void {
    this.#node.addEventListener('connection:open', this.#onConnection)
    this.#node.addEventListener('connection:close', this.#onConnection)
    for (const conn of this.#node.getConnections()) {
      this.refresh(conn.remotePeer)
    }
  }

  /** Stops watching (what is known stays readable). */
  stop(): void {
    this.#node.removeEventListener('connection:open', this.#onConnection)
    this.#node.removeEventListener('connection:close', this.#onConnection)
  }

  /** The path to one peer, or undefined when the tracker never saw it. */
  get(peer: string): PeerPath | undefined {
    const p = this.#peers.get(peer)
    return p === undefined ? undefined : copy(p)
  }

  list(): PeerPath[] {
    return [...this.#peers.values()].map(copy)
  }

  /** A copy of the upgrade counters. */
  counters(): UpgradeCounters {
    return {
      ...this.#counters,
      successes: { ...this.#counters.successes },
      timeToDirectMs: [...this.#counters.timeToDirectMs],
    }
  }

  /**
   * Resolves with the peer's state once `accept` holds for it (checked now and on every change);
   * rejects with the signal's reason when it fires first.
   */
  async waitFor(peer: string, accept: (state: PeerPath) => boolean, signal?: AbortSignal): Promise<PeerPath> {
    signal?.throwIfAborted()
    const now = this.get(peer)
    if (now !== undefined && accept(now)) {
      return now
    }
    const { promise, resolve, reject } = Promise.withResolvers<PeerPath>()
    const check = (evt: CustomEvent<{ peer: string }>): void => {
      const state = evt.detail.peer === peer ? this.get(peer) : undefined
      if (state !== undefined && accept(state)) {
        resolve(state)
      }
    }
    const onAbort = (): void => reject(signal?.reason)
    this.addEventListener('path', check)
    this.addEventListener('upgrade', check)
    signal?.addEventListener('abort', onAbort, { once: true })
    try {
      return await promise
    } finally {
      this.removeEventListener('path', check)
      this.removeEventListener('upgrade', check)
      signal?.removeEventListener('abort', onAbort)
    }
  }

  /** Re-reads the connections to `peer` and announces a change of path. */
  refresh(peerId: PeerId): void {
    const peer = peerId.toString()
    const conns = this.#node.getConnections(peerId).filter((c) => c.status === 'open')
    const best = bestConnection(conns)
    const current = best === undefined ? undefined : classifyConnection(best)
    if (current === undefined && !this.#peers.has(peer)) {
      return
    }
    const state = this.#stateOf(peer)
    state.connections = conns.length
    if (samePath(state.path, current)) {
      return
    }
    const previous = state.path
    state.previous = previous
    state.path = current
    state.since = Date.now()
    if (current === undefined && state.upgrade.attempts === 0) {
      // Nothing worth remembering about a peer that came and went without an upgrade.
      this.#peers.delete(peer)
    }
    this.safeDispatchEvent('path', { detail: { peer, previous, current, at: state.since } })
  }

  /** Records the start of an upgrade attempt (by the direct-path upgrader). */
  upgradeStarted(peer: string): void {
    const u = this.#stateOf(peer).upgrade
    u.state = 'upgrading'
    u.attempts++
    u.lastAttemptAt = Date.now()
    u.nextRetryAt = undefined
    this.#counters.attempts++
    this.#emitUpgrade(peer, 'started', {})
  }

  /** Records a direct connection made by an upgrade attempt. */
  upgradeSucceeded(peer: string, transport: DirectTransport, timeToDirectMs: number): void {
    const u = this.#stateOf(peer).upgrade
    u.state = 'direct'
    u.lastError = undefined
    u.timeToDirectMs = timeToDirectMs
    u.transport = transport
    const c = this.#counters
    c.successes[transport]++
    c.timeToDirectMs.push(timeToDirectMs)
    if (c.timeToDirectMs.length > TIME_TO_DIRECT_SAMPLES) {
      c.timeToDirectMs.shift()
    }
    c.timeToDirectSumMs += timeToDirectMs
    c.timeToDirectCount++
    this.#emitUpgrade(peer, 'succeeded', { transport, elapsedMs: timeToDirectMs })
  }

  /** Records a failed attempt; `retryInMs` is when the next one is due (undefined: none planned). */
  upgradeFailed(peer: string, error: string, elapsedMs: number, retryInMs: number | undefined): void {
    const u = this.#stateOf(peer).upgrade
    u.state = 'failed'
    u.failures++
    u.lastError = error
    u.nextRetryAt = retryInMs === undefined ? undefined : Date.now() + retryInMs
    this.#counters.failures++
    this.#emitUpgrade(peer, 'failed', { error, elapsedMs })
  }

  /** Records that the peer offers no direct path to try. */
  upgradeUnavailable(peer: string, reason: string): void {
    const u = this.#stateOf(peer).upgrade
    if (u.state === 'unavailable' && u.lastError === reason) {
      return
    }
    u.state = 'unavailable'
    u.lastError = reason
    u.nextRetryAt = undefined
    // Not an attempt, but waiters (ping --until-direct) want to know at once.
    this.#emitUpgrade(peer, 'failed', { error: reason })
  }

  #stateOf(peer: string): PeerPath {
    let state = this.#peers.get(peer)
    if (state === undefined) {
      state = {
        peer,
        path: undefined,
        since: Date.now(),
        previous: undefined,
        connections: 0,
        upgrade: {
          state: 'none',
          attempts: 0,
          failures: 0,
          lastError: undefined,
          lastAttemptAt: undefined,
          nextRetryAt: undefined,
          timeToDirectMs: undefined,
          transport: undefined,
        },
      }
      this.#peers.set(peer, state)
    }
    return state
  }

  #emitUpgrade(
    peer: string,
    outcome: UpgradeEvent['outcome'],
    rest: Partial<Pick<UpgradeEvent, 'transport' | 'elapsedMs' | 'error'>>,
  ): void {
    this.safeDispatchEvent('upgrade', {
      detail: {
        peer,
        outcome,
        attempt: this.#stateOf(peer).upgrade.attempts,
        transport: rest.transport,
        elapsedMs: rest.elapsedMs,
        error: rest.error,
        at: Date.now(),
      },
    })
  }
}

function copy(p: PeerPath): PeerPath {
  return {
    ...p,
    path: p.path === undefined ? undefined : { ...p.path },
    previous: p.previous === undefined ? undefined : { ...p.previous },
    upgrade: { ...p.upgrade },
  }
}
