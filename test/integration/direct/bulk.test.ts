/**
 * Bulk links (src/p2p/bulk.ts, docs/decisions/0015-bulk-links.md) between real nodes on loopback:
 * a session that carries a bulk transfer over a direct TCP connection moves onto a TLS connection
 * of its own, both directions byte-exact; one that carries little stays on its stream; and a
 * connection to the port a bulk link listens on that does not know the key gets nothing.
 */

import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { after, before, describe, it } from 'node:test'
import * as tls from 'node:tls'
import { lpStream } from '@libp2p/utils'
import { BULK_AFTER_BYTES, BULK_PROTOCOL } from '../../../src/p2p/bulk.ts'
import { decode, encode } from '../../../src/p2p/punch.ts'
import type { NodeRuntime } from '../../../src/p2p/runtime.ts'
import type { Listener } from '../../../src/pipe/listener.ts'
import type { Session } from '../../../src/pipe/session.ts'
import { tempDir } from '../../helpers/cli.ts'
import {
  createTestNode,
  sessionProxy,
  startTestRelay,
  type TestNode,
  type TestRelay,
} from '../../helpers/mesh.ts'
import { checkedExchange, connect, receiveAll, sendInTwo, startTransferServer } from '../../helpers/tcp.ts'

const MiB = 1024 * 1024

describe('bulk links on a direct TCP connection', { timeout: 120_000 }, () => {
  let relay: TestRelay
  let a: TestNode
  let b: TestNode
  let ra: NodeRuntime
  let rb: NodeRuntime
  let service: Awaited<ReturnType<typeof startTransferServer>>
  let small: Awaited<ReturnType<typeof startTransferServer>>
  let listener: Listener
  const opened: Session[] = []
  const cleanups: Array<() => Promise<unknown>> = []

  before(async () => {
    const root = await tempDir({ after: (fn) => cleanups.push(fn) })
    relay = await startTestRelay(root)
    cleanups.unshift(() => relay.stop())
    service = await startTransferServer(32 * MiB)
    cleanups.unshift(() => service.close())
    small = await startTransferServer(1 * MiB)
    cleanups.unshift(() => small.close())
    // Both listen on 127.0.0.1: a reaches b over a direct TCP connection (the `listen` mode).
    b = await createTestNode(root, 'b', relay, { direct: true })
    a = await createTestNode(root, 'a', relay, { direct: true })
    for (const n of [a, b]) {
      await relay.authorize(n.peerId)
    }
    await b.authorize(a.peerId)
    await a.authorize(b.peerId)
    await b.addService('xfer', `127.0.0.1:${service.port}`)
    await b.addService('small', `127.0.0.1:${small.port}`)
    rb = await b.start('daemon')
    cleanups.unshift(() => b.stop())
    ra = await a.start('daemon')
    cleanups.unshift(() => a.stop())
    await ra.reach(b.peerId)
    await ra.paths.waitFor(
      b.peerId,
      (s) => s.path?.type === 'DIRECT' && s.path.transport === 'tcp',
      AbortSignal.timeout(30_000),
    )
    listener = await sessionProxy(ra, b, 'xfer', opened)
    cleanups.unshift(() => listener.close())
  })

  after(async () => {
    for (const fn of cleanups) {
      await fn().catch(() => {})
    }
  })

  it('a session with a bulk transfer moves to a link of its own, both directions byte-exact', async () => {
    const [mine, theirs] = [ra.bulk.counts, rb.bulk.counts]
    const socket = await connect(listener.address.port)
    await checkedExchange(socket, service, 32 * MiB)
    assert.equal(ra.bulk.counts.opened, mine.opened + 1, 'the opener set up one bulk link')
    assert.equal(rb.bulk.counts.opened, theirs.opened + 1, 'the acceptor took one bulk link')
    assert.equal(ra.bulk.counts.failed + rb.bulk.counts.failed, mine.failed + theirs.failed)
    assert.equal(ra.sessions.counts().expired, 0)
  })

  it('a bulk link reset mid-transfer: the session comes back over the libp2p connection, byte-exact', async () => {
    const resumed = ra.sessions.counts().resumed
    const socket = await connect(listener.address.port)
    const received = receiveAll(socket)
    const sent = await sendInTwo(socket, 32 * MiB, 16 * MiB, async () => {
      await waitUntil(() => ra.bulk.counts.live === 1 && rb.bulk.counts.live === 1)
      rb.bulk.resetAll()
      await waitUntil(() => ra.sessions.counts().resumed > resumed)
    })
    const got = await received
    assert.equal(got.error, undefined, 'no reset reached the client')
    const far = await service.transfer(sent.hash)
    assert.equal(far.received, sent.sent)
    assert.equal(got.received, far.sent)
    assert.equal(got.hash, far.sentHash, 'the download arrived intact')
    assert.equal(ra.bulk.counts.live, 0)
  })

  it(`a session that carries less than ${BULK_AFTER_BYTES / MiB} MiB stays on its stream`, async () => {
    const proxy = await sessionProxy(ra, b, 'small', [])
    cleanups.unshift(() => proxy.close())
    const before = ra.bulk.counts.opened
    await checkedExchange(await connect(proxy.address.port), small, 1 * MiB)
    assert.equal(ra.bulk.counts.opened, before)
  })

  it('a connection to the bulk port without the key gets nothing', async () => {
    const connection = ra.node.getConnections().find((c) => c.remotePeer.toString() === b.peerId)
    assert.ok(connection)
    const failed = rb.bulk.counts.failed
    const stream = await connection.newStream(BULK_PROTOCOL)
    const lp = lpStream(stream)
    const nonce = randomBytes(16).toString('hex')
    await lp.write(encode({ mode: 'listen', nonce, key: randomBytes(32).toString('hex') }))
    const reply = decode((await lp.read()).subarray()) as { port: number; nonce: string }
    assert.equal(reply.nonce, nonce)
    // Someone who learnt the port but not the key (another key under the same identity).
    const wrong = tls.connect({
      host: '127.0.0.1',
      port: reply.port,
      minVersion: 'TLSv1.3',
      checkServerIdentity: () => undefined,
      pskCallback: () => ({ psk: randomBytes(32), identity: nonce }),
    })
    const [err] = (await once(wrong, 'error')) as [Error]
    assert.match(err.message, /alert|decrypt|handshake/i)
    wrong.destroy()
    await waitUntil(() => rb.bulk.counts.failed === failed + 1)
    assert.equal(rb.bulk.counts.live, 0, 'no link was made of it')
  })
})

/** Polls cheap in-process state until `cond` holds, bounded. */
async function waitUntil(cond: () => boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!cond()) {
    if (Date.now() > deadline) {
      throw new Error('not in time')
    }
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
}
