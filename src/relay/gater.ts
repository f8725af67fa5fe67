/**
 * The relay's gater: who may connect, who may hold a reservation, and which relayed connections
 * are opened. Members (peers in relay_authorized_keys) are never counted against the per-IP
 * limits below — many of them can sit behind one NAT. A stranger may connect (a joiner needs a
 * limited circuit to pair, or the relay's own group codes), but:
 *
 * - its handshakes and connections are limited per IP, so one host cannot fill the relay;
 * - it gets a circuit only to a member that has an invite open, at a bounded rate and a few at a
 *   time per peer and per IP, so it cannot flood a member with half-open circuits;
 * - only members can be reached through the relay at all.
 *
 * docs/decisions/0004-strangers.md says why each limit is where it is.
 *
 * @packageDocumentation
 */

import type { Connection, ConnectionGater, MultiaddrConnection, PeerId } from '@libp2p/interface'
import type { AuthDecisionCallback, AuthorizedPeers } from '../auth/gater.ts'
import { ipOfAddr, type PendingSlot, PendingSlots } from '../auth/pending.ts'
import { RELAY_HOP_PROTOCOL } from '../p2p/constants.ts'

export type RefusalWhat = 'connection' | 'reservation' | 'circuit' | 'dht' | 'routing-table'

/** What the relay gater needs to know about the relay's live state. */
export interface RelayGaterState {
  /** The IP address the peer is connected from, if connected directly. */
  ipOf(peer: PeerId): string | undefined
  /** Peers holding a reservation while connected, with their IP. */
  reservedPeers(): Array<{ peer: string; ip: string | undefined }>
  openCircuits(): number
  connections(): Connection[]
  /** Lets stranger `source` open a circuit to `member` if the member has an invite open (and notes it). */
  admitStranger(member: string, source: string): boolean
}

/** The limits on strangers (relay-server.yaml `resources:`). */
export interface StrangerLimits {
  /** Inbound connections still in their handshake, per IP (members too: nobody is known yet). */
  maxPendingPerIp: number
  /** Open connections of strangers, per IP. */
  maxConnectionsPerIp: number
  /** Circuits open at once from strangers, per IP; per stranger it is {@link CIRCUITS_PER_STRANGER}. */
  maxCircuitsPerIp: number
  /** Circuit requests of strangers per minute, per IP. */
  circuitsPerMinutePerIp: number
}

/** Circuits one stranger may have open at once: a pairing needs one. */
export const CIRCUITS_PER_STRANGER = 2

/**
 * New connections a second from one IP, bursts of up to that many. Each costs a noise handshake
 * before anyone is known; a member's is given back once it has authenticated, so only strangers'
 * connections use it up. libp2p has the same limit (`inboundConnectionThreshold`), but refuses
 * silently and counts members too: the relay turns it off and keeps this one.
 */
export const CONNECTIONS_PER_SECOND_PER_IP = 100

export interface RelayGaterOptions {
  enabled: boolean
  maxReservationsPerIp: number
  maxCircuits: number
  strangers: StrangerLimits
  /** A pending slot is freed after this at the latest (the relay's inbound upgrade timeout). */
  handshakeTimeoutMs: number
  onDecision?: AuthDecisionCallback
  onRefusal?: (what: RefusalWhat, peer: string, reason: string) => void
}

/** A token bucket per key: `size` requests per `periodMs`, in bursts of up to that many. */
class RateLimit {
  readonly #buckets = new Map<string, { tokens: number; at: number }>()
  readonly #size: number
  readonly #periodMs: number

  constructor(size: number, periodMs: number) {
    this.#size = size
    this.#periodMs = periodMs
  }

  #refilled(b: { tokens: number; at: number }, now: number): number {
    return Math.min(this.#size, b.tokens + ((now - b.at) * this.#size) / this.#periodMs)
  }

  take(key: string, now = Date.now()): boolean {
    const b = this.#buckets.get(key) ?? { tokens: this.#size, at: now }
    b.tokens = this.#refilled(b, now)
    b.at = now
    this.#buckets.set(key, b)
    if (b.tokens < 1) {
      return false
    }
    b.tokens -= 1
    if (this.#buckets.size > 10_000) {
      // Full buckets carry no state worth keeping.
      for (const [k, v] of this.#buckets) {
        if (this.#refilled(v, now) >= this.#size) {
          this.#buckets.delete(k)
        }
      }
    }
    return true
  }

