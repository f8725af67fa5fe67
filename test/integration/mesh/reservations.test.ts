/**
 * Reservations that come late or go away, with a real relay and real nodes in this process on
 * 127.0.0.1: a daemon started before the operator authorized it on the relay holds its
 * reservation once that is done, without a restart (at once when the relay can tell it, at its
 * next try when not, or when the relay let it go as an idle stranger); `daemon status` says why there is none meanwhile and when the next try
 * is; with two relays and one of them stopped, a service stays reachable through the other.
 */

import assert from 'node:assert/strict'
import * as net from 'node:net'
import * as path from 'node:path'
import { describe, it } from 'node:test'
import { peerIdFromString } from '@libp2p/peer-id'
import { ROUTES, statusText } from '../../../src/api/index.ts'
import { editConfigFile } from '../../../src/config/edit.ts'
import { nodeConfigSchema } from '../../../src/config/schema.ts'
import type { DaemonContext } from '../../../src/daemon/routes/context.ts'
import { statusHandlers } from '../../../src/daemon/routes/status.ts'
import { RELAY_HOP_PROTOCOL } from '../../../src/p2p/constants.ts'
import type { PathInfo } from '../../../src/p2p/path.ts'
import { RELAY_NOTIFY_PROTOCOL } from '../../../src/p2p/relay-notify.ts'
import type { RelayState } from '../../../src/p2p/reservations.ts'
import type { NodeRuntime } from '../../../src/p2p/runtime.ts'
import { tempDir } from '../../helpers/cli.ts'
import { createTestNode, startTestRelay, type TestNode, type TestRelay } from '../../helpers/mesh.ts'

/** Resolves with the first state of a relay of `rt` that `predicate` holds for (now or later). */
function relayWhere(rt: NodeRuntime, predicate: (s: RelayState) => boolean): Promise<RelayState> {
  const now = rt.supervisor.status().find(predicate)
  if (now !== undefined) {
    return Promise.resolve(now)
  }
  return new Promise((resolve) => {
    const off = rt.supervisor.onUpdate((s) => {
      if (predicate(s)) {
        off()
        resolve(s)
      }
    })
  })
}

/** The status route's answer, as the daemon serves it (checked against the contract). */
async function statusOf(rt: NodeRuntime) {
  const ctx = { rt, startedAt: new Date(), proxies: { size: 0 } } as unknown as DaemonContext
  return ROUTES.status.output.parse(await statusHandlers(ctx).status({}, undefined as never))
}

/** A relay and a node `home` that the relay does not know yet, its daemon started. */
async function unauthorizedHome(
  t: { after: (fn: () => Promise<unknown>) => void },
  relayOptions: Parameters<typeof startTestRelay>[1] = {},
): Promise<{ relay: TestRelay; home: TestNode; rt: NodeRuntime }> {
  const root = await tempDir(t)
  const relay = await startTestRelay(root, relayOptions)
  t.after(() => relay.stop())
  const home = await createTestNode(root, 'home', relay)
  const rt = await home.start('daemon')
  t.after(() => home.stop())
  return { relay, home, rt }
}

