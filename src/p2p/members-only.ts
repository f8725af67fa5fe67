/**
 * Members-only DHT and identify. A peer that is not a member (not in relay_authorized_keys on a
 * relay; not in authorized_keys, nor a relay, on a node) may still connect where the gater lets it
 * (a joiner pairing over a limited circuit, an unknown peer asking a relay for a small circuit),
 * but the security review showed what stock libp2p then gives it: the DHT answers its FIND_NODE
 * with every member's direct addresses, it joins the routing table just by listing the kad
 * protocol in identify (and is then handed to members as a closer peer), and identify tells it
 * our exact version, every protocol and every listen address.
 *
 * The two services are wrapped where they are built, through their components and public init
 * options, not patched:
 *
 * - The DHT sees a registrar whose `handle()` wraps its protocol handler (so the wrapper survives
 *   kad-dht's `setMode()`, which unhandles and handles again) and whose `register()` wraps its
 *   topology (identify listing kad is how a stranger entered the routing table). Its routing table's
 *   `add()`, the one place every path into the table goes through (topology, peers seen in
 *   answers, peers that answered our queries, the peer store at start), admits members only. Its
 *   `peerInfoMapper` drops non-members, so no answer (FIND_NODE closer peers, GET_PROVIDERS) ever
 *   names one, even one still in the table after its key was revoked.
 * - Identify answers non-members itself with a reduced record: the agent without its version,
 *   only the protocols a stranger may use ({@link STRANGER_PROTOCOLS} that are handled here), no
 *   listen addresses and no signed peer record (it would carry them), but the observed address.
 *   Members get the stock answer. No identify-push service runs (see `baseLibp2pOptions`), so
 *   nothing is pushed to anyone.
 *
 * Membership is asked at every decision, never cached: the member set is hot-reloaded by swapping
 * a Set. libp2p's stream middleware (`libp2p.use()`) would have been the obvious hook for the
 * stream handlers, but in libp2p 3.3 it appends the handler to the registered middleware array on
 * every inbound stream, so the Nth stream runs the handler N times (libp2p/js-libp2p#3534, open).
 *
 * @packageDocumentation
 */

import { publicKeyToProtobuf } from '@libp2p/crypto/keys'
import { type Identify, type IdentifyComponents, identify } from '@libp2p/identify'
import type { AbortOptions, Connection, PeerId, Stream, StreamHandler, Topology } from '@libp2p/interface'
import { type KadDHT, type KadDHTComponents, kadDHT, type PeerInfoMapper } from '@libp2p/kad-dht'
import { varint as multiformatsVarint } from 'multiformats'
import { PING_PROTOCOL, RELAY_HOP_PROTOCOL } from './constants.ts'

/** What was refused to a non-member: its DHT stream, or a place in the DHT routing table. */
export type MembersOnlyRefusal = 'dht' | 'routing-table'

/** Who the members are, asked at every decision (the set is hot-reloaded). */
export interface Members {
  /** Whether `peerId` is a member now. */
  isMember(peerId: string): boolean
  /** Called for each refusal, for audit logs and metrics. */
  onRefused?(peerId: string, what: MembersOnlyRefusal): void
}

/** The identify protocol (libp2p's default prefix). */
export const IDENTIFY_PROTOCOL = '/ipfs/id/1.0.0'

/** The pairing exchange (src/invite/protocol.ts, not imported: this module stays below src/invite). */
const INVITE_PROTOCOL = '/peerup/invite/1.0.0'

/**
 * The protocols identify lists to a non-member, where they are handled: identify itself, ping (the
 * connection monitor pings every connection), hop on a relay (a joiner reaches the inviter through
 * a limited circuit) and the pairing exchange (`/peerup/invite/1.0.0`, on an inviting node and on a
 * relay). Not the DHT, not relay-admin, not services, not stop (only relays, members of their
 * nodes, open stop streams), not WebRTC signalling (a direct path is for members).
 */
export const STRANGER_PROTOCOLS: readonly string[] = [
  IDENTIFY_PROTOCOL,
  PING_PROTOCOL,
  RELAY_HOP_PROTOCOL,
  INVITE_PROTOCOL,
]

