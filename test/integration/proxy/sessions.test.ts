/**
 * Resumable sessions between real nodes through a real relay (docs/decisions/0006-sessions.md): a
 * transfer survives the relay's restart with every byte once and in order, moves to a direct
 * connection when one appears (and the relay stops carrying it), refuses a session id presented by
 * another peer, and past the grace period resets both local sockets and lets go of the session.
 */

import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import * as net from 'node:net'
import * as path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { removeAuthorizedPeer } from '../../../src/auth/ops.ts'
import { editConfigFile } from '../../../src/config/edit.ts'
import { nodeConfigSchema, relayConfigSchema } from '../../../src/config/schema.ts'
import { NO_OBSERVER } from '../../../src/metrics/observer.ts'
import type { NodeRuntime } from '../../../src/p2p/runtime.ts'
import { SESSION_PROTOCOL, streamLink } from '../../../src/pipe/link.ts'
import type { Listener } from '../../../src/pipe/listener.ts'
import {
  handshake,
  SESSION_WINDOW_BYTES,
  type Session,
  SessionRefusedError,
} from '../../../src/pipe/session.ts'
import { SERVICE_DIAL_OPTIONS } from '../../../src/proxy/constants.ts'
import { tempDir } from '../../helpers/cli.ts'
import {
  createTestNode,
  sessionProxy,
  startTestRelay,
  type TestNode,
  type TestRelay,
} from '../../helpers/mesh.ts'
import {
  connect,
  type Forwarder,
  receiveAll,
  sendInTwo,
  sendRandom,
  startForwarder,
  startTransferServer,
} from '../../helpers/tcp.ts'

const MiB = 1024 * 1024

/** Polls cheap in-process state until `cond` holds, bounded. */
async function waitFor(cond: () => boolean, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!cond()) {
    if (Date.now() > deadline) {
      throw new Error(`${what}: not in time`)
    }
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
}

// node-datachannel can keep a native thread of an incoming data channel alive, and then this
// process never exits (murat-dogan/node-datachannel#349); the WebRTC test below makes one.
after(async () => {
  const { cleanup } = await import('node-datachannel')
  cleanup()
})

