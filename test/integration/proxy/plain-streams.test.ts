/**
 * `PEERUP_SESSIONS=off` (src/env.ts): a node opens plain service streams, as with a peer without
 * sessions, and the peer serves them as before — the benchmark's baseline for what resumability
 * costs (bench/measure/sessions.ts).
 */

import assert from 'node:assert/strict'
import { after, before, it } from 'node:test'
import { readEnv } from '../../../src/env.ts'
import { createLogger } from '../../../src/log/index.ts'
import { type NodeRuntime, startNodeRuntime } from '../../../src/p2p/runtime.ts'
import { type Listener, startListener } from '../../../src/pipe/listener.ts'
import { tempDir } from '../../helpers/cli.ts'
import { startRelayAndPair, type TestNode } from '../../helpers/mesh.ts'
import { connect, receiveAll, sendRandom, startTransferServer } from '../../helpers/tcp.ts'

const MiB = 1024 * 1024
const cleanups: Array<() => Promise<unknown>> = []
let b: TestNode
let ra: NodeRuntime
let service: Awaited<ReturnType<typeof startTransferServer>>
let listener: Listener
const resumable: boolean[] = []

before(async () => {
  const root = await tempDir({ after: (fn) => cleanups.push(fn) })
  const made = await startRelayAndPair(root)
  cleanups.unshift(() => made.relay.stop())
  b = made.b
  service = await startTransferServer(1 * MiB)
  cleanups.unshift(() => service.close())
  await b.addService('xfer', `127.0.0.1:${service.port}`)
  const rb = await b.start('daemon')
  cleanups.unshift(() => b.stop())
  await rb.supervisor.waitForReservation(AbortSignal.timeout(20_000))
  ra = await startNodeRuntime({
    configFile: made.a.configFile,
    log: createLogger('a'),
    exposeServices: false,
    listen: [],
    env: readEnv({ ...process.env, PEERUP_SESSIONS: 'off' }),
  })
  cleanups.unshift(() => ra.stop())
  listener = await startListener({
    host: '127.0.0.1',
    port: 0,
    log: createLogger('proxy'),
    open: async (signal) => {
      const opened = await ra.openSession(b.peerId, 'xfer', { signal })
      resumable.push(opened.session !== undefined)
      return opened.end
    },
  })
  cleanups.unshift(() => listener.close())
})

after(async () => {
  for (const fn of cleanups) {
    await fn().catch(() => {})
  }
})

it('PEERUP_SESSIONS=off: a plain stream, served as before, both directions intact', {
  timeout: 60_000,
}, async () => {
  const socket = await connect(listener.address.port)
  const received = receiveAll(socket)
  const sent = await sendRandom(socket, 2 * MiB)
  const got = await received
  assert.deepEqual(resumable, [false])
  assert.equal(ra.sessions.size, 0)
  assert.equal(b.runtime?.acceptedSessions?.size, 0)
  assert.equal(got.error, undefined)
  assert.equal(got.received, 1 * MiB)
  // The service's side is reported once its socket closed, which may come after ours.
  const deadline = Date.now() + 10_000
  while (service.transfers.length === 0 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
  const far = service.transfers.at(-1)
  assert.equal(far?.received, sent.sent)
  assert.equal(far?.receivedHash, sent.hash)
  assert.equal(far?.sentHash, got.hash)
})
