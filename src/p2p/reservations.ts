/**
 * The reservation supervisor: keeps this node connected to every configured relay and a
 * reservation held on each. libp2p's own reconnection gives up after ~31 s, static circuit listen
 * addresses are never re-made (libp2p issue 3601), and a reservation the relay refused is never
 * asked for again while the connection stays up (its relay discovery runs once per connection),
 * so this loop is ours:
 *
 * - a relay without a reservation is tried again with capped exponential backoff (1 s, 2 s, 4 s …
 *   at most {@link RESERVATION_RETRY_MAX_MS}, with jitter), for as long as the node runs: a dial
 *   when it is not connected, then a reservation request;
 * - a relay whose connection closed is re-dialled at once (at most once a second);
 * - a relay that tells us we were just authorized there (`/peerup/relay-notify/1.0.0`,
 *   src/p2p/relay-notify.ts) is asked again at once, and one that tells us why it refused us
 *   has that reason shown (`daemon status`, `peerup invite`).
 *
 * @packageDocumentation
 */

import type { Connection, PeerId, Stream } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr'
import type { RelayState as ApiRelayState, DaemonEvent } from '../api/index.ts'
import type { Logger } from '../log/index.ts'
import { backoffDelayMs } from '../util/retry.ts'
import {
  RELAY_DIAL_TIMEOUT_MS,
  RELAY_HOP_PROTOCOL,
  RELAY_KEEP_ALIVE_TAG,
  RESERVATION_RETRY_BASE_MS,
  RESERVATION_RETRY_JITTER,
  RESERVATION_RETRY_MAX_MS,
  SUPERVISOR_TICK_MS,
} from './constants.ts'
import type { PeerupLibp2p } from './node.ts'
import {
  RELAY_NOTIFY_PROTOCOL,
  RELAY_NOTIFY_STREAMS,
  type RelayNotice,
  readRelayNotice,
} from './relay-notify.ts'

/** One relay as the supervisor sees it: the API's relay state, with its times in ms since the epoch. */
export type RelayState = Omit<ApiRelayState, 'since' | 'failures' | 'nextAttemptAt'> & {
  /** When `reserved` last changed. */
  since: number
  /** Tries in a row that failed; 0 once a reservation is held. */
  failures: number
  /** When the next try is due; undefined while a reservation is held. */
  nextAttemptAt: number | undefined
}

/** A reservation gained or lost: the API's `reservation` event without its type and time. */
export type ReservationEvent = Omit<Extract<DaemonEvent, { type: 'reservation' }>, 'type' | 'time'>

/**
 * The delay before the next try after `failures` failed tries in a row: 1 s, 2 s, 4 s … capped at
 * {@link RESERVATION_RETRY_MAX_MS}, each up to a fifth shorter at random so that the nodes a
 * relay refused together (a relay restart) do not come back together.
 */
export function reservationRetryDelayMs(failures: number): number {
  return backoffDelayMs(Math.max(failures, 1), {
    baseMs: RESERVATION_RETRY_BASE_MS,
    maxMs: RESERVATION_RETRY_MAX_MS,
    jitter: RESERVATION_RETRY_JITTER,
  })
}

/** A relay is re-dialled at once when its connection closes, but not more often than this. */
const MIN_RETRY_INTERVAL_MS = 1_000

/** Groups relay multiaddrs by peer id, so the IPv4 and IPv6 address of one relay count once (ADR-B01). */
export function groupRelays(addresses: string[]): Map<string, Multiaddr[]> {
  const byPeer = new Map<string, Multiaddr[]>()
  for (const a of addresses) {
    const ma = multiaddr(a)
    const id = ma.getComponents().find((c) => c.name === 'p2p')?.value
    if (id === undefined) {
      continue
    }
    byPeer.set(id, [...(byPeer.get(id) ?? []), ma])
  }
  return byPeer
}

/**
 * The part of @libp2p/circuit-relay-v2's transport that makes reservations (its internal
 * `ReservationStore`, 4.2.x, the version patches/ pins): `addRelay(peer, 'discovered')` is what
 * its relay discovery calls once per connection, and fills one of the node's `/p2p-circuit`
 * listeners (src/p2p/node.ts). A relay that failed a dial is remembered in `relayFilter` and
 * refused until the store next counts its relays; the supervisor's relays are worth every try.
 */
