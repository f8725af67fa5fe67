/**
 * The reservation supervisor: keeps this node connected to every configured relay and checks
 * that a reservation is held on each, re-dialling a relay that went away (restart, network
 * change) within seconds. libp2p's own reconnection gives up after ~31 s and static circuit
 * listen addresses are never re-made (libp2p issue 3601), so this loop is ours.
 *
 * @packageDocumentation
 */

import type { PeerId } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr'
import type { Logger } from '../log/index.ts'
import { RELAY_DIAL_TIMEOUT_MS, RELAY_KEEP_ALIVE_TAG, SUPERVISOR_TICK_MS } from './constants.ts'
import type { PeerupLibp2p } from './node.ts'

/** One relay as the supervisor sees it. */
export interface RelayState {
  peerId: string
  addrs: string[]
  connected: boolean
  reserved: boolean
  /** When `reserved` last changed (ms since epoch). */
  since: number
  lastError: string | undefined
}

/** Events: `reservation` with `{ relay, reserved }` whenever a reservation is gained or lost. */
export interface ReservationEvent {
  relay: string
  reserved: boolean
}

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

/** What a {@link ReservationSupervisor} uses. */
export interface ReservationSupervisorComponents {
  node: PeerupLibp2p
  log: Logger
}

/** Settings of a {@link ReservationSupervisor}; each has a default. */
export interface ReservationSupervisorInit {
  /** The relays' multiaddrs, each ending in `/p2p/<relay>`; none by default (then it does nothing). */
  relays?: string[]
  /** How often relays are checked once every reservation is held. */
  tickMs?: number
  onChange?: (event: ReservationEvent) => void
}

/**
 * Keeps reservations on every configured relay: a component whose `start()` subscribes to the
 * node's peer events and runs the first check, and whose `stop()` unsubscribes, cancels the next
 * check and aborts the dials in flight (the relay connections stay until the node stops).
 */
export class ReservationSupervisor {
  readonly #node: PeerupLibp2p
  readonly #relays: Map<string, { id: PeerId; addrs: Multiaddr[]; state: RelayState }>
  readonly #log: Logger
  readonly #tickMs: number
  readonly #changeListeners = new Set<(event: ReservationEvent) => void>()
  #timer: NodeJS.Timeout | undefined
  #running = false
  #checking: Promise<void> | undefined
  #again = false
  #controller = new AbortController()
  #listeners: Array<() => void> = []

  constructor(components: ReservationSupervisorComponents, init: ReservationSupervisorInit = {}) {
    this.#node = components.node
    this.#log = components.log
    this.#tickMs = init.tickMs ?? SUPERVISOR_TICK_MS
    if (init.onChange !== undefined) {
      this.#changeListeners.add(init.onChange)
    }
    this.#relays = new Map()
    this.#setRelays(init.relays ?? [])
  }

  /**
   * Replaces the relays to keep reservations on (a config reload). Relays kept keep their state;
   * a removed relay loses its keep-alive tag and is hung up; a new one is dialled at once.
   */
  setRelays(addresses: string[]): { added: string[]; removed: string[] } {
    const result = this.#setRelays(addresses)
    for (const id of result.removed) {
      const peer = peerIdFromString(id)
      this.#node.peerStore.merge(peer, { tags: { [RELAY_KEEP_ALIVE_TAG]: undefined } }).catch(() => {})
      this.#node.hangUp(peer).catch(() => {})
    }
    if (result.added.length > 0) {
      this.poke()
    }
    return result
  }