/** A DHT error a non-member's stream is aborted with. */
export class NotAMemberError extends Error {
  override name = 'NotAMemberError'
}

/**
 * A kad-dht service (as `kadDHT(init)`) that serves members only: non-members' DHT streams are
 * aborted, non-members never enter the routing table and are never named in an answer.
 */
export function membersOnlyKadDHT(
  init: NonNullable<Parameters<typeof kadDHT>[0]> & { protocol: string },
  members: Members,
): (components: KadDHTComponents) => KadDHT {
  const protocol = init.protocol
  return (components) => {
    const self = components.peerId
    const mapper: PeerInfoMapper = init.peerInfoMapper ?? ((p) => p)
    const registrar = components.registrar
    const guarded = overriding(components, {
      registrar: overriding(registrar, {
        handle: (p: string, handler: StreamHandler, options?: Parameters<typeof registrar.handle>[2]) =>
          registrar.handle(p, p === protocol ? refusingHandler(handler, members) : handler, options),
        register: (p: string, topology: Topology, options?: AbortOptions) =>
          registrar.register(p, p === protocol ? refusingTopology(topology, members) : topology, options),
      }),
    })
    const dht = kadDHT({
      ...init,
      // FIND_NODE and GET_PROVIDERS answers drop peers the mapper leaves without addresses, and so
      // does the routing table's intake of peers seen in answers. Our own entry (FIND_NODE for our
      // id) is not a "member" but is ours to give.
      peerInfoMapper: (peer) =>
        peer.id.equals(self) || members.isMember(peer.id.toString())
          ? mapper(peer)
          : { ...peer, multiaddrs: [] },
    })(guarded)
    guardRoutingTable(dht, members)
    return dht
  }
}

/**
 * An identify service (as `identify(init)`) that answers non-members with a reduced record: agent
 * `strangerAgent`, the handled {@link STRANGER_PROTOCOLS}, no listen addresses, no signed peer record.
 */
export function membersOnlyIdentify(
  // No protocolPrefix: the wrapper recognises the identify handler by its default protocol id.
  init: Omit<NonNullable<Parameters<typeof identify>[0]>, 'protocolPrefix'>,
  members: Members,
  /** The user agent a stranger sees: ours without the version (`peerup`, `relay-server`). */
  strangerAgent: string,
): (components: IdentifyComponents) => Identify {
  const allowed = new Set(STRANGER_PROTOCOLS)
  return (components) => {
    const registrar = components.registrar
    const reduced: StreamHandler = (stream, connection) =>
      answerStranger(stream, connection, {
        agent: strangerAgent,
        publicKey: publicKeyToProtobuf(components.privateKey.publicKey),
        protocols: registrar.getProtocols().filter((p) => allowed.has(p)),
        timeoutMs: init.timeout ?? 5_000,
      })
    const guarded = overriding(components, {
      registrar: overriding(registrar, {
        handle: (p: string, handler: StreamHandler, opts?: Parameters<typeof registrar.handle>[2]) =>
          registrar.handle(
            p,
            p === IDENTIFY_PROTOCOL
              ? (stream: Stream, connection: Connection) =>
                  members.isMember(connection.remotePeer.toString())
                    ? handler(stream, connection)
                    : reduced(stream, connection)
              : handler,
            opts,
          ),
      }),
    })
    return identify(init)(guarded)
  }
}

// ---- DHT ----

/**
 * `target` with some properties replaced; everything else is read through (methods bound to
 * `target`, so a class instance keeps working). Used on a service's components and registrar.
 */
function overriding<T extends object>(target: T, overrides: Partial<T>): T {
  return new Proxy(target, {
    get: (t, p) => {
      if (Object.hasOwn(overrides, p)) {
        return (overrides as Record<string | symbol, unknown>)[p]
      }
      const v: unknown = Reflect.get(t, p)
      return typeof v === 'function' ? v.bind(t) : v
    },
  })
}

function refusingHandler(handler: StreamHandler, members: Members): StreamHandler {
  return (stream, connection) => {
    const peer = connection.remotePeer
    if (!members.isMember(peer.toString())) {
      members.onRefused?.(peer.toString(), 'dht')
      // Negotiation has already said yes (the protocol list is per node, not per connection):
      // the stranger's request is dropped unread.
      stream.abort(new NotAMemberError('the DHT is for members only'))
      return
    }
    return handler(stream, connection)
  }
}