describe('resumable sessions through a relay', { timeout: 240_000 }, () => {
  let relay: TestRelay
  let a: TestNode
  let b: TestNode
  let c: TestNode
  let ra: NodeRuntime
  let rb: NodeRuntime
  let service: Awaited<ReturnType<typeof startTransferServer>>
  let listener: Listener
  const opened: Session[] = []
  const relayed = { bytes: 0 }
  const cleanups: Array<() => Promise<unknown>> = []
  let root: string

  before(async () => {
    root = await tempDir({ after: (fn) => cleanups.push(fn) })
    relay = await startTestRelay(root, {
      stun: true,
      observer: { ...NO_OBSERVER, relayedBytes: (n) => (relayed.bytes += n) },
    })
    cleanups.unshift(() => relay.stop())
    service = await startTransferServer(24 * MiB)
    cleanups.unshift(() => service.close())
    // b is reachable only through the relay; a may dial WebRTC (for d, below).
    b = await createTestNode(root, 'b', relay)
    a = await createTestNode(root, 'a', relay, { listen: ['/webrtc'] })
    c = await createTestNode(root, 'c', relay)
    for (const n of [a, b, c]) {
      await relay.authorize(n.peerId)
    }
    await b.authorize(a.peerId)
    await b.authorize(c.peerId)
    await b.addService('xfer', `127.0.0.1:${service.port}`)
    rb = await b.start('daemon')
    cleanups.unshift(() => b.stop())
    await rb.supervisor.waitForReservation(AbortSignal.timeout(20_000))
    ra = await a.start('client')
    cleanups.unshift(() => a.stop())
    listener = await sessionProxy(ra, b, 'xfer', opened)
    cleanups.unshift(() => listener.close())
  })

  after(async () => {
    for (const fn of cleanups) {
      await fn().catch(() => {})
    }
  })

  it('a transfer survives a relay restart: both directions byte-exact, no reset', async () => {
    const before = service.transfers.length
    const openedBefore = opened.length
    const socket = await connect(listener.address.port)
    const received = receiveAll(socket)
    const sent = await sendInTwo(socket, 24 * MiB, 4 * MiB, async () => {
      // The first 4 MiB can sit in socket buffers before the proxy has opened its session.
      await waitFor(() => opened.length > openedBefore, 'session opened')
      const session = opened.at(-1) as Session
      await relay.restart()
      // The link went with the relay; the session waits for a new one and takes it.
      await waitFor(() => session.state === 'detached', 'link lost')
      await waitFor(() => session.attached, 'attached again', 60_000)
    })
    const got = await received
    await waitFor(() => service.transfers.length > before, 'service side done')
    const far = service.transfers[before]
    assert.ok(far)
    assert.equal(got.error, undefined)
    assert.equal(far.error, undefined)
    assert.equal(far.received, sent.sent)
    assert.equal(far.receivedHash, sent.hash)
    assert.equal(got.received, far.sent)
    assert.equal(got.hash, far.sentHash)
    // What `daemon status` and the metrics report: a resume on each side, nothing expired.
    const [mine, theirs] = [ra.sessions.counts(), rb.acceptedSessions?.counts()]
    assert.ok(
      mine.resumed >= 1 && (theirs?.resumed ?? 0) >= 1,
      `resumed ${mine.resumed} / ${theirs?.resumed}`,
    )
    assert.equal(mine.expired + (theirs?.expired ?? 0), 0)
  })

  it('a session id presented by another peer is refused, and the session goes on', async () => {
    const openedBefore = opened.length
    const socket = await connect(listener.address.port)
    const received = receiveAll(socket)
    await waitFor(() => opened.length > openedBefore && opened.at(-1)?.attached === true, 'session open')
    const session = opened.at(-1) as Session
    const rc = await c.start('client')
    cleanups.unshift(() => c.stop())
    const reached = await rc.reach(b.peerId)
    const stream = await reached.connection.newStream(SESSION_PROTOCOL, SERVICE_DIAL_OPTIONS)
    const link = streamLink(stream, b.peerId)
    await assert.rejects(
      handshake(
        link,
        { id: session.id, resume: true, received: 0, service: '' },
        AbortSignal.timeout(10_000),
      ),
      (err: Error) => err instanceof SessionRefusedError && /unknown session/.test(err.message),
    )
    assert.equal(session.attached, true)
    const before = service.transfers.length
    const sent = await sendRandom(socket, 1 * MiB)
    const got = await received
    await waitFor(() => service.transfers.length > before, 'service side done')
    assert.equal(got.error, undefined)
    assert.equal(service.transfers[before]?.receivedHash, sent.hash)
  })

  it('moves to a direct connection when one appears; the relay stops carrying it', async () => {
    // d offers WebRTC: the upgrade comes after the session began on the relay (ICE takes a while).
    const d = await createTestNode(root, 'd', relay, { listen: ['/webrtc'] })
    await relay.authorize(d.peerId)
    await d.authorize(a.peerId)
    await d.addService('xfer', `127.0.0.1:${service.port}`)
    const rd = await d.start('daemon')
    cleanups.unshift(() => d.stop())
    await rd.supervisor.waitForReservation(AbortSignal.timeout(20_000))
    const toD: Session[] = []
    const proxy = await sessionProxy(ra, d, 'xfer', toD, (path) => assert.equal(path, 'RELAYED'))
    cleanups.unshift(() => proxy.close())
    const before = service.transfers.length
    const socket = await connect(proxy.address.port)
    const received = receiveAll(socket)
    const sent = await sendInTwo(socket, 24 * MiB, 2 * MiB, async () => {
      await ra.paths.waitFor(d.peerId, (s) => s.path?.type === 'DIRECT', AbortSignal.timeout(30_000))
      const session = toD[0] as Session
      await waitFor(() => session.attached && ra.sessions.pathOf(session)?.type === 'DIRECT', 'session moved')
      relayed.bytes = 0
    })
    const got = await received
    await waitFor(() => service.transfers.length > before, 'service side done')
    const far = service.transfers[before]
    assert.equal(got.error, undefined)
    assert.equal(far?.receivedHash, sent.hash)
    assert.equal(got.hash, far?.sentHash)
    // 22 MiB up and 24 MiB down after the move; the relay carried none of it. What was in flight on
    // the relayed link when the session moved may still cross (on a loaded machine, up to ~0.7 MB
    // was seen): at most a session window each way, which the direct link sends again.
    assert.ok(
      relayed.bytes < 2 * SESSION_WINDOW_BYTES,
      `the relay carried ${relayed.bytes} bytes after the move`,
    )
    assert.ok(ra.sessions.counts().moved >= 1)
  })

  it('revoking the opener on the accepting side resets its sessions there and here at once', async () => {
    const before = service.transfers.length
    const socket = await connect(listener.address.port)
    // Not read until the revocation, so that the service's 24 MiB and its FIN cannot all arrive
    // first: a reset after a clean end of that direction reaches a client that reads only when it
    // next writes (EPIPE), and this one would wait for 'close' forever.
    socket.pause()
    const near = receiveAll(socket)
    socket.write(randomBytes(64 * 1024))
    await waitFor(() => (rb.acceptedSessions?.size ?? 0) > 0, 'session accepted')
    await removeAuthorizedPeer(path.join(b.dir, 'authorized_keys'), a.peerId)
    await rb.reloadAuthorized()
    socket.resume()
    const mine = await near
    assert.equal(mine.error, 'ECONNRESET')
    await waitFor(() => service.transfers.length > before, 'the service side closed')
    assert.ok(service.transfers[before]?.error, 'the service side was reset, not ended')
    await waitFor(() => rb.acceptedSessions?.size === 0, 'b let go of the session')
    await b.authorize(a.peerId)
  })

  it('revoking the accepting peer on the opening side resets its sessions here and there at once', async () => {
    await a.authorize(b.peerId)
    await ra.reloadAuthorized()
    await ra.reach(b.peerId)
    const before = service.transfers.length
    const socket = await connect(listener.address.port)
    socket.pause()
    const near = receiveAll(socket)
    socket.write(randomBytes(64 * 1024))
    await waitFor(() => ra.sessions.size > 0 && (rb.acceptedSessions?.size ?? 0) > 0, 'session open')
    // Not left to find out by trying to come back over a connection a's gater now refuses, its
    // local socket open until the grace period ends.
    await removeAuthorizedPeer(path.join(a.dir, 'authorized_keys'), b.peerId)
    await ra.reloadAuthorized()
    socket.resume()
    const mine = await near
    assert.equal(mine.error, 'ECONNRESET')
    assert.equal(ra.sessions.size, 0, 'a let go of the session')
    await waitFor(() => service.transfers.length > before, 'the service side closed')
    assert.ok(service.transfers[before]?.error, 'the service side was reset, not ended')
    await waitFor(() => rb.acceptedSessions?.size === 0, 'b let go of the session')
  })
})

