/**
 * The relay's gater: who may hold a reservation, and which relayed connections are opened.
 * Any peer may connect to the relay (an unknown peer needs a limited circuit to pair), but only
 * peers in relay_authorized_keys may be reached through it.
 *
 * @packageDocumentation
 */

import type { ConnectionGater, PeerId } from '@libp2p/interface'
import type { AuthDecisionCallback, AuthorizedPeers } from '../auth/gater.ts'

/** What the relay gater needs to know about the relay's live state. */
export interface RelayGaterState {
  /** The IP address the peer is connected from, if connected directly. */
  ipOf(peer: PeerId): string | undefined
  /** Peers holding a reservation while connected, with their IP. */
  reservedPeers(): Array<{ peer: string; ip: string | undefined }>
  /** Relayed circuits open right now. */
  openCircuits(): number
}

/** Options of {@link relayGater}. */
export interface RelayGaterOptions {
  enabled: boolean
  maxReservationsPerIp: number
  maxCircuits: number
  onDecision?: AuthDecisionCallback
  onRefusal?: (what: 'reservation' | 'circuit', peer: string, reason: string) => void
}

/** The connection gater of a relay. */
export function relayGater(
  peers: AuthorizedPeers,
  state: RelayGaterState,
  options: RelayGaterOptions,
): ConnectionGater {
  const refuse = (what: 'reservation' | 'circuit', peer: string, reason: string): true => {
    options.onRefusal?.(what, peer, reason)
    return true
  }
  return {
    denyInboundRelayReservation: (source) => {
      const id = source.toString()
      const authorized = !options.enabled || peers.has(id)
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
      const dst = destination.toString()
      if (options.enabled && !peers.has(dst)) {
        return refuse('circuit', source.toString(), `destination ${dst} is not authorized on this relay`)
      }
      if (state.openCircuits() >= options.maxCircuits) {
        return refuse('circuit', source.toString(), 'too many relayed connections')
      }
      return false
    },
  }
}
