/**
 * The splicing relay (src/relay/splice.ts, docs/decisions/0016-splicing-relay.md) with real nodes
 * on loopback: a relayed session with a bulk transfer moves onto two plain TCP connections the
 * relay joins, both directions byte-exact, the relay counting the bytes; a relay without a splice
 * port still carries it over the circuit; a forged token gets a reset, a used one too.
 */

import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import * as net from 'node:net'
import { after, before, describe, it } from 'node:test'
import { lpStream } from '@libp2p/utils'
import { NO_OBSERVER } from '../../../src/metrics/observer.ts'
import { SPLICE_PROTOCOL, SPLICE_TOKEN_BYTES } from '../../../src/p2p/constants.ts'
import { decode, encode } from '../../../src/p2p/punch.ts'
import type { NodeRuntime } from '../../../src/p2p/runtime.ts'
import { tempDir } from '../../helpers/cli.ts'
import {
  createTestNode,
  sessionProxy,
  startTestRelay,
  type TestNode,
  type TestRelay,
} from '../../helpers/mesh.ts'
import { checkedExchange, connect, startTransferServer } from '../../helpers/tcp.ts'

const MiB = 1024 * 1024

/** Two members relayed by one relay, b offering `xfer`; a's sessions to it through a proxy. */
async function relayedPair(root: string, relay: TestRelay, cleanups: Array<() => Promise<unknown>>) {
  const service = await startTransferServer(32 * MiB)
  cleanups.unshift(() => service.close())
  // Neither listens: they reach each other only through the relay.
  const b = await createTestNode(root, 'b', relay)
  const a = await createTestNode(root, 'a', relay)
  for (const n of [a, b]) {
    await relay.authorize(n.peerId)
  }
  await b.authorize(a.peerId)
  await b.addService('xfer', `127.0.0.1:${service.port}`)
  const rb = await b.start('daemon')
  cleanups.unshift(() => b.stop())
  await rb.supervisor.waitForReservation(AbortSignal.timeout(20_000))
  const ra = await a.start('client')
  cleanups.unshift(() => a.stop())
  const listener = await sessionProxy(ra, b, 'xfer', [], (path) => assert.equal(path, 'RELAYED'))
  cleanups.unshift(() => listener.close())
  return { a, b, ra, rb, service, listener }
}

/** Resolves with how `socket` ended: 'reset' (ECONNRESET) or 'end'. */
async function ending(socket: net.Socket): Promise<'reset' | 'end'> {
  socket.resume()
  const outcome = await Promise.race([
    once(socket, 'error').then(([err]) =>
      (err as NodeJS.ErrnoException).code === 'ECONNRESET' ? 'reset' : 'end',
    ),
    once(socket, 'end').then(() => 'end' as const),
  ])
  socket.destroy()
  return outcome as 'reset' | 'end'
}

describe('a relay with a splice port', { timeout: 120_000 }, () => {
  let relay: TestRelay
  let a: TestNode
  let b: TestNode
  let ra: NodeRuntime
  let pair: Awaited<ReturnType<typeof relayedPair>>
  const relayed = { bytes: 0 }
  const cleanups: Array<() => Promise<unknown>> = []

  before(async () => {
    const root = await tempDir({ after: (fn) => cleanups.push(fn) })
    relay = await startTestRelay(root, {
      observer: { ...NO_OBSERVER, relayedBytes: (n) => (relayed.bytes += n) },
    })
    cleanups.unshift(() => relay.stop())
    pair = await relayedPair(root, relay, cleanups)
    ;({ a, b, ra } = pair)
  })

  after(async () => {
    for (const fn of cleanups) {
      await fn().catch(() => {})
    }
  })

  it('a relayed session with a bulk transfer moves onto a splice, byte-exact both ways', async () => {
    const spliced = relay.handle.splice?.spliced ?? 0
    const opened = ra.bulk.counts.opened
    relayed.bytes = 0
    await checkedExchange(await connect(pair.listener.address.port), pair.service, 32 * MiB)
    assert.equal(relay.handle.splice?.spliced, spliced + 1, 'the relay joined one pair')
    assert.equal(ra.bulk.counts.opened, opened + 1)
    // Counted like circuits' bytes: most of the 64 MiB went through the splice.
    assert.ok(relayed.bytes > 48 * MiB, `relayed ${relayed.bytes} bytes`)
    assert.equal(ra.sessions.counts().expired, 0)
  })

  it('a forged token, and a token used once already, get a reset', async () => {
    const port = relay.handle.splice?.port ?? 0
    const forged = net.connect({ host: '127.0.0.1', port })
    await once(forged, 'connect')
    forged.write(randomBytes(SPLICE_TOKEN_BYTES))
    assert.equal(await ending(forged), 'reset')

    // A member's real token: two connections are joined, a third is not.
    const toRelay = ra.node.getConnections().find((c) => c.remotePeer.toString() === relay.peerId)
    assert.ok(toRelay)
    const stream = await toRelay.newStream(SPLICE_PROTOCOL)
    const lp = lpStream(stream)
    await lp.write(encode({ peer: b.peerId }))
    const granted = decode((await lp.read()).subarray()) as { token: string; port: number }
    assert.equal(granted.port, port)
    const spliced = relay.handle.splice?.spliced ?? 0
    const [x, y, z] = [0, 1, 2].map(() => net.connect({ host: '127.0.0.1', port }))
    for (const s of [x, y, z] as net.Socket[]) {
      await once(s, 'connect')
    }
    x?.write(Buffer.from(granted.token, 'hex'))
    y?.write(Buffer.from(granted.token, 'hex'))
    // Joined: what x sends, y receives.
    x?.write('through')
    const [data] = (await once(y as net.Socket, 'data')) as [Buffer]
    assert.equal(data.toString(), 'through')
    assert.equal(relay.handle.splice?.spliced, spliced + 1)
    z?.write(Buffer.from(granted.token, 'hex'))
    assert.equal(await ending(z as net.Socket), 'reset')
    x?.destroy()
    y?.destroy()
  })

  it('a token only for members: not for a peer the relay does not know', async () => {
    const toRelay = ra.node.getConnections().find((c) => c.remotePeer.toString() === relay.peerId)
    assert.ok(toRelay)
    const stream = await toRelay.newStream(SPLICE_PROTOCOL)
    const lp = lpStream(stream)
    await lp.write(encode({ peer: a.peerId.replace(/.$/, (c) => (c === 'a' ? 'b' : 'a')) }))
    const answer = decode((await lp.read()).subarray()) as { error?: string }
    assert.match(String(answer.error), /not a member/)
  })
})

describe('a relay without a splice port', { timeout: 120_000 }, () => {
  const cleanups: Array<() => Promise<unknown>> = []

  after(async () => {
    for (const fn of cleanups) {
      await fn().catch(() => {})
    }
  })

  it('still carries a bulk transfer, over the circuit', async () => {
    const root = await tempDir({ after: (fn) => cleanups.push(fn) })
    const relay = await startTestRelay(root, { splice: false })
    cleanups.unshift(() => relay.stop())
    const pair = await relayedPair(root, relay, cleanups)
    await checkedExchange(await connect(pair.listener.address.port), pair.service, 32 * MiB)
    assert.equal(relay.handle.splice, undefined)
    assert.equal(pair.ra.bulk.counts.opened, 0)
    assert.equal(pair.ra.bulk.counts.failed, 0, 'not even tried: the relay does not offer it')
  })
})