interface ReservationStore {
  addRelay(peer: PeerId, type: 'discovered'): Promise<unknown>
  relayFilter?: { remove(item: Uint8Array): boolean }
}

/** The node's reservation store, found among its transports; undefined when there is none. */
function reservationStoreOf(node: PeerupLibp2p): ReservationStore | undefined {
  const components = (
    node as unknown as { components?: { transportManager?: { getTransports(): unknown[] } } }
  ).components
  for (const transport of components?.transportManager?.getTransports() ?? []) {
    const store = (transport as { reservationStore?: Partial<ReservationStore> }).reservationStore
    if (typeof store?.addRelay === 'function') {
      return store as ReservationStore
    }
  }
  return undefined
}

/** Why a reservation request failed, worded for `daemon status`; `told` is what the relay said. */
export function describeReservationFailure(err: unknown, told: string | undefined): string {
  const message = (err as Error)?.message ?? String(err)
  if (/PERMISSION_DENIED/.test(message)) {
    // Our relay refuses with PERMISSION_DENIED in its gater only (src/relay/gater.ts) and then
    // tells the peer why (src/p2p/relay-notify.ts); another relay says nothing more.
    return told === undefined
      ? 'refused by the relay (PERMISSION_DENIED: not in its relay_authorized_keys, or over its limits)'
      : `refused by the relay: ${told}`
  }
  if (/RESERVATION_REFUSED/.test(message)) {
    return 'refused by the relay: it holds as many reservations as it may (RESERVATION_REFUSED)'
  }
  return `reservation failed: ${message}`
}

interface Supervised {
  id: PeerId
  addrs: Multiaddr[]
  state: RelayState
  /** When the last try started (ms since epoch); 0 before the first. */
  triedAt: number
  /** When the relay last told us we were authorized (ms since epoch); 0 if never. */
  authorizedAt: number
  /** When the connection to the relay last closed (ms since epoch); 0 if never. */
  closedAt: number
  /** Why the relay last said it refused us (relay-notify); cleared once a reservation is held. */
  told: string | undefined
}

/**
 * Keeps reservations on every configured relay: a component whose `start()` handles the relays'
 * notices, subscribes to the node's events and runs the first check, and whose `stop()` undoes
 * that, cancels the next check and aborts the dials in flight (the relay connections stay until
 * the node stops).
 */
export class ReservationSupervisor {
  readonly #node: PeerupLibp2p
  readonly #relays = new Map<string, Supervised>()
  readonly #log: Logger
  readonly #changeListeners = new Set<(event: ReservationEvent) => void>()
  readonly #updateListeners = new Set<(state: RelayState) => void>()
  #timer: NodeJS.Timeout | undefined
  #running = false
  #checking: Promise<void> | undefined
  #controller = new AbortController()

  constructor(
    components: { node: PeerupLibp2p; log: Logger },
    /** `relays`: their multiaddrs, each ending in `/p2p/<relay>`; none by default (then it does nothing). */
    init: { relays?: string[] } = {},
  ) {
    this.#node = components.node
    this.#log = components.log
    // Not running yet: nothing to hang up, no check to run.
    this.setRelays(init.relays ?? [])
  }

