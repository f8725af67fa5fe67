/**
 * Where a relay's multiaddr leads, for the STUN servers a node gives ICE (src/p2p/node.ts) and the
 * TCP and STUN probes of `peerup doctor`. A module of its own, away from src/util/address.ts, which
 * the relay's STUN responder imports: in the one process of test/unit/relay/stun.test.ts that runs
 * both the responder and an ICE agent (libdatachannel), importing @multiformats/multiaddr before
 * them is enough for the agent to never take the responder's answer (same bytes on the wire; cause
 * not found). Across processes, as relays and daemons run, ICE works (test/e2e/direct.test.ts).
 *
 * @packageDocumentation
 */

import { multiaddr } from '@multiformats/multiaddr'

/** The host and TCP port a multiaddr dials (`/ip4/…/tcp/7777/p2p/…`, `/dns4/…/tcp/443/ws/…`). */
export interface MultiaddrTarget {
  host: string
  /** 4 or 6 for an IP address; undefined for a DNS name (`dns` resolves either way). */
  family: 4 | 6 | undefined
  /** The TCP port, when the address has one. */
  tcpPort: number | undefined
}

/** Where a multiaddr leads, or undefined when it starts with neither an IP address nor a DNS name. */
export function multiaddrTarget(address: string): MultiaddrTarget | undefined {
  const parts = multiaddr(address).getComponents()
  const first = parts[0]
  if (first?.value === undefined) {
    return undefined
  }
  const family = first.name === 'ip4' ? 4 : first.name === 'ip6' ? 6 : undefined
  if (family === undefined && !['dns', 'dns4', 'dns6'].includes(first.name)) {
    return undefined
  }
  const tcp = parts.find((p) => p.name === 'tcp')?.value
  return { host: first.value, family, tcpPort: tcp === undefined ? undefined : Number(tcp) }
}
