/**
 * Protocol ids and defaults of the peerup network.
 *
 * @packageDocumentation
 */

/** The DHT protocol of a private network: never the public IPFS DHT (ADR-003). */
export function dhtProtocol(network: string): string {
  return network === '' ? '/peerup/kad/1.0.0' : `/peerup/${network}/kad/1.0.0`
}

/** The protocol a service is offered on. */
export function serviceProtocolId(service: string): string {
  return `/peerup/${service}/1.0.0`
}

/** The ping protocol peerup uses (libp2p's, so any libp2p node answers). */
export const PING_PROTOCOL = '/ipfs/ping/1.0.0'

/** Identify user agent prefix of nodes. */
export const NODE_AGENT = 'peerup'

/** Identify user agent prefix of relays. */
export const RELAY_AGENT = 'relay-server'

/** How often the reservation supervisor checks relays when nothing else wakes it. */
export const SUPERVISOR_TICK_MS = 5_000

/** Timeout of one dial of a relay by the supervisor. */
export const RELAY_DIAL_TIMEOUT_MS = 10_000

/** Timeout of reaching a peer (DHT lookup raced against relay circuits). */
export const REACH_TIMEOUT_MS = 20_000

/** Peerstore tag that keeps relay connections open. */
export const RELAY_KEEP_ALIVE_TAG = 'keep-alive-peerup-relay'

/** The circuit relay v2 stop protocol: one outbound stop stream on the relay is one relayed circuit. */
export const RELAY_STOP_PROTOCOL = '/libp2p/circuit/relay/0.2.0/stop'

/** The circuit relay v2 hop protocol: a peer asks the relay for a reservation or a circuit on it. */
export const RELAY_HOP_PROTOCOL = '/libp2p/circuit/relay/0.2.0/hop'