function refusingTopology(topology: Topology, members: Members): Topology {
  return {
    ...topology,
    onConnect: (peer, connection) => {
      if (!members.isMember(peer.toString())) {
        // Identify listed the kad protocol: stock kad-dht would now add the peer to the table.
        members.onRefused?.(peer.toString(), 'routing-table')
        return
      }
      return topology.onConnect?.(peer, connection)
    },
  }
}

/** The part of kad-dht 16's `KadDHT` class this module relies on (`routingTable.add`). */
interface WithRoutingTable {
  routingTable?: { add?: (peer: PeerId, options?: AbortOptions) => Promise<void> }
}

function guardRoutingTable(dht: KadDHT, members: Members): void {
  const table = (dht as unknown as WithRoutingTable).routingTable
  const add = table?.add
  if (table === undefined || add === undefined) {
    // Fail loudly after an upgrade rather than let strangers into the table unnoticed.
    throw new Error('kad-dht has no routingTable.add(): members-only routing table cannot be enforced')
  }
  // Every path into the k-buckets goes through RoutingTable.add() (kad-dht 16.4.5,
  // dist/src/routing-table/index.js): the topology, peers seen in answers, peers that answered one
  // of our queries (QueryManager: PEER_RESPONSE, not filtered by the mapper) and the peer store at start.
  table.add = async (peer, options) => {
    if (!members.isMember(peer.toString())) {
      members.onRefused?.(peer.toString(), 'routing-table')
      return
    }
    await add.call(table, peer, options)
  }
}

// ---- identify ----

/** Writes the reduced identify message and closes, as the stock handler does with the full one. */
async function answerStranger(
  stream: Stream,
  connection: Connection,
  record: { agent: string; publicKey: Uint8Array; protocols: string[]; timeoutMs: number },
): Promise<void> {
  const signal = AbortSignal.timeout(record.timeoutMs)
  // As the stock handler: the observed address only when it is an IP or DNS address.
  const first = connection.remoteAddr.getComponents()[0]?.name ?? ''
  const observed = ['ip4', 'ip6', 'ip6zone', 'dns', 'dns4', 'dns6', 'dnsaddr'].includes(first)
    ? connection.remoteAddr.bytes
    : undefined
  const message = encodeIdentify({
    protocolVersion: 'ipfs/0.1.0',
    agentVersion: record.agent,
    publicKey: record.publicKey,
    protocols: record.protocols,
    ...(observed === undefined ? {} : { observedAddr: observed }),
  })
  try {
    // Length-prefixed, as every identify message.
    stream.send(Buffer.concat([varint(message.byteLength), message]))
    await stream.close({ signal })
  } catch (err) {
    stream.abort(err as Error)
  }
}

/**
 * The identify protobuf (libp2p identify spec, `@libp2p/identify` pb/message.proto): field 5
 * protocolVersion, 6 agentVersion, 1 publicKey, 4 observedAddr, 3 protocols (repeated); 2
 * listenAddrs and 8 signedPeerRecord are left out. Written by hand because the package does not
 * export its codec; every field is length-delimited (wire type 2).
 */
export function encodeIdentify(m: {
  protocolVersion: string
  agentVersion: string
  publicKey: Uint8Array
  protocols: string[]
  observedAddr?: Uint8Array
}): Uint8Array {
  const text = new TextEncoder()
  const parts: Uint8Array[] = []
  const field = (n: number, bytes: Uint8Array): void => {
    parts.push(varint((n << 3) | 2), varint(bytes.byteLength), bytes)
  }
  field(5, text.encode(m.protocolVersion))
  field(6, text.encode(m.agentVersion))
  field(1, m.publicKey)
  if (m.observedAddr !== undefined) {
    field(4, m.observedAddr)
  }
  for (const p of m.protocols) {
    field(3, text.encode(p))
  }
  return Buffer.concat(parts)
}

function varint(n: number): Uint8Array {
  return multiformatsVarint.encodeTo(n, new Uint8Array(multiformatsVarint.encodingLength(n)))
}
