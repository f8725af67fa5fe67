/**
 * What resumable sessions (src/pipe/session.ts) hold, and that they let go of it: 50 sessions
 * through a relay, each with its window filled one way or the other (25 whose service does not
 * read what the client sends, 25 whose client does not read what the service sends), then the only
 * path cut for good (the relay stops). Past the grace period (`proxy.resume_grace`, 1 s here)
 * every session is over, both local sockets reset, and the ArrayBuffers of this process — relay,
 * both nodes and every socket — are back to what they were before the sessions opened. Figures
 * are printed; a job of its own (`npm run test:memory`).
 */

import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import * as net from 'node:net'
import { after, before, test } from 'node:test'
import { editConfigFile } from '../../src/config/edit.ts'
import { nodeConfigSchema } from '../../src/config/schema.ts'
import { createLogger } from '../../src/log/index.ts'
import type { NodeRuntime } from '../../src/p2p/runtime.ts'
import { type Listener, startListener } from '../../src/pipe/listener.ts'
import { SESSION_WINDOW_BYTES } from '../../src/pipe/session.ts'
import { tempDir } from '../helpers/cli.ts'
import { arrayBufferBytes, waitForStall } from '../helpers/libp2p-pair.ts'
import { startRelayAndPair, type TestNode, type TestRelay } from '../helpers/mesh.ts'

const MiB = 1024 * 1024
const SESSIONS = 50
/**
 * What may be left after the sessions are over: yamux, noise and socket buffers of the nodes'
 * remaining connections, and V8's own churn. 50 windows are 200 MiB.
 */
const LEFT_BOUND = 16 * MiB

const cleanups: Array<() => Promise<unknown>> = []
let relay: TestRelay
let b: TestNode
let ra: NodeRuntime
let rb: NodeRuntime
let listeners: { sink: Listener; source: Listener }
/** The service's sockets: `sink` never reads, `source` writes until it cannot. */
const serviceSockets: net.Socket[] = []
const written = { bytes: 0 }
// One block, written again and again: the queues hold references to it, not copies.
const BLOCK = randomBytes(64 * 1024)

/** Writes until the socket will not take more, and then whenever it drains, until it closes. */
function flood(socket: net.Socket): void {
  const more = (): void => {
    while (!socket.destroyed && socket.write(BLOCK)) {
      written.bytes += BLOCK.length
    }
    written.bytes += socket.destroyed ? 0 : BLOCK.length
  }
  socket.on('drain', more)
  more()
}

/** A local service that takes connections and does `what` with them. */
async function service(what: (socket: net.Socket) => void): Promise<number> {
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    socket.on('error', () => {})
    serviceSockets.push(socket)
    what(socket)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  cleanups.unshift(
    () =>
      new Promise((resolve) => {
        for (const s of serviceSockets) s.destroy()
        server.close(resolve)
      }),
  )
  return (server.address() as net.AddressInfo).port
}

before(async () => {
  const root = await tempDir({ after: (fn) => cleanups.push(fn) })
  const made = await startRelayAndPair(root)
  relay = made.relay
  cleanups.unshift(() => relay.stop())
  b = made.b
  for (const n of [made.a, b]) {
    await editConfigFile(n.configFile, nodeConfigSchema, (doc) => doc.setIn(['proxy', 'resume_grace'], '1s'))
  }
  await b.addService('sink', `127.0.0.1:${await service((s) => s.pause())}`)
  await b.addService('source', `127.0.0.1:${await service((s) => flood(s))}`)
  rb = await b.start('daemon')
  cleanups.unshift(() => b.stop())
  await rb.supervisor.waitForReservation(AbortSignal.timeout(20_000))
  ra = await made.a.start('client')
  cleanups.unshift(() => made.a.stop())
  const listen = async (name: string): Promise<Listener> => {
    const l = await startListener({
      host: '127.0.0.1',
      port: 0,
      log: createLogger('proxy'),
      open: async (signal) => {
        const opened = await ra.openSession(b.peerId, name, { signal })
        assert.ok(opened.session, 'a session, not a plain stream')
        return opened.end
      },
    })
    cleanups.unshift(() => l.close())
    return l
  }
  listeners = { sink: await listen('sink'), source: await listen('source') }
})

