/**
 * The relay gater's per-IP admission of new connections, before anyone is known: the connection
 * rate and the pending handshakes, each refusal reported, a member's connection given back once it
 * has authenticated (so many members behind one CGNAT address are never throttled by each other).
 */

import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { MultiaddrConnection, PeerId } from '@libp2p/interface'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { AuthorizedPeers } from '../../../src/auth/gater.ts'
import { CONNECTIONS_PER_SECOND_PER_IP, type RefusalWhat, relayGater } from '../../../src/relay/gater.ts'

/** Just what the gater reads of a connection in its handshake: where it comes from, and its close. */
function inbound(ip: string): MultiaddrConnection {
  const target = new EventTarget()
  return Object.assign(target, {
    remoteAddr: multiaddr(`/ip4/${ip}/tcp/4${Math.floor(Math.random() * 1000)}`),
  }) as unknown as MultiaddrConnection
}

async function newPeer(): Promise<PeerId> {
  return peerIdFromPrivateKey(await generateKeyPair('Ed25519'))
}

function gaterWith(members: PeerId[], pendingPerIp = 10_000) {
  const refusals: Array<{ what: RefusalWhat; reason: string }> = []
  const gater = relayGater(
    new AuthorizedPeers(members.map(String)),
    {
      ipOf: () => undefined,
      reservedPeers: () => [],
      openCircuits: () => 0,
      connections: () => [],
      admitStranger: () => false,
    },
    {
      enabled: true,
      maxReservationsPerIp: 8,
      maxCircuits: 100,
      strangers: {
        maxPendingPerIp: pendingPerIp,
        maxConnectionsPerIp: 10_000,
        maxCircuitsPerIp: 4,
        circuitsPerMinutePerIp: 30,
      },
      handshakeTimeoutMs: 10_000,
      onRefusal: (what, _peer, reason) => refusals.push({ what, reason }),
    },
  )
  return { gater, refusals }
}

describe('relay gater: new connections per IP', () => {
  it(`takes ${CONNECTIONS_PER_SECOND_PER_IP} new connections a second from one IP, refuses and reports the next`, async () => {
    const { gater, refusals } = gaterWith([])
    for (let i = 0; i < CONNECTIONS_PER_SECOND_PER_IP; i++) {
      assert.equal(await gater.denyInboundConnection?.(inbound('198.18.0.7')), false, `connection ${i}`)
    }
    assert.equal(await gater.denyInboundConnection?.(inbound('198.18.0.7')), true)
    assert.deepEqual(
      refusals.map((r) => r.what),
      ['connection'],
    )
    assert.match(refusals[0]?.reason ?? '', /too many new connections from 198\.18\.0\.7 per second/)
    // Another IP is not affected.
    assert.equal(await gater.denyInboundConnection?.(inbound('198.18.0.8')), false)
  })

  it('gives a member its connection back once it has authenticated', async () => {
    const member = await newPeer()
    const stranger = await newPeer()
    const { gater, refusals } = gaterWith([member])
    // Many members behind one address, each authenticating: none of them uses the rate up.
    for (let i = 0; i < 3 * CONNECTIONS_PER_SECOND_PER_IP; i++) {
      const conn = inbound('100.64.0.9')
      assert.equal(await gater.denyInboundConnection?.(conn), false, `member connection ${i}`)
      assert.equal(await gater.denyInboundEncryptedConnection?.(member, conn), false)
    }
    // Strangers from that address do.
    let admitted = 0
    for (let i = 0; i < 2 * CONNECTIONS_PER_SECOND_PER_IP; i++) {
      const conn = inbound('100.64.0.9')
      if ((await gater.denyInboundConnection?.(conn)) === false) {
        admitted++
        await gater.denyInboundEncryptedConnection?.(stranger, conn)
      }
    }
    assert.equal(admitted, CONNECTIONS_PER_SECOND_PER_IP)
    assert.ok(refusals.every((r) => r.what === 'connection'))
  })

  it('refuses handshakes past the pending limit per IP and frees the slot when a connection closes', async () => {
    const { gater, refusals } = gaterWith([], 2)
    const first = inbound('198.18.0.7')
    assert.equal(await gater.denyInboundConnection?.(first), false)
    assert.equal(await gater.denyInboundConnection?.(inbound('198.18.0.7')), false)
    assert.equal(await gater.denyInboundConnection?.(inbound('198.18.0.7')), true)
    assert.match(refusals[0]?.reason ?? '', /too many pending handshakes/)
    first.dispatchEvent(new Event('close'))
    assert.equal(await gater.denyInboundConnection?.(inbound('198.18.0.7')), false)
  })
})