describe('a reservation refused at first', { timeout: 150_000 }, () => {
  it('is held once the operator authorizes the node, without a restart; status says why meanwhile', async (t) => {
    const { relay, home, rt } = await unauthorizedHome(t)
    // The relay refuses, then tells the node why (src/p2p/relay-notify.ts).
    const refused = await relayWhere(rt, (s) => /not in relay_authorized_keys/.test(s.reason ?? ''))
    assert.equal(refused.reserved, false)
    assert.equal(refused.connected, true)
    assert.ok(refused.failures >= 1)
    assert.ok(refused.nextAttemptAt !== undefined)

    const status = await statusOf(rt)
    const shown = status.relays[0]
    assert.ok(shown !== undefined)
    assert.equal(shown.reason, 'refused by the relay: not in relay_authorized_keys')
    assert.ok(shown.nextAttemptAt !== undefined && !Number.isNaN(Date.parse(shown.nextAttemptAt)))
    const text = statusText(status)
    t.diagnostic(text.split('\n').find((l) => l.includes(relay.peerId)) ?? '')
    assert.match(
      text,
      /connected, no reservation \(since \d+s\): refused by the relay: not in relay_authorized_keys; next try (now|in \d+s)/,
    )

    // What `peerup relay authorize` does: the file, then the running relay's reload.
    const started = performance.now()
    await relay.authorize(home.peerId)
    await rt.supervisor.waitForReservation(AbortSignal.timeout(30_000))
    t.diagnostic(`authorize → reservation held: ${(performance.now() - started).toFixed(0)} ms`)
    const held = (await statusOf(rt)).relays[0]
    assert.equal(held?.reserved, true)
    assert.equal(held?.reason, undefined)
    assert.equal(held?.nextAttemptAt, undefined)
    assert.match(statusText(await statusOf(rt)), /reservation held/)
  })

  it('is asked for again at once when the relay tells the connected node it was authorized', async (t) => {
    const { relay, home, rt } = await unauthorizedHome(t)
    // Far enough into the backoff that the next scheduled try is seconds away.
    const waiting = await relayWhere(
      rt,
      (s) => s.connected && s.nextAttemptAt !== undefined && s.nextAttemptAt - Date.now() >= 3_000,
    )
    const scheduled = waiting.nextAttemptAt as number
    const started = performance.now()
    await relay.authorize(home.peerId)
    await rt.supervisor.waitForReservation(AbortSignal.timeout(30_000))
    t.diagnostic(
      `notice → reservation held: ${(performance.now() - started).toFixed(0)} ms (the next try was due in ${scheduled - Date.now()} ms more)`,
    )
    // Held before the try the backoff had scheduled: the relay's notice brought it.
    assert.ok(Date.now() < scheduled, 'the reservation came before the scheduled try')
  })

  it('is held by the next scheduled try when the relay cannot tell the connected node', async (t) => {
    const { relay, home, rt } = await unauthorizedHome(t)
    // The node takes no notices (as from a relay without relay-notify): only the backoff is left.
    await rt.node.unhandle(RELAY_NOTIFY_PROTOCOL)
    const waiting = await relayWhere(rt, (s) => s.connected && s.failures >= 3)
    // The requests the relay answered do not pile up on the connection (each refusal left its
    // stream open, and 64 of them stopped the node from asking at all).
    const hop = relay.handle.node
      .getConnections(peerIdFromString(home.peerId))
      .flatMap((c) => c.streams)
      .filter((s) => s.protocol === RELAY_HOP_PROTOCOL)
    assert.ok(
      hop.length <= 1,
      `${hop.length} hop streams of home open on the relay after ${waiting.failures} refusals`,
    )
    const started = performance.now()
    await relay.authorize(home.peerId)
    await rt.supervisor.waitForReservation(AbortSignal.timeout(35_000))
    t.diagnostic(
      `authorize → reservation held by the backoff alone: ${(performance.now() - started).toFixed(0)} ms (after ${waiting.failures} refusals)`,
    )
    assert.equal(rt.supervisor.status()[0]?.reserved, true)
  })

  it('is held after the next try when the relay cannot tell the node (it was let go as an idle stranger)', async (t) => {
    const { relay, home, rt } = await unauthorizedHome(t, { resources: { unknown_peer_idle_timeout: '1s' } })
    // The node takes no notices: only its own retries can bring the reservation.
    await rt.node.unhandle(RELAY_NOTIFY_PROTOCOL)
    // Let go as an idle stranger, then re-dialled (the supervisor dials a relay again when its
    // connection closes) and refused again.
    const dropped = new Promise<void>((resolve) =>
      relay.handle.events.addEventListener('refusal', (e) => {
        if (e.detail.peer === home.peerId && e.detail.reason === 'idle unknown peer') {
          resolve()
        }
      }),
    )
    await dropped
    await relayWhere(rt, (s) => s.failures >= 2)
    const started = performance.now()
    await relay.authorize(home.peerId)
    await rt.supervisor.waitForReservation(AbortSignal.timeout(35_000))
    t.diagnostic(
      `authorize → reservation held by retry alone: ${(performance.now() - started).toFixed(0)} ms`,
    )
    assert.equal(rt.supervisor.status()[0]?.reserved, true)
  })
})