describe('a session whose peer stays away past the grace period', { timeout: 120_000 }, () => {
  let relay: TestRelay
  let ra: NodeRuntime
  let rb: NodeRuntime
  let b: TestNode
  const cleanups: Array<() => Promise<unknown>> = []
  let held: net.Socket | undefined
  let far: Promise<{ error: string | undefined }> | undefined

  before(async () => {
    const root = await tempDir({ after: (fn) => cleanups.push(fn) })
    relay = await startTestRelay(root)
    cleanups.unshift(() => relay.stop())
    const server = net.createServer({ allowHalfOpen: true }, (socket) => {
      held = socket
      far = receiveAll(socket)
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    cleanups.unshift(() => new Promise((resolve) => server.close(resolve)))
    b = await createTestNode(root, 'b', relay)
    const a = await createTestNode(root, 'a', relay)
    for (const n of [a, b]) {
      await relay.authorize(n.peerId)
      await editConfigFile(n.configFile, nodeConfigSchema, (doc) =>
        doc.setIn(['proxy', 'resume_grace'], '2s'),
      )
    }
    await b.authorize(a.peerId)
    await b.addService('hold', `127.0.0.1:${(server.address() as net.AddressInfo).port}`)
    rb = await b.start('daemon')
    cleanups.unshift(() => b.stop())
    await rb.supervisor.waitForReservation(AbortSignal.timeout(20_000))
    ra = await a.start('client')
    cleanups.unshift(() => a.stop())
  })

  after(async () => {
    held?.destroy()
    for (const fn of cleanups) {
      await fn().catch(() => {})
    }
  })

  it('resets both local sockets and lets go of the session', async () => {
    const opened: Session[] = []
    const listener = await sessionProxy(ra, b, 'hold', opened)
    cleanups.unshift(() => listener.close())
    const socket = await connect(listener.address.port)
    const near = receiveAll(socket)
    socket.write('hello')
    await waitFor(() => held !== undefined && opened.length === 1, 'session open')
    assert.equal(rb.acceptedSessions?.size, 1)
    // No way back: the only relay is gone for good.
    await relay.stop()
    const [mine, theirs] = await Promise.all([near, far])
    assert.equal(mine.error, 'ECONNRESET')
    assert.equal(theirs?.error, 'ECONNRESET')
    assert.equal(opened[0]?.state, 'over')
    await waitFor(() => ra.sessions.size === 0 && rb.acceptedSessions?.size === 0, 'sessions freed')
    assert.deepEqual(
      [ra.sessions.counts(), rb.acceptedSessions?.counts()].map((c) => [c?.open, c?.expired]),
      [
        [0, 1],
        [0, 1],
      ],
    )
  })
})

describe('a session whose opener the peer stops authorizing', { timeout: 120_000 }, () => {
  it('ends on the opening side at once, not at the end of the grace period', async (t) => {
    const root = await tempDir(t)
    const relay = await startTestRelay(root)
    t.after(() => relay.stop())
    const held: net.Socket[] = []
    const server = net.createServer({ allowHalfOpen: true }, (socket) => {
      socket.on('error', () => {})
      held.push(socket)
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    t.after(() => {
      for (const socket of held) {
        socket.destroy()
      }
      return new Promise((resolve) => server.close(resolve))
    })
    const b = await createTestNode(root, 'b', relay)
    const a = await createTestNode(root, 'a', relay)
    for (const n of [a, b]) {
      await relay.authorize(n.peerId)
    }
    await b.authorize(a.peerId)
    await b.addService('hold', `127.0.0.1:${(server.address() as net.AddressInfo).port}`)
    const rb = await b.start('daemon')
    t.after(() => b.stop())
    await rb.supervisor.waitForReservation(AbortSignal.timeout(20_000))
    const ra = await a.start('client')
    t.after(() => a.stop())
    const opened: Session[] = []
    const listener = await sessionProxy(ra, b, 'hold', opened)
    t.after(() => listener.close())
    const socket = await connect(listener.address.port)
    const near = receiveAll(socket)
    socket.write('hello')
    await waitFor(() => held.length === 1 && opened[0]?.attached === true, 'session open')

    // What `peerup auth remove` does on b: the file, then the running daemon's reload, which
    // hangs up on a. a's way back is refused by b's gater from now on (the grace period is 2 min).
    const started = performance.now()
    await removeAuthorizedPeer(path.join(b.dir, 'authorized_keys'), a.peerId)
    await rb.reloadAuthorized()
    const mine = await near
    const tookMs = performance.now() - started
    t.diagnostic(`revoked → the opener's socket reset after ${tookMs.toFixed(0)} ms (${mine.error})`)
    assert.equal(mine.error, 'ECONNRESET')
    assert.equal(opened[0]?.state, 'over')
    assert.ok(tookMs < 20_000, `the session ended ${tookMs.toFixed(0)} ms after the revocation`)
  })
})

describe('a path that goes silent (a NAT that forgot its state)', { timeout: 120_000 }, () => {
  let relay: TestRelay
  let nat: Forwarder
  let ra: NodeRuntime
  let b: TestNode
  let service: Awaited<ReturnType<typeof startTransferServer>>
  const opened: Session[] = []
  const idleOpened: Session[] = []
  const hashed = { bytes: 0, reply: '' }
  let listener: Listener
  let idleListener: Listener
  const cleanups: Array<() => Promise<unknown>> = []

  before(async () => {
    const root = await tempDir({ after: (fn) => cleanups.push(fn) })
    relay = await startTestRelay(root)
    cleanups.unshift(() => relay.stop())
    // a reaches the relay only through the "NAT".
    const relayPort = Number(/\/tcp\/(\d+)\//.exec(relay.address)?.[1])
    nat = await startForwarder(relayPort)
    cleanups.unshift(() => nat.close())
    // The relay is known by the NAT's address only, as a relay behind a router's port forward is.
    const natAddress = relay.address.replace(`/tcp/${relayPort}/`, `/tcp/${nat.port}/`)
    await editConfigFile(relay.configFile, relayConfigSchema, (doc) =>
      doc.setIn(['network', 'announce_addresses'], doc.createNode([natAddress.replace(/\/p2p\/.*$/, '')])),
    )
    await relay.restart()
    service = await startTransferServer(16 * MiB)
    cleanups.unshift(() => service.close())
    b = await createTestNode(root, 'b', relay)
    const a = await createTestNode(root, 'a', relay, { relays: [natAddress] })
    for (const n of [a, b]) {
      await relay.authorize(n.peerId)
    }
    await b.authorize(a.peerId)
    await b.addService('xfer', `127.0.0.1:${service.port}`)
    // Reads everything, then answers with its sha256 (hex): silent while the client is.
    const hashServer = net.createServer({ allowHalfOpen: true }, (socket) => {
      const hash = createHash('sha256')
      socket.on('error', () => {})
      socket.on('data', (chunk: Buffer) => {
        hash.update(chunk)
        hashed.bytes += chunk.length
      })
      socket.once('end', () => {
        hashed.reply = hash.digest('hex')
        socket.end(hashed.reply)
      })
    })
    await new Promise<void>((resolve) => hashServer.listen(0, '127.0.0.1', resolve))
    cleanups.unshift(() => new Promise((resolve) => hashServer.close(resolve)))
    await b.addService('hash', `127.0.0.1:${(hashServer.address() as net.AddressInfo).port}`)
    const rb = await b.start('daemon')
    cleanups.unshift(() => b.stop())
    await rb.supervisor.waitForReservation(AbortSignal.timeout(20_000))
    ra = await a.start('client')
    cleanups.unshift(() => a.stop())
    listener = await sessionProxy(ra, b, 'xfer', opened)
    cleanups.unshift(() => listener.close())
    idleListener = await sessionProxy(ra, b, 'hash', idleOpened)
    cleanups.unshift(() => idleListener.close())
  })

  after(async () => {
    for (const fn of cleanups) {
      await fn().catch(() => {})
    }
  })

  it('with bytes in flight: the silence is noticed, the session attaches anew, bytes intact', async () => {
    const before = service.transfers.length
    const openedBefore = opened.length
    const socket = await connect(listener.address.port)
    const received = receiveAll(socket)
    const sent = await sendInTwo(socket, 16 * MiB, 2 * MiB, async () => {
      await waitFor(() => opened.length > openedBefore && opened.at(-1)?.attached === true, 'session open')
      const session = opened.at(-1) as Session
      nat.blackhole()
      await waitFor(() => session.state === 'detached', 'silence noticed', 30_000)
      await waitFor(() => session.attached, 'attached anew', 30_000)
    })
    const got = await received
    await waitFor(() => service.transfers.length > before, 'service side done')
    const far = service.transfers[before]
    assert.equal(got.error, undefined)
    assert.equal(far?.receivedHash, sent.hash)
    assert.equal(got.hash, far?.sentHash)
  })

  it('idle: the dead connection is closed within seconds, and the session comes back', async () => {
    const socket = await connect(idleListener.address.port)
    const reply = receiveAll(socket)
    const sent = await sendInTwo(socket, 2 * MiB, 64 * 1024, async () => {
      await waitFor(() => idleOpened[0]?.attached === true, 'session open')
      const session = idleOpened[0] as Session
      // Nothing in flight either way once the service has read it: only the pings of
      // src/p2p/liveness.ts can notice.
      await waitFor(() => hashed.bytes === 64 * 1024, 'service read the first part')
      nat.blackhole()
      await waitFor(() => session.state === 'detached', 'silence noticed', 30_000)
      await waitFor(() => session.attached, 'attached anew', 30_000)
    })
    const got = await reply
    assert.equal(got.error, undefined)
    assert.equal(got.received, 64)
    assert.equal(hashed.reply, sent.hash)
  })
})
