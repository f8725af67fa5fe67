/**
 * Members-only DHT and identify (src/p2p/members-only.ts), on real libp2p nodes built from
 * `baseLibp2pOptions` on 127.0.0.1: a DHT server like the relay, two members (NAT'd nodes: DHT
 * clients, and one DHT server to show who does enter the routing table), and a stranger built
 * with stock options, a DHT server so that its identify advertises the kad protocol.
 */

import assert from 'node:assert/strict'
import type { TestContext } from 'node:test'
import { test } from 'node:test'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { Connection, IdentifyResult, PeerId } from '@libp2p/interface'
import type { QueryEvent } from '@libp2p/kad-dht'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { lpStream } from '@libp2p/utils'
import { createLibp2p } from 'libp2p'
import { dhtProtocol, PING_PROTOCOL } from '../../../src/p2p/constants.ts'
import {
  IDENTIFY_PROTOCOL,
  type Members,
  type MembersOnlyRefusal,
  STRANGER_PROTOCOLS,
} from '../../../src/p2p/members-only.ts'
import { baseLibp2pOptions, type PeerupLibp2p } from '../../../src/p2p/node.ts'

const DHT = dhtProtocol('')
const INVITE = '/peerup/invite/1.0.0'
const ADMIN = '/peerup/relay-admin/1.0.0'

interface Refusal {
  peer: string
  what: MembersOnlyRefusal
}

/** A member set that can be swapped, as AuthorizedPeers is, and records refusals. */
class TestMembers implements Members {
  ids = new Set<string>()
  refusals: Refusal[] = []
  #waiters: Array<{ match: (r: Refusal) => boolean; resolve: () => void }> = []

  isMember = (peerId: string): boolean => this.ids.has(peerId)

  onRefused = (peer: string, what: MembersOnlyRefusal): void => {
    const r = { peer, what }
    this.refusals.push(r)
    this.#waiters = this.#waiters.filter((w) => {
      if (w.match(r)) {
        w.resolve()
        return false
      }
      return true
    })
  }

  /** Resolves on the first refusal of `what` to `peer`, past or future. */
  refused(peer: PeerId, what: MembersOnlyRefusal): Promise<void> {
    const match = (r: Refusal) => r.peer === peer.toString() && r.what === what
    if (this.refusals.some(match)) {
      return Promise.resolve()
    }
    const { promise, resolve } = Promise.withResolvers<void>()
    this.#waiters.push({ match, resolve })
    return promise
  }
}

async function startNode(
  t: TestContext,
  options: { agent: string; dhtServer: boolean; members?: Members; listen?: string[] },
): Promise<PeerupLibp2p> {
  const privateKey = await generateKeyPair('Ed25519')
  const node = await createLibp2p(
    baseLibp2pOptions({
      privateKey,
      listen: options.listen ?? ['/ip4/127.0.0.1/tcp/0'],
      network: '',
      gater: {},
      agent: options.agent,
      dhtServer: options.dhtServer,
      ...(options.members === undefined ? {} : { members: options.members }),
    }),
  )
  t.after(() => node.stop())
  assert.equal(node.peerId.toString(), peerIdFromPrivateKey(privateKey).toString())
  return node
}

/** The server (a relay: DHT server, members = relay_authorized_keys) and the three others. */
async function startMesh(t: TestContext) {
  const serverMembers = new TestMembers()
  // Two listen addresses: one a peer dials, one it can only learn from identify.
  const server = await startNode(t, {
    agent: 'relay-server/0.1.0',
    dhtServer: true,
    members: serverMembers,
    listen: ['/ip4/127.0.0.1/tcp/0', '/ip4/127.0.0.1/tcp/0'],
  })
  // As on a relay: the pairing protocol (strangers may use it) and the admin one (they may not).
  await server.handle(INVITE, (s) => s.abort(new Error('test')), { runOnLimitedConnection: true })
  await server.handle(ADMIN, (s) => s.abort(new Error('test')))
  // A node's members: its authorized peers and its relays.
  const nodeMembers = new TestMembers()
  nodeMembers.ids.add(server.peerId.toString())
  const a = await startNode(t, { agent: 'peerup/0.1.0', dhtServer: false, members: nodeMembers })
  const b = await startNode(t, { agent: 'peerup/0.1.0', dhtServer: true, members: nodeMembers })
  serverMembers.ids.add(a.peerId.toString()).add(b.peerId.toString())
  nodeMembers.ids.add(a.peerId.toString()).add(b.peerId.toString())
  const stranger = await startNode(t, { agent: 'peerup/0.1.0', dhtServer: true })
  return { server, serverMembers, a, b, nodeMembers, stranger }
}