  #setRelays(addresses: string[]): { added: string[]; removed: string[] } {
    const next = groupRelays(addresses)
    const removed = [...this.#relays.keys()].filter((id) => !next.has(id))
    const added: string[] = []
    for (const id of removed) {
      this.#relays.delete(id)
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
        },
      })
    }
    return { added, removed }
  }

  /** Starts supervising; the first check runs at once. */
  start(): void {
    if (this.#running) {
      return
    }
    this.#running = true
    this.#controller = new AbortController()
    const onPeerEvent = (evt: CustomEvent<PeerId>): void => {
      if (this.#relays.has(evt.detail.toString())) {
        this.poke()
      }
    }
    // Our own addresses change when a reservation is made or lost.
    const onSelfUpdate = (): void => this.#refreshReserved()
    this.#node.addEventListener('peer:disconnect', onPeerEvent)
    this.#node.addEventListener('peer:identify', onPeerEvent as never)
    this.#node.addEventListener('self:peer:update', onSelfUpdate)
    this.#listeners.push(() => {
      this.#node.removeEventListener('peer:disconnect', onPeerEvent)
      this.#node.removeEventListener('peer:identify', onPeerEvent as never)
      this.#node.removeEventListener('self:peer:update', onSelfUpdate)
    })
    this.poke()
  }

  /** Stops supervising (the relay connections stay until the node stops). */
  stop(): void {
    this.#running = false
    clearTimeout(this.#timer)
    this.#controller.abort()
    for (const remove of this.#listeners.splice(0)) {
      remove()
    }
  }

  /** The state of every relay. */
  status(): RelayState[] {
    return [...this.#relays.values()].map((r) => ({ ...r.state }))
  }

  /** Subscribes to reservations gained and lost; returns the unsubscribe function. */
  onChange(listener: (event: ReservationEvent) => void): () => void {
    this.#changeListeners.add(listener)
    return () => this.#changeListeners.delete(listener)
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

  /** Checks every relay now (coalesced with a check already running). */
  poke(): void {
    if (!this.#running) {
      return
    }
    if (this.#checking !== undefined) {
      this.#again = true
      return
    }
    clearTimeout(this.#timer)
    this.#checking = this.#checkAll()
      .catch((err: unknown) => this.#log.warn('relay check failed', { error: err as Error }))
      .finally(() => {
        this.#checking = undefined
        if (!this.#running) {
          return
        }
        if (this.#again) {
          this.#again = false
          // A disconnect seen during a check: look again shortly, not at once, so a relay that is
          // restarting gets a moment to listen again.
          this.#timer = setTimeout(() => this.poke(), 500)
        } else {
          this.#timer = setTimeout(() => this.poke(), this.#nextDelay())
        }
        this.#timer.unref()
      })
  }

  #nextDelay(): number {
    // While some relay is missing, check every second; once all are fine, every tick.
    return [...this.#relays.values()].every((r) => r.state.reserved) ? this.#tickMs : 1000
  }

  async #checkAll(): Promise<void> {
    await Promise.all([...this.#relays.values()].map((r) => this.#check(r)))
    this.#refreshReserved()
  }

  async #check(relay: { id: PeerId; addrs: Multiaddr[]; state: RelayState }): Promise<void> {
    const connected = this.#node
      .getConnections(relay.id)
      .some((c) => c.status === 'open' && c.limits === undefined)
    if (!connected) {
      try {
        const signal = AbortSignal.any([this.#controller.signal, AbortSignal.timeout(RELAY_DIAL_TIMEOUT_MS)])
        await this.#node.dial(relay.addrs, { signal })
        relay.state.lastError = undefined
        this.#log.info('connected to relay', { relay: relay.state.peerId })
      } catch (err) {
        const message = (err as Error).message
        if (relay.state.lastError !== message) {
          this.#log.warn('cannot reach relay', { relay: relay.state.peerId, error: message })
        }
        relay.state.lastError = message
      }
    }
    relay.state.connected = this.#node.getConnections(relay.id).some((c) => c.status === 'open')
    if (relay.state.connected) {
      // Keep the connection however busy the connection manager gets.
      await this.#node.peerStore
        .merge(relay.id, { tags: { [RELAY_KEEP_ALIVE_TAG]: { value: 100 } } })
        .catch(() => {})
    }
  }

  #refreshReserved(): void {
    const addrs = this.#node.getMultiaddrs().map((a) => a.toString())
    for (const relay of this.#relays.values()) {
      const reserved = addrs.some((a) => a.includes(`/p2p/${relay.state.peerId}/p2p-circuit`))
      if (reserved !== relay.state.reserved) {
        relay.state.reserved = reserved
        relay.state.since = Date.now()
        this.#log.info(reserved ? 'reservation held' : 'reservation lost', { relay: relay.state.peerId })
        for (const listener of this.#changeListeners) {
          listener({ relay: relay.state.peerId, reserved })
        }
        if (!reserved) {
          this.poke()
        }
      }
    }
  }
}