  /**
   * Replaces the relays to keep reservations on (a config reload). Relays kept keep their state;
   * a removed relay loses its keep-alive tag and is hung up; a new one is dialled at once.
   */
  setRelays(addresses: string[]): { added: string[]; removed: string[] } {
    const next = groupRelays(addresses)
    const removed = [...this.#relays.keys()].filter((id) => !next.has(id))
    const added: string[] = []
    for (const id of removed) {
      this.#relays.delete(id)
      const peer = peerIdFromString(id)
      this.#node.peerStore.merge(peer, { tags: { [RELAY_KEEP_ALIVE_TAG]: undefined } }).catch(() => {})
      this.#node.hangUp(peer).catch(() => {})
    }
    for (const [id, addrs] of next) {
      const existing = this.#relays.get(id)
      if (existing !== undefined) {
        existing.addrs = addrs
        existing.state.addrs = addrs.map(String)
        continue
      }
      added.push(id)
      this.#relays.set(id, {
        id: peerIdFromString(id),
        addrs,
        state: {
          peerId: id,
          addrs: addrs.map(String),
          connected: false,
          reserved: false,
          since: Date.now(),
          lastError: undefined,
          reason: undefined,
          failures: 0,
          nextAttemptAt: Date.now(),
        },
        triedAt: 0,
        authorizedAt: 0,
        closedAt: 0,
        told: undefined,
      })
    }
    if (added.length > 0) {
      this.poke()
    }
    return { added, removed }
  }

  async start(): Promise<void> {
    if (this.#running) {
      return
    }
    await this.#node.handle(RELAY_NOTIFY_PROTOCOL, this.#onNotice, {
      maxInboundStreams: RELAY_NOTIFY_STREAMS,
    })
    this.#running = true
    this.#controller = new AbortController()
    this.#node.addEventListener('peer:disconnect', this.#onDisconnect)
    this.#node.addEventListener('self:peer:update', this.#onSelfUpdate)
    this.poke()
  }

  readonly #onDisconnect = (evt: CustomEvent<PeerId>): void => {
    const relay = this.#relays.get(evt.detail.toString())
    if (relay !== undefined) {
      relay.state.connected = false
      relay.closedAt = Date.now()
      // The reservation went with the connection (libp2p drops it on connection:close): said
      // now, since our addresses change only after a debounce, and libp2p's own reconnection
      // to a relay that restarted quickly can make a new reservation before that.
      this.#refreshReserved()
      this.#retrySoon(relay)
    }
  }

  /** Our own addresses change when a reservation is made or lost. */
  readonly #onSelfUpdate = (): void => this.#refreshReserved()

  async stop(): Promise<void> {
    this.#running = false
    clearTimeout(this.#timer)
    this.#controller.abort()
    this.#node.removeEventListener('peer:disconnect', this.#onDisconnect)
    this.#node.removeEventListener('self:peer:update', this.#onSelfUpdate)
    await this.#node.unhandle(RELAY_NOTIFY_PROTOCOL)
  }

  status(): RelayState[] {
    return [...this.#relays.values()].map((r) => ({ ...r.state }))
  }

  /** Subscribes to reservations gained and lost; returns the unsubscribe function. */
  onChange(listener: (event: ReservationEvent) => void): () => void {
    this.#changeListeners.add(listener)
    return () => this.#changeListeners.delete(listener)
  }

  /**
   * Subscribes to every change of a relay's state that a person would want to see: a reservation
   * gained or lost, a try that failed (with its reason and the next try), a notice of the relay.
   * Returns the unsubscribe function.
   */
  onUpdate(listener: (state: RelayState) => void): () => void {
    this.#updateListeners.add(listener)
    return () => this.#updateListeners.delete(listener)
  }

  /** Resolves once a reservation is held on at least one relay; rejects when `signal` fires first. */
  async waitForReservation(signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted()
    if (this.status().some((r) => r.reserved)) {
      return
    }
    // The supervisor's own change events, not self:peer:update: that event can fire before the
    // circuit address shows in getMultiaddrs(), and the supervisor's next check (within a second
    // while a relay is missing) is what notices the reservation then.
    const { promise, resolve, reject } = Promise.withResolvers<void>()
    const onAbort = (): void => reject(signal?.reason)
    const off = this.onChange((e) => {
      if (e.reserved) {
        resolve()
      }
    })
    signal?.addEventListener('abort', onAbort, { once: true })
    try {
      await promise
    } finally {
      off()
      signal?.removeEventListener('abort', onAbort)
    }
  }

  /** Checks every relay now (coalesced with a check already running); the tries due are made. */
  poke(): void {
    if (!this.#running || this.#checking !== undefined) {
      return
    }
    clearTimeout(this.#timer)
    this.#checking = this.#checkAll()
      .catch((err: unknown) => this.#log.warn('relay check failed', { error: err as Error }))
      .finally(() => {
        this.#checking = undefined
        this.#schedule()
      })
  }

  /**
   * Arms the timer for the next check: the earliest try due, a second from now for a relay whose
   * reservation was made but does not show yet, a tick from now when every reservation is held.
   * While a check runs, it arms the timer itself when it ends.
   */
  #schedule(): void {
    if (!this.#running || this.#checking !== undefined) {
      return
    }
    clearTimeout(this.#timer)
    const now = Date.now()
    let at = now + SUPERVISOR_TICK_MS
    for (const r of this.#relays.values()) {
      if (!r.state.reserved) {
        at = Math.min(at, r.state.nextAttemptAt ?? now + 1_000)
      }
    }
    this.#timer = setTimeout(() => this.poke(), Math.max(at - now, 0))
    this.#timer.unref()
  }

  /** Makes the next try of `relay` due now, or a second after the last one started. */
  #retrySoon(relay: Supervised): void {
    const at = Math.max(Date.now(), relay.triedAt + MIN_RETRY_INTERVAL_MS)
    relay.state.nextAttemptAt = Math.min(relay.state.nextAttemptAt ?? at, at)
    this.#schedule()
  }

  async #checkAll(): Promise<void> {
    const now = Date.now()
    // Due: no reservation, and no next try set (one was made) or its time has come.
    const due = (r: Supervised): boolean => !r.state.reserved && (r.state.nextAttemptAt ?? now) <= now
    await Promise.all([...this.#relays.values()].map((r) => (due(r) ? this.#attempt(r) : this.#look(r))))
    this.#refreshReserved()
  }

  /** A relay whose try is not due: only whether it is still connected. */
  async #look(relay: Supervised): Promise<void> {
    relay.state.connected = this.#directConnection(relay) !== undefined
    if (relay.state.connected) {
      this.#resetAnsweredRequests(relay)
      await this.#keepAlive(relay)
    }
  }

  /** One try: dial the relay unless connected, then ask for a reservation unless one is held. */
  async #attempt(relay: Supervised): Promise<void> {
    relay.triedAt = Date.now()
    if (this.#directConnection(relay) === undefined) {
      try {
        const signal = AbortSignal.any([this.#controller.signal, AbortSignal.timeout(RELAY_DIAL_TIMEOUT_MS)])
        await this.#node.dial(relay.addrs, { signal })
        relay.state.lastError = undefined
        this.#log.info('connected to relay', { relay: relay.state.peerId })
      } catch (err) {
        relay.state.connected = false
        relay.state.lastError = (err as Error).message
        this.#failed(relay, `cannot reach the relay: ${relay.state.lastError}`)
        return
      }
    }
    relay.state.connected = true
    await this.#keepAlive(relay)
    if (this.#holds(relay)) {
      return
    }
    try {
      await this.#reserve(relay)
      // Held: the address shows in a moment (self:peer:update), or the next check (a second
      // from now, nextAttemptAt being unset) asks again, which costs the relay nothing.
      relay.state.nextAttemptAt = undefined
    } catch (err) {
      this.#failed(relay, describeReservationFailure(err, relay.told))
    }
  }

  async #reserve(relay: Supervised): Promise<void> {
    const store = reservationStoreOf(this.#node)
    if (store === undefined) {
      throw new Error("the node's circuit relay transport has no reservation store")
    }
    store.relayFilter?.remove(relay.id.toMultihash().bytes)
    // Also the request libp2p's relay discovery makes by itself once a connection is identified.
    this.#resetAnsweredRequests(relay)
    try {
      await store.addRelay(relay.id, 'discovered')
    } finally {
      this.#resetAnsweredRequests(relay)
    }
  }

  /**
   * Resets the hop streams of reservation requests that have their answer. A relay (circuit relay
   * v2's server, 4.2.x) that refuses a reservation answers and leaves the stream open, and the
   * reservation store closes only its own side: every refusal would keep a stream on the relay
   * connection. On the relay, the open hop stream makes an unauthorized node look busy, so it is
   * never let go as an idle stranger (docs/decisions/0004-strangers.md); here, after 64 of them
   * (libp2p's limit of outbound streams of one protocol on a connection) no reservation could be
   * asked for on that connection ever again, authorized or not. A circuit through the relay keeps
   * its hop stream writable while it lives, so only finished requests match.
   */
  #resetAnsweredRequests(relay: Supervised): void {
    for (const connection of this.#node.getConnections(relay.id)) {
      for (const stream of connection.streams) {
        if (
          stream.protocol === RELAY_HOP_PROTOCOL &&
          stream.direction === 'outbound' &&
          stream.writeStatus === 'closed'
        ) {
          stream.abort(new Error('reservation request answered'))
        }
      }
    }
  }

  /**
   * A try failed: the next one after the backoff; at once when the relay told us meanwhile that
   * we are authorized, as soon as {@link MIN_RETRY_INTERVAL_MS} allows when the connection closed
   * meanwhile (a disconnect is answered by a dial at once, even during a try).
   */
  #failed(relay: Supervised, reason: string): void {
    const s = relay.state
    s.failures++
    const now = Date.now()
    let at = now + reservationRetryDelayMs(s.failures)
    if (relay.authorizedAt >= relay.triedAt) {
      at = now
    } else if (relay.closedAt >= relay.triedAt) {
      at = Math.min(at, Math.max(now, relay.triedAt + MIN_RETRY_INTERVAL_MS))
    }
    s.nextAttemptAt = at
    const changed = s.reason !== reason
    s.reason = reason
    // At warn once per reason, then at debug.
    const fields = { relay: s.peerId, reason, failures: s.failures, retryInMs: at - now }
    this.#log[changed ? 'warn' : 'debug']('no reservation on relay', fields)
    this.#updated(relay)
  }

  /** A notice from a relay (src/p2p/relay-notify.ts); only the configured relays are heard. */
  readonly #onNotice = async (stream: Stream, connection: Connection): Promise<void> => {
    const relay = this.#relays.get(connection.remotePeer.toString())
    if (relay === undefined) {
      stream.abort(new Error('not one of our relays'))
      return
    }
    let notice: RelayNotice
    try {
      notice = await readRelayNotice(stream)
    } catch (err) {
      this.#log.debug('unreadable notice from relay', { relay: relay.state.peerId, error: err as Error })
      return
    }
    this.#log.info('notice from relay', { relay: relay.state.peerId, notice: notice.type })
    if (notice.type === 'authorized') {
      relay.told = undefined
      relay.authorizedAt = Date.now()
      relay.state.failures = 0
      if (!relay.state.reserved) {
        relay.state.nextAttemptAt = Date.now()
        this.#schedule()
      }
      return
    }
    relay.told = notice.reason
    if (!relay.state.reserved && relay.state.reason?.startsWith('refused by the relay') === true) {
      relay.state.reason = `refused by the relay: ${notice.reason}`
      this.#updated(relay)
    }
  }

  #directConnection(relay: Supervised): Connection | undefined {
    return this.#node.getConnections(relay.id).find((c) => c.status === 'open' && c.limits === undefined)
  }

  /** Keeps the connection however busy the connection manager gets. */
  async #keepAlive(relay: Supervised): Promise<void> {
    await this.#node.peerStore
      .merge(relay.id, { tags: { [RELAY_KEEP_ALIVE_TAG]: { value: 100 } } })
      .catch(() => {})
  }

  #holds(relay: Supervised): boolean {
    return this.#node
      .getMultiaddrs()
      .some((a) => a.toString().includes(`/p2p/${relay.state.peerId}/p2p-circuit`))
  }

  #updated(relay: Supervised): void {
    for (const listener of this.#updateListeners) {
      listener({ ...relay.state })
    }
  }

  #refreshReserved(): void {
    for (const relay of this.#relays.values()) {
      const reserved = this.#holds(relay)
      if (reserved === relay.state.reserved) {
        continue
      }
      const s = relay.state
      s.reserved = reserved
      s.since = Date.now()
      if (reserved) {
        s.failures = 0
        s.reason = undefined
        s.nextAttemptAt = undefined
        relay.told = undefined
      } else {
        s.reason = 'the reservation was lost'
        this.#retrySoon(relay)
      }
      this.#log.info(reserved ? 'reservation held' : 'reservation lost', { relay: s.peerId })
      for (const listener of this.#changeListeners) {
        listener({ relay: s.peerId, reserved })
      }
      this.#updated(relay)
    }
  }
}