/** The identify result `node` gets from `peer`, once identify on the connection has run. */
function identifiedBy(node: PeerupLibp2p, peer: PeerId): Promise<IdentifyResult> {
  const { promise, resolve } = Promise.withResolvers<IdentifyResult>()
  const listener = (e: CustomEvent<IdentifyResult>) => {
    if (e.detail.peerId.equals(peer)) {
      node.removeEventListener('peer:identify', listener)
      resolve(e.detail)
    }
  }
  node.addEventListener('peer:identify', listener)
  return promise
}

/** Dials `to` from `from` and waits until `from` has identified it. */
async function connect(
  from: PeerupLibp2p,
  to: PeerupLibp2p,
): Promise<{ conn: Connection; id: IdentifyResult }> {
  const identified = identifiedBy(from, to.peerId)
  const conn = await from.dial(to.getMultiaddrs(), { signal: AbortSignal.timeout(10_000) })
  return { conn, id: await identified }
}

/** kad-dht's routing table, which its public type does not show. */
interface Table {
  find(peer: PeerId): Promise<PeerId | undefined>
  add(peer: PeerId): Promise<void>
  addEventListener(type: 'peer:add', listener: (e: CustomEvent<PeerId>) => void): void
  size: number
}

function tableOf(node: PeerupLibp2p): Table {
  return (node.services.dht as unknown as { routingTable: Table }).routingTable
}

function added(node: PeerupLibp2p, peer: PeerId): Promise<void> {
  const table = tableOf(node)
  const { promise, resolve } = Promise.withResolvers<void>()
  table.addEventListener('peer:add', (e) => {
    if (e.detail.equals(peer)) {
      resolve()
    }
  })
  table.find(peer).then(
    (p) => p !== undefined && resolve(),
    () => {},
  )
  return promise
}

/** A FIND_NODE for `key` (kad-dht's protobuf: 1 type = 4, 2 key) and the raw answer. */
async function rawFindNode(conn: Connection, key: PeerId): Promise<Uint8Array> {
  const stream = await conn.newStream(DHT, { signal: AbortSignal.timeout(5_000) })
  const lp = lpStream(stream)
  const k = key.toMultihash().bytes
  await lp.write(Uint8Array.from([0x08, 4, 0x12, k.byteLength, ...k]), { signal: AbortSignal.timeout(5_000) })
  const answer = await lp.read({ signal: AbortSignal.timeout(5_000) })
  await stream.close().catch(() => {})
  return answer.subarray()
}

function contains(haystack: Uint8Array, needle: Uint8Array): boolean {
  return Buffer.from(haystack).includes(Buffer.from(needle))
}

test("a stranger's FIND_NODE is refused; a member's gets the member, and the set is asked each time", {
  timeout: 30_000,
}, async (t) => {
  const { server, serverMembers, a, b, stranger } = await startMesh(t)
  await connect(a, server)
  const { conn: memberConn } = await connect(b, server)
  const { conn: strangerConn } = await connect(stranger, server)

  const answer = await rawFindNode(memberConn, a.peerId)
  assert.ok(contains(answer, a.peerId.toMultihash().bytes), 'the member learns the other member')
  assert.ok(contains(answer, a.getMultiaddrs()[0]?.decapsulate('/p2p').bytes ?? new Uint8Array([0xff])))

  await assert.rejects(rawFindNode(strangerConn, a.peerId))
  await serverMembers.refused(stranger.peerId, 'dht')

  // Hot reload: the same connection, now a member, is answered.
  serverMembers.ids = new Set([...serverMembers.ids, stranger.peerId.toString()])
  const later = await rawFindNode(strangerConn, a.peerId)
  assert.ok(contains(later, a.peerId.toMultihash().bytes))
})

test("a stranger's findPeer and getClosestPeers through the server get nothing of a member", {
  timeout: 30_000,
}, async (t) => {
  const { server, serverMembers, a, stranger } = await startMesh(t)
  await connect(a, server)
  await connect(stranger, server)
  // The reduced identify does not list kad, so the stranger's DHT would not even know the server
  // is one: put it in the stranger's table by hand, as a stranger who knows the relay would.
  await tableOf(stranger).add(server.peerId)

  await assert.rejects(stranger.peerRouting.findPeer(a.peerId, { signal: AbortSignal.timeout(10_000) }))
  await serverMembers.refused(stranger.peerId, 'dht')

  const seen: QueryEvent[] = []
  try {
    for await (const e of stranger.services.dht.getClosestPeers(a.peerId.toMultihash().bytes, {
      signal: AbortSignal.timeout(10_000),
    })) {
      seen.push(e)
    }
  } catch {
    // A failed query is as good as an empty one here.
  }
  const named = seen.flatMap((e) =>
    e.name === 'PEER_RESPONSE' ? e.closer.map((p) => p.id) : e.name === 'FINAL_PEER' ? [e.peer.id] : [],
  )
  assert.ok(!named.some((id) => id.equals(a.peerId)), 'the member is never named to the stranger')
  assert.ok(
    seen.every((e) => e.name !== 'PEER_RESPONSE'),
    'the server never answered',
  )
})