after(async () => {
  for (const fn of cleanups) {
    await fn().catch(() => {})
  }
})

test(`${SESSIONS} sessions with full windows whose peer stays away: freed after the grace period`, {
  timeout: 240_000,
}, async (t) => {
  const mb = (n: number): string => `${(n / MiB).toFixed(1)} MiB`
  // The connection to b exists already (the reservation, a first session): idle is measured with it.
  const warm = await connectTo(listeners.sink.address.port)
  warm.write('x')
  await waitFor(() => ra.sessions.size === 1 && rb.acceptedSessions?.size === 1, 'a first session')
  warm.resetAndDestroy()
  await waitFor(() => ra.sessions.size === 0 && rb.acceptedSessions?.size === 0, 'the first session over')
  const idle = arrayBufferBytes()
  const idleRss = process.memoryUsage().rss

  const clients: net.Socket[] = []
  const closed: Array<Promise<string | undefined>> = []
  for (let i = 0; i < SESSIONS; i++) {
    const upload = i % 2 === 0
    const socket = await connectTo((upload ? listeners.sink : listeners.source).address.port)
    closed.push(
      new Promise((resolve) => {
        let code: string | undefined
        socket.on('error', (err: NodeJS.ErrnoException) => {
          code = err.code
        })
        socket.once('close', () => resolve(code))
      }),
    )
    if (upload) {
      flood(socket)
    } else {
      socket.pause()
    }
    clients.push(socket)
  }
  await waitFor(
    () => ra.sessions.size === SESSIONS && rb.acceptedSessions?.size === SESSIONS,
    `${SESSIONS} sessions open`,
  )
  // Both ways, every window fills: the writers stop when the sessions stop taking bytes.
  const total = await waitForStall(() => written.bytes, { quietMs: 1500, intervalMs: 100 })
  const full = arrayBufferBytes()
  const fullRss = process.memoryUsage().rss

  // The only path goes for good; nobody comes back within the grace period.
  const cut = performance.now()
  await relay.stop()
  await waitFor(() => ra.sessions.size === 0 && rb.acceptedSessions?.size === 0, 'every session over', 30_000)
  const overMs = performance.now() - cut
  // A paused socket notices its reset only when it reads again.
  for (const s of clients) s.resume()
  const codes = await Promise.all(closed)
  for (const s of serviceSockets) s.destroy()
  for (const s of clients) s.destroy()
  await new Promise((resolve) => setTimeout(resolve, 200))
  const left = arrayBufferBytes()
  const leftRss = process.memoryUsage().rss

  t.diagnostic(
    `${SESSIONS} sessions, ${mb(total)} written by both sides until they stalled; ArrayBuffers: idle ${mb(idle)}, windows full ${mb(full)} (+${mb(full - idle)}, ${mb((full - idle) / SESSIONS)} per session; a window is ${mb(SESSION_WINDOW_BYTES)}), after the grace period ${mb(left)} (${left >= idle ? '+' : ''}${mb(left - idle)}; bound +${mb(LEFT_BOUND)})`,
  )
  t.diagnostic(
    `every session over ${(overMs / 1000).toFixed(1)} s after the cut (grace 1 s); RSS idle ${mb(idleRss)}, full ${mb(fullRss)}, after ${mb(leftRss)} (the allocator keeps freed pages; ArrayBuffers are the measure)`,
  )
  // Each session held at least its sender's window of unacknowledged bytes.
  assert.ok(
    full - idle >= SESSIONS * SESSION_WINDOW_BYTES * 0.9,
    `only ${mb(full - idle)} held with full windows: were the windows filled?`,
  )
  assert.ok(left - idle < LEFT_BOUND, `${mb(left - idle)} still held after the sessions were over`)
  // Both local sockets were reset, not ended: the other side must not take it for a complete transfer.
  assert.deepEqual(
    codes.filter((c) => c !== 'ECONNRESET'),
    [],
    'every client socket reset',
  )
})

function connectTo(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true })
    socket.once('connect', () => resolve(socket))
    socket.once('error', reject)
  })
}

async function waitFor(cond: () => boolean, what: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!cond()) {
    if (Date.now() > deadline) {
      throw new Error(`${what}: not in time`)
    }
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
}