  /** Returns a token taken for a request that, after all, is not counted. */
  giveBack(key: string): void {
    const b = this.#buckets.get(key)
    if (b !== undefined) {
      b.tokens = Math.min(this.#size, b.tokens + 1)
    }
  }
}

/** Relayed circuits `conn`'s peer has open through us: each is one inbound hop stream. */
function hopStreams(conn: Connection): number {
  return conn.streams.filter((s) => s.protocol === RELAY_HOP_PROTOCOL && s.direction === 'inbound').length
}

export function relayGater(
  peers: AuthorizedPeers,
  state: RelayGaterState,
  options: RelayGaterOptions,
): ConnectionGater {
  const limits = options.strangers
  const refuse = (what: RefusalWhat, peer: string, reason: string): true => {
    options.onRefusal?.(what, peer, reason)
    return true
  }
  const isMember = (id: string): boolean => !options.enabled || peers.has(id)
  const pending = new PendingSlots({ perKey: limits.maxPendingPerIp, timeoutMs: options.handshakeTimeoutMs })
  const slots = new WeakMap<MultiaddrConnection, PendingSlot>()
  const circuitRate = new RateLimit(limits.circuitsPerMinutePerIp, 60_000)
  const connectionRate = new RateLimit(CONNECTIONS_PER_SECOND_PER_IP, 1_000)
  const strangersFrom = (ip: string, except: string): Connection[] =>
    state
      .connections()
      .filter(
        (c) =>
          c.status === 'open' &&
          ipOfAddr(c.remoteAddr) === ip &&
          c.remotePeer.toString() !== except &&
          !isMember(c.remotePeer.toString()),
      )

  return {
    denyInboundConnection: (maConn) => {
      const ip = ipOfAddr(maConn.remoteAddr)
      if (ip === undefined) {
        return false
      }
      if (!connectionRate.take(ip)) {
        return refuse('connection', ip, `too many new connections from ${ip} per second`)
      }
      const slot = pending.take(ip)
      if (slot === undefined) {
        connectionRate.giveBack(ip)
        return refuse('connection', ip, `too many pending handshakes from ${ip}`)
      }
      slots.set(maConn, slot)
      maConn.addEventListener('close', () => slot.release(), { once: true })
      return false
    },
    denyInboundEncryptedConnection: (peer, maConn) => {
      slots.get(maConn)?.release()
      const id = peer.toString()
      const ip = ipOfAddr(maConn.remoteAddr)
      if (isMember(id)) {
        if (ip !== undefined) {
          connectionRate.giveBack(ip)
        }
        return false
      }
      if (ip !== undefined && strangersFrom(ip, id).length >= limits.maxConnectionsPerIp) {
        return refuse('connection', id, `too many connections of unknown peers from ${ip}`)
      }
      return false
    },
    denyInboundRelayReservation: (source) => {
      const id = source.toString()
      const authorized = isMember(id)
      options.onDecision?.(id, authorized ? 'allow' : 'deny', 'relay-reservation')
      if (!authorized) {
        return refuse('reservation', id, 'not in relay_authorized_keys')
      }
      const ip = state.ipOf(source)
      if (ip !== undefined) {
        const sameIp = state.reservedPeers().filter((r) => r.ip === ip && r.peer !== id).length
        if (sameIp >= options.maxReservationsPerIp) {
          return refuse('reservation', id, `too many reservations from ${ip}`)
        }
      }
      return false
    },
    denyOutboundRelayedConnection: (source, destination) => {
      const src = source.toString()
      const dst = destination.toString()
      if (options.enabled && !peers.has(dst)) {
        return refuse('circuit', src, `destination ${dst} is not authorized on this relay`)
      }
      if (state.openCircuits() >= options.maxCircuits) {
        return refuse('circuit', src, 'too many relayed connections')
      }
      if (isMember(src)) {
        return false
      }
      // A stranger: bounded first by what is cheap to check, then by what it holds.
      const ip = state.ipOf(source)
      if (ip !== undefined && !circuitRate.take(ip)) {
        return refuse('circuit', src, `too many circuit requests of unknown peers from ${ip}`)
      }
      const own = state
        .connections()
        .filter((c) => c.remotePeer.toString() === src)
        .reduce((n, c) => n + hopStreams(c), 0)
      // The hop stream asking now is one of them.
      if (own > CIRCUITS_PER_STRANGER) {
        return refuse('circuit', src, 'too many circuits of this unknown peer at once')
      }
      if (ip !== undefined) {
        const fromIp = strangersFrom(ip, src).reduce((n, c) => n + hopStreams(c), own)
        if (fromIp > limits.maxCircuitsPerIp) {
          return refuse('circuit', src, `too many circuits of unknown peers from ${ip}`)
        }
      }
      if (!state.admitStranger(dst, src)) {
        options.onDecision?.(src, 'deny', 'relay-circuit')
        return refuse(
          'circuit',
          src,
          `destination ${dst} has no invite open (unknown peers may only reach a member that is pairing)`,
        )
      }
      return false
    },
  }
}