describe('two relays, one stopped', { timeout: 90_000 }, () => {
  it('a service stays reachable through the other relay', async (t) => {
    const root = await tempDir(t)
    const relays = [await startTestRelay(path.join(root, 'r1')), await startTestRelay(path.join(root, 'r2'))]
    for (const r of relays) {
      t.after(() => r.stop())
    }
    const [r1, r2] = relays as [TestRelay, TestRelay]
    const home = await createTestNode(root, 'home', r1)
    const laptop = await createTestNode(root, 'laptop', r1)
    for (const node of [home, laptop]) {
      await editConfigFile(node.configFile, nodeConfigSchema, (doc) => {
        doc.setIn(['relay', 'addresses'], doc.createNode([r1.address, r2.address]))
      })
      await r1.authorize(node.peerId)
      await r2.authorize(node.peerId)
    }
    await home.authorize(laptop.peerId)
    const echo = net.createServer({ allowHalfOpen: true }, (s) => {
      // A session cut by the relay going away is reset; that is not what this test looks at.
      s.on('error', () => {})
      s.pipe(s)
    })
    await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve))
    t.after(() => new Promise((resolve) => echo.close(resolve)))
    await home.addService('echo', `127.0.0.1:${(echo.address() as net.AddressInfo).port}`)

    const rt = await home.start('daemon')
    t.after(() => home.stop())
    await relayWhere(rt, () => rt.supervisor.status().every((s) => s.reserved))
    const client = await laptop.start('client')
    t.after(() => laptop.stop())

    const first = await echoThrough(client, home.peerId)
    assert.equal(first.path.type, 'RELAYED')
    // Stop the relay that carried it: the next stream must go through the other one.
    const carried = relays.find((r) => r.peerId === first.path.relay) as TestRelay
    const other = relays.find((r) => r !== carried) as TestRelay
    await carried.stop()
    await relayWhere(rt, (s) => s.peerId === carried.peerId && !s.reserved)
    const second = await echoThrough(client, home.peerId)
    assert.equal(second.path.type, 'RELAYED')
    assert.equal(second.path.relay, other.peerId)
    // home keeps trying the stopped relay and says so.
    const down = await relayWhere(
      rt,
      (s) => s.peerId === carried.peerId && /cannot reach the relay/.test(s.reason ?? ''),
    )
    assert.ok(down.nextAttemptAt !== undefined)
    assert.equal(rt.supervisor.status().find((s) => s.peerId === other.peerId)?.reserved, true)
  })
})

/** Opens the echo service of `peer`, sends a line and reads it back; returns the stream's path. */
async function echoThrough(rt: NodeRuntime, peer: string): Promise<{ path: PathInfo }> {
  const { stream, path } = await rt.openService(peer, 'echo', { signal: AbortSignal.timeout(20_000) })
  const text = 'hello\n'
  const echoed = new Promise<string>((resolve, reject) => {
    let got = Buffer.alloc(0)
    stream.addEventListener('message', (evt) => {
      got = Buffer.concat([got, evt.data.subarray()])
      if (got.length >= text.length) {
        resolve(got.toString())
      }
    })
    stream.addEventListener('close', () => reject(new Error('the stream closed before the echo came back')))
  })
  stream.send(new TextEncoder().encode(text))
  assert.equal(await echoed, text)
  await stream.close()
  return { path }
}
