/**
 * Whether a connection still answers. A connection whose path died — a NAT that forgot it, a relay
 * killed without a word, a Wi-Fi roam — stays "open" for minutes while TCP retransmits into the
 * void; {@link LivenessMonitor} pings every connection and aborts the one that stops answering, so
 * the sessions on it attach again elsewhere and the reservation supervisor re-dials at once
 * (docs/decisions/0006-sessions.md). It replaces libp2p's connection monitor, which aborts on the
 * first failure of any kind, with a timeout that adapts to a connection under load (see the ADR).
 *
 * @packageDocumentation
 */

import type { Connection, Libp2pEvents, PeerId, Startable, TypedEventTarget } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { PeerupError } from '../errors.ts'
import { PING_PROTOCOL } from './constants.ts'
import { classifyConnection } from './path.ts'

/** How often every connection is pinged. */
export const LIVENESS_INTERVAL_MS = 5_000

/** A connection whose ping has no answer for this long is taken for dead. */
export const LIVENESS_TIMEOUT_MS = 10_000

/**
 * A peer opened a new connection while an older one to it is open: the older one is pinged at
 * once, and taken for dead after this long without an answer. A peer dials again mostly because
 * its old path died (its NAT forgot it, it roamed); until that old connection is closed, the
 * relay sends circuits to it (libp2p's relay server takes a peer's first connection). As long as
 * a session's probe: a ping queued behind a full window on a slow uplink is late, not lost
 * (docs/decisions/0006-sessions.md).
 */
export const SUPERSEDED_TIMEOUT_MS = 5_000

/** What the monitor uses of libp2p's components: the open connections, and when one opens. */
export interface LivenessComponents {
  connectionManager: { getConnections(peer?: PeerId): Connection[] }
  events: TypedEventTarget<Pick<Libp2pEvents, 'connection:open'>>
}

/** A connection stopped answering pings; aborted with this. */
export class ConnectionDeadError extends PeerupError {
  override name = 'ConnectionDeadError'
}

/** Bytes of one ping (the libp2p ping protocol echoes exactly 32). */
const PING_BYTES = 32

/**
 * One libp2p ping over this very connection (`ping.ping(peer)` lets the connection manager pick
 * one, which need not be the one new streams take): the round trip in ms.
 */
export async function pingConnection(conn: Connection, signal: AbortSignal): Promise<number> {
  const stream = await conn.newStream(PING_PROTOCOL, { signal, runOnLimitedConnection: true })
  try {
    const data = crypto.getRandomValues(new Uint8Array(PING_BYTES))
    const received: Uint8Array[] = []
    let length = 0
    const { promise, resolve, reject } = Promise.withResolvers<number>()
    const startedAt = performance.now()
    const onMessage = (evt: { data: { subarray(): Uint8Array } }): void => {
      const chunk = evt.data.subarray()
      received.push(chunk)
      length += chunk.byteLength
      if (length >= PING_BYTES) {
        const rtt = performance.now() - startedAt
        const echoed = Buffer.concat(received).subarray(0, PING_BYTES)
        if (Buffer.compare(echoed, Buffer.from(data)) === 0) {
          resolve(rtt)
        } else {
          reject(new Error('the peer answered the ping with other bytes'))
        }
      }
    }
    const onClose = (): void => reject(new Error('the ping stream closed before the answer'))
    const onAbort = (): void => reject(signal.reason)
    stream.addEventListener('message', onMessage as never)
    stream.addEventListener('close', onClose)
    signal.addEventListener('abort', onAbort, { once: true })
    try {
      stream.send(data)
      return await promise
    } finally {
      stream.removeEventListener('message', onMessage as never)
      stream.removeEventListener('close', onClose)
      signal.removeEventListener('abort', onAbort)
    }
  } finally {
    await stream
      .close({ signal: AbortSignal.timeout(1000) })
      .catch(() => stream.abort(new Error('ping done')))
  }
}

export interface LivenessInit {
  /** Told of each connection aborted, for the log. */
  onDead?: (connection: Connection, err: ConnectionDeadError) => void
}

/**
 * Pings every open connection each interval (one ping at a time per connection) and records the
 * round trip on it (`connection.rtt`, as libp2p's monitor did). A ping without answer within the
 * timeout aborts the connection; any other failure (the peer refused the stream, too many pings at
 * once) says the peer is there, and changes nothing.
 */
export class LivenessMonitor implements Startable {
  readonly #components: LivenessComponents
  readonly #onDead: LivenessInit['onDead']
  readonly #pinging = new WeakSet<Connection>()
  /** Connections pinged because their peer opened a newer one. */
  readonly #probing = new WeakSet<Connection>()
  /** When each connection last answered a ping (ms since the epoch, as its timeline). */
  readonly #answered = new WeakMap<Connection, number>()
  #timer: NodeJS.Timeout | undefined
  #controller = new AbortController()

