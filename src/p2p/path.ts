/**
 * Classifying how a connection reaches its peer: `DIRECT` (TCP, or WebRTC across NATs) or
 * `RELAYED` through a named relay.
 *
 * @packageDocumentation
 */

import type { Connection } from '@libp2p/interface'
import type { ApiPath } from '../api/index.ts'

/** A connection's path, as `ping`, `traceroute` and the daemon report it: the contract's own type. */
export type PathInfo = ApiPath

export function classifyConnection(conn: Connection): PathInfo {
  const components = conn.remoteAddr.getComponents()
  const circuit = components.findIndex((c) => c.name === 'p2p-circuit')
  // A WebRTC connection keeps the circuit it was signalled through in its address
  // (`<relay>/p2p-circuit/webrtc/p2p/<peer>`) although its bytes go straight over UDP.
  const webrtc = components.some((c, i) => c.name === 'webrtc' && i > circuit)
  const relayed = circuit >= 0 && !webrtc
  // The relay: the last peer id before the circuit.
  const relay = relayed ? components.slice(0, circuit).findLast((c) => c.name === 'p2p')?.value : undefined
  const transport = webrtc
    ? 'webrtc'
    : components.some((c) => c.name === 'ws' || c.name === 'wss')
      ? 'ws'
      : components.some((c) => c.name === 'tcp')
        ? 'tcp'
        : (components.find((c) => c.name !== 'p2p')?.name ?? 'unknown')
  return {
    type: relayed ? 'RELAYED' : 'DIRECT',
    relay,
    transport,
    remoteAddr: conn.remoteAddr.toString(),
    limited: conn.limits !== undefined,
  }
}

export { describePath, shortId } from '../api/text.ts'

/** The path of the connection `connection()` gives at each call; undefined while there is none. */
export function pathOver(connection: () => Connection | undefined): () => PathInfo | undefined {
  return () => {
    const c = connection()
    return c === undefined ? undefined : classifyConnection(c)
  }
}

/** Whether two paths are the same for people: same type, transport, relay and limit. */
export function samePath(a: PathInfo | undefined, b: PathInfo | undefined): boolean {
  if (a === undefined || b === undefined) {
    return a === b
  }
  return a.type === b.type && a.transport === b.transport && a.relay === b.relay && a.limited === b.limited
}

/**
 * Picks the best open connection: direct before relayed, and among direct ones TCP (a LAN, or a
 * public address) before WebRTC, which carries less (ADR 0002); unlimited before limited. Ties go
 * to the older connection, so new streams do not hop between equal connections.
 */
export function bestConnection(conns: Connection[]): Connection | undefined {
  const open = conns.filter((c) => c.status === 'open')
  const score = (c: Connection): number => {
    const p = classifyConnection(c)
    return (
      (p.type === 'DIRECT' ? 4 : 0) +
      (p.type === 'DIRECT' && p.transport !== 'webrtc' ? 2 : 0) +
      (p.limited ? 0 : 1)
    )
  }
  return open.sort((a, b) => score(b) - score(a) || a.timeline.open - b.timeline.open)[0]
}