test('a stranger advertising kad never enters the routing table; a member DHT server does', {
  timeout: 30_000,
}, async (t) => {
  const { server, serverMembers, a, b, stranger } = await startMesh(t)
  const bAdded = added(server, b.peerId)
  await connect(b, server)
  await bAdded

  const { id } = await connect(server, stranger)
  assert.ok(id.protocols.includes(DHT), 'the stranger does advertise the DHT')
  await serverMembers.refused(stranger.peerId, 'routing-table')
  assert.equal(await tableOf(server).find(stranger.peerId), undefined)
  // The other ways in (peers that answered one of our queries, the peer store at start) all call
  // the table's add(), which refuses too.
  const before = serverMembers.refusals.length
  await tableOf(server).add(stranger.peerId)
  assert.equal(await tableOf(server).find(stranger.peerId), undefined)
  assert.deepEqual(serverMembers.refusals.slice(before), [
    { peer: stranger.peerId.toString(), what: 'routing-table' },
  ])

  // Nor is it named to a member asking for it (the server does know its addresses).
  const { conn } = await connect(a, server)
  const answer = await rawFindNode(conn, stranger.peerId)
  assert.ok(!contains(answer, stranger.peerId.toMultihash().bytes))
})

test('two members find each other through the server, with their direct addresses', {
  timeout: 30_000,
}, async (t) => {
  const { server, a, b } = await startMesh(t)
  await connect(b, server)
  const serverAdded = added(a, server.peerId)
  await connect(a, server)
  await serverAdded
  assert.equal(a.getConnections(b.peerId).length, 0)
  const found = await a.peerRouting.findPeer(b.peerId, { signal: AbortSignal.timeout(10_000) })
  const want = b.getMultiaddrs().map((m) => m.decapsulate('/p2p').toString())
  assert.ok(
    found.multiaddrs.some((m) => want.includes(m.toString())),
    `found ${found.multiaddrs.map(String).join(', ')}, want one of ${want.join(', ')}`,
  )
})

test('identify: a stranger sees no version, no DHT or admin protocol, no addresses; a member sees all', {
  timeout: 30_000,
}, async (t) => {
  const { server, a, stranger } = await startMesh(t)
  const { id: theirs } = await connect(stranger, server)
  assert.equal(theirs.agentVersion, 'relay-server')
  assert.deepEqual(theirs.listenAddrs, [])
  assert.equal(theirs.signedPeerRecord, undefined)
  assert.ok(theirs.observedAddr !== undefined, 'the observed address stays')
  assert.deepEqual([...theirs.protocols].sort(), [IDENTIFY_PROTOCOL, PING_PROTOCOL, INVITE].sort())
  assert.ok(theirs.protocols.every((p) => STRANGER_PROTOCOLS.includes(p)))
  // The stranger's peer store holds the address it dialled, not the other one.
  const stored = await stranger.peerStore.get(server.peerId)
  const dialled = server.getMultiaddrs()[0]?.decapsulate('/p2p').toString()
  assert.deepEqual(
    stored.addresses.map((a) => a.multiaddr.toString()),
    [dialled],
  )
  assert.ok(!stored.protocols.includes(DHT))

  const { id: ours } = await connect(a, server)
  assert.equal(ours.agentVersion, 'relay-server/0.1.0')
  assert.ok(ours.protocols.includes(DHT) && ours.protocols.includes(ADMIN))
  assert.equal(ours.listenAddrs.length, 2)
  assert.ok(ours.signedPeerRecord !== undefined)

  // A node answers a stranger the same way: agent without version, nothing it does not handle.
  const { id: node } = await connect(stranger, a)
  assert.equal(node.agentVersion, 'peerup')
  assert.deepEqual([...node.protocols].sort(), [IDENTIFY_PROTOCOL, PING_PROTOCOL].sort())
  assert.deepEqual(node.listenAddrs, [])

  // Nothing is pushed to anyone: no identify-push runs.
  assert.ok(!server.getProtocols().some((p) => p.startsWith('/ipfs/id/push/')))
  assert.ok(!Object.keys(server.services).some((name) => /push/i.test(name)))
})