  constructor(components: LivenessComponents, init: LivenessInit = {}) {
    this.#components = components
    this.#onDead = init.onDead
  }

  readonly [Symbol.toStringTag] = 'peerup/liveness'

  readonly #onOpen = (evt: CustomEvent<Connection>): void => this.#superseded(evt.detail)

  start(): void {
    this.#controller = new AbortController()
    this.#timer = setInterval(() => this.#round(), LIVENESS_INTERVAL_MS)
    this.#timer.unref()
    this.#components.events.addEventListener('connection:open', this.#onOpen)
  }

  stop(): void {
    clearInterval(this.#timer)
    this.#controller.abort()
    this.#components.events.removeEventListener('connection:open', this.#onOpen)
  }

  #round(): void {
    for (const connection of this.#components.connectionManager.getConnections()) {
      this.#ping(connection, LIVENESS_TIMEOUT_MS)
    }
  }

  /**
   * `fresh` came from a peer that has older connections: the older direct ones are pinged now (see
   * {@link SUPERSEDED_TIMEOUT_MS}). Only direct ones, and only for a direct `fresh`: a relayed
   * connection that a direct one supersedes is the upgrade's to close once its sessions moved,
   * and it may be busy with them (a ping behind megabytes in flight is late, not lost).
   */
  #superseded(fresh: Connection): void {
    if (isRelayed(fresh)) {
      return
    }
    for (const connection of this.#components.connectionManager.getConnections(fresh.remotePeer)) {
      if (connection !== fresh && !isRelayed(connection) && connection.timeline.open <= fresh.timeline.open) {
        // One that missed its last ping round goes now; the others get a ping of their own, apart
        // from the rounds' (one of those may be under way, with the long timeout).
        if (!this.suspect(connection)) {
          this.#ping(connection, SUPERSEDED_TIMEOUT_MS, this.#probing)
        }
      }
    }
  }

  /** Pings `connection` unless a ping of it (of the same kind, in `under`) is under way. */
  #ping(connection: Connection, timeoutMs: number, under = this.#pinging): void {
    if (connection.status === 'open' && !under.has(connection)) {
      under.add(connection)
      void this.#check(connection, timeoutMs).finally(() => under.delete(connection))
    }
  }

  async #check(connection: Connection, timeoutMs: number): Promise<void> {
    const timeout = AbortSignal.timeout(timeoutMs)
    try {
      connection.rtt = await pingConnection(connection, AbortSignal.any([this.#controller.signal, timeout]))
      this.#answered.set(connection, Date.now())
    } catch {
      if (timeout.aborted) {
        this.#dead(connection, `no answer to a ping for ${timeoutMs / 1000} s`)
      }
    }
  }

  /**
   * Something over `connection` stopped answering (a session's probe over a circuit through it):
   * if the connection itself missed its last ping round, it is taken for dead now rather than at
   * the end of its ping's timeout. One that answered lately is left alone. Tells whether it was.
   */
  suspect(connection: Connection): boolean {
    const silentMs = Date.now() - (this.#answered.get(connection) ?? connection.timeline.open)
    if (silentMs <= LIVENESS_INTERVAL_MS * 1.5) {
      return false
    }
    this.#dead(connection, `no answer to a ping for ${(silentMs / 1000).toFixed(1)} s`)
    return true
  }

  #dead(connection: Connection, why: string): void {
    if (connection.status !== 'open') {
      return
    }
    const err = new ConnectionDeadError(why)
    this.#onDead?.(connection, err)
    connection.abort(err)
  }
}

function isRelayed(connection: Connection): boolean {
  return classifyConnection(connection).type === 'RELAYED'
}

/** {@link LivenessMonitor} as a libp2p service. */
export function liveness(init: LivenessInit = {}): (components: LivenessComponents) => LivenessMonitor {
  return (components) => new LivenessMonitor(components, init)
}

/**
 * Aborts `connection`, which stopped answering. A relayed one runs over a connection to its relay
 * that may be the one that died (a NAT between us and the relay forgot it): that one is
 * {@link LivenessMonitor.suspect}ed, so the way back is dialled at once.
 */
export function severConnection(
  node: { getConnections(peer?: PeerId): Connection[]; services: { liveness: LivenessMonitor } },
  connection: Connection,
  err: Error,
): void {
  connection.abort(err)
  const relay = classifyConnection(connection).relay
  if (relay !== undefined) {
    for (const c of node.getConnections(peerIdFromString(relay))) {
      node.services.liveness.suspect(c)
    }
  }
}
