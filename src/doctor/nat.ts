/**
 * This node's NAT, measured the way RFC 5780 §4.3 does: Binding requests from ONE local UDP socket
 * to two different STUN endpoints (two relays, or one relay's two ports), and the public ports the
 * NAT gave that socket towards each compared. The same port both ways is an endpoint-independent
 * mapping (a cone: a TCP punch or WebRTC can work from here); two different ports an
 * endpoint-dependent one (symmetric: a direct path is unlikely and traffic stays on the relay); no
 * answer at all, UDP blocked (docs/decisions/0012-doctor-nat-and-clock.md).
 *
 * @packageDocumentation
 */

import * as dgram from 'node:dgram'
import { once } from 'node:events'
import * as os from 'node:os'
import { type BindingAnswer, stunBinding, type TransportAddress } from '../util/stun.ts'

/** How this node's NAT maps one local socket towards different destinations. */
export type NatMapping =
  /** The same public port towards every destination: a cone (TCP punch and WebRTC can work). */
  | 'endpoint-independent'
  /** A new public port for each destination: symmetric (direct paths unlikely). */
  | 'endpoint-dependent'
  /** No STUN endpoint answered: UDP is blocked on the way (or every responder is down). */
  | 'udp-blocked'
  /** Only one endpoint answered and it names no second one: nothing to compare with. */
  | 'unknown'

/** One STUN endpoint asked, and what it said. */
export interface NatProbe {
  /** Where the request went, `host:port`. */
  endpoint: string
  /** The relay it belongs to (its multiaddr). */
  relay: string
  /** The second port of a relay, found in its first answer's OTHER-ADDRESS. */
  alternate: boolean
  answer?: BindingAnswer
}

/** What {@link measureNat} found. */
export interface NatReport {
  mapping: NatMapping
  /** False when the mapped address is one of this machine's own (no NAT at all); undefined when unknown. */
  behindNat: boolean | undefined
  /** The local UDP port every request left from. */
  localPort: number
  probes: NatProbe[]
}

/** A relay's STUN responder to ask: its multiaddr and the UDP endpoint. */
export interface StunTarget {
  relay: string
  address: TransportAddress
}

/** The unspecified addresses an OTHER-ADDRESS may carry: "the host you already asked". */
const UNSPECIFIED = new Set(['0.0.0.0', '::', '0:0:0:0:0:0:0:0'])

/**
 * Compares the mappings the answered probes saw (in order, the first two that answered): pure,
 * so the rule is tested on its own.
 */
export function classifyMapping(probes: readonly NatProbe[]): NatMapping {
  const answered = probes.filter((p) => p.answer !== undefined)
  const [first, second] = answered
  if (first?.answer === undefined) {
    return 'udp-blocked'
  }
  if (second?.answer === undefined) {
    return 'unknown'
  }
  const same =
    first.answer.mapped.port === second.answer.mapped.port &&
    first.answer.mapped.address === second.answer.mapped.address
  return same ? 'endpoint-independent' : 'endpoint-dependent'
}

/** Whether `address` is one of this machine's own (then there is no NAT between it and the relay). */
function isOwnAddress(address: string): boolean {
  return Object.values(os.networkInterfaces())
    .flat()
    .some((i) => i?.address === address)
}

/**
 * Measures the mapping with one UDP socket (see the module doc): every relay's responder at once,
 * then, when fewer than two answered, the second port the first answer names (OTHER-ADDRESS).
 * Only IPv4 targets are asked: the NATs this is about are IPv4's.
 */
export async function measureNat(
  targets: readonly StunTarget[],
  options: { timeoutMs?: number; signal?: AbortSignal } = {},
): Promise<NatReport> {
  const socket = dgram.createSocket('udp4')
  // A late ICMP error must not crash the process; the probes settle by their timers.
  socket.on('error', () => {})
  socket.bind(0)
  await once(socket, 'listening')
  try {
    const localPort = socket.address().port
    const seen = new Set<string>()
    const probes: NatProbe[] = []
    const ask = async (relay: string, address: TransportAddress, alternate: boolean): Promise<void> => {
      const endpoint = `${address.address}:${address.port}`
      if (seen.has(endpoint)) {
        return
      }
      seen.add(endpoint)
      const probe: NatProbe = { endpoint, relay, alternate }
      probes.push(probe)
      const answer = await stunBinding(socket, address, options)
      if (answer !== undefined) {
        probe.answer = answer
      }
    }
    await Promise.all(targets.map((t) => ask(t.relay, t.address, false)))
    const answered = probes.filter((p) => p.answer !== undefined)
    const first = answered[0]
    const other = first?.answer?.other
    if (answered.length < 2 && first !== undefined && other !== undefined) {
      const host = UNSPECIFIED.has(other.address) ? (first.endpoint.split(':')[0] ?? '') : other.address
      await ask(first.relay, { address: host, port: other.port }, true)
    }
    const mapped = answered[0]?.answer?.mapped
    return {
      mapping: classifyMapping(probes),
      behindNat:
        mapped === undefined ? undefined : !(isOwnAddress(mapped.address) && mapped.port === localPort),
      localPort,
      probes,
    }
  } finally {
    socket.close()
  }
}
