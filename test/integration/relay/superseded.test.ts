/**
 * A member whose path to the relay died silently (its NAT forgot the connection) dials the relay
 * again: the relay must not go on sending circuits to the dead connection until its own liveness
 * round gives up on it (10–15 s). The newer connection makes the relay ping the older one at once
 * (src/p2p/liveness.ts, SUPERSEDED_TIMEOUT_MS); libp2p's relay server takes a peer's first
 * connection for a circuit, so that is what lets circuits reach the member again.
 */

import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type { Connection } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import { configureLogging } from '../../../src/log/index.ts'
import { LIVENESS_TIMEOUT_MS } from '../../../src/p2p/liveness.ts'
import type { NodeRuntime } from '../../../src/p2p/runtime.ts'
import { tempDir } from '../../helpers/cli.ts'
import { createTestNode, startTestRelay, type TestNode, type TestRelay } from '../../helpers/mesh.ts'
import { type Forwarder, startForwarder } from '../../helpers/tcp.ts'

configureLogging({ level: 'error' })

describe('a member dials the relay again while its old connection is silent', { timeout: 60_000 }, () => {
  let relay: TestRelay
  let nat: Forwarder
  let b: TestNode
  let rb: NodeRuntime
  let ra: NodeRuntime
  const cleanups: Array<() => Promise<unknown>> = []

  before(async () => {
    const root = await tempDir({ after: (fn) => cleanups.push(fn) })
    relay = await startTestRelay(root)
    cleanups.unshift(() => relay.stop())
    const relayPort = Number(/\/tcp\/(\d+)\//.exec(relay.address)?.[1])
    nat = await startForwarder(relayPort)
    cleanups.unshift(() => nat.close())
    // b reaches the relay through the "NAT" only; a directly.
    b = await createTestNode(root, 'b', relay, {
      relays: [relay.address.replace(`/tcp/${relayPort}/`, `/tcp/${nat.port}/`)],
    })
    const a = await createTestNode(root, 'a', relay)
    for (const n of [a, b]) {
      await relay.authorize(n.peerId)
    }
    await b.authorize(a.peerId)
    rb = await b.start('daemon')
    cleanups.unshift(() => b.stop())
    await rb.supervisor.waitForReservation(AbortSignal.timeout(20_000))
    ra = await a.start('client')
    cleanups.unshift(() => a.stop())
  })

  after(async () => {
    for (const fn of cleanups) {
      await fn().catch(() => {})
    }
  })

  it('the relay closes the old connection at once and circuits reach the member over the new one', async () => {
    const relayNode = relay.handle.node
    const [old] = relayNode.getConnections(rb.node.peerId)
    assert.ok(old, 'b is connected to the relay')
    const oldClosed = new Promise<Connection>((resolve) => {
      const onClose = (evt: CustomEvent<Connection>): void => {
        if (evt.detail === old) {
          relayNode.removeEventListener('connection:close', onClose)
          resolve(evt.detail)
        }
      }
      relayNode.addEventListener('connection:close', onClose)
    })
    // The NAT forgets b's connection: nothing passes either way, nothing is closed.
    nat.blackhole()
    const freshAtRelay = new Promise<void>((resolve) => {
      const onOpen = (evt: CustomEvent<Connection>): void => {
        if (evt.detail.remotePeer.equals(rb.node.peerId)) {
          relayNode.removeEventListener('connection:open', onOpen)
          resolve()
        }
      }
      relayNode.addEventListener('connection:open', onOpen)
    })
    const fresh = await rb.node.dial(multiaddr(relay.address), {
      force: true,
      signal: AbortSignal.timeout(10_000),
    })
    await freshAtRelay
    const openedAt = performance.now()
    assert.equal(
      relayNode.getConnections(rb.node.peerId).length,
      2,
      'the relay holds both of b’s connections',
    )
    await oldClosed
    const tookMs = performance.now() - openedAt
    // Not the relay's liveness round, whose ping would have waited LIVENESS_TIMEOUT_MS for an answer.
    assert.ok(
      tookMs < LIVENESS_TIMEOUT_MS,
      `the old connection was closed ${tookMs.toFixed(0)} ms after the new one`,
    )
    assert.deepEqual(relayNode.getConnections(rb.node.peerId).length, 1)
    // a reaches b through the relay: the circuit runs over b's new connection.
    const reached = await ra.reach(b.peerId, AbortSignal.timeout(10_000))
    assert.equal(reached.connection.status, 'open')
    assert.equal(fresh.status, 'open')
  })
})
