/**
 * Three real nodes — relay, A, B — with gating on everywhere, all in this process on 127.0.0.1.
 * A reaches a TCP service on B through the relay.
 */

import assert from 'node:assert/strict'
import { once } from 'node:events'
import * as net from 'node:net'
import { after, before, describe, it } from 'node:test'
import { createLogger } from '../../../src/log/index.ts'
import { PeerRefusedError, PeerUnreachableError } from '../../../src/p2p/errors.ts'
import { startListener } from '../../../src/pipe/listener.ts'
import { serviceStreamEnd } from '../../../src/pipe/stream.ts'
import type { RelayRefusal } from '../../../src/relay/server.ts'
import { tempDir } from '../../helpers/cli.ts'
import { receiveAll, sendRandom, waitForStall } from '../../helpers/libp2p-pair.ts'
import { createTestNode, startRelayAndPair, type TestNode, type TestRelay } from '../../helpers/mesh.ts'
import { connect, exchange, startTransferServer } from '../../helpers/tcp.ts'

const MiB = 1024 * 1024

describe('mesh through a relay', { timeout: 180_000 }, () => {
  let relay: TestRelay
  let a: TestNode
  let b: TestNode
  let service: Awaited<ReturnType<typeof startTransferServer>>
  let small: Awaited<ReturnType<typeof startTransferServer>>
  let fast: Awaited<ReturnType<typeof startFastSender>>
  const cleanups: Array<() => Promise<unknown>> = []

  before(async () => {
    const root = await tempDir({ after: (fn) => cleanups.push(fn) })
    ;({ relay, a, b } = await startRelayAndPair(root))
    cleanups.unshift(() => relay.stop())
    service = await startTransferServer(64 * MiB)
    cleanups.unshift(() => service.close())
    small = await startTransferServer(256 * 1024)
    cleanups.unshift(() => small.close())
    fast = await startFastSender(128 * MiB)
    cleanups.unshift(() => fast.close())
    await b.addService('xfer', `127.0.0.1:${service.port}`)
    await b.addService('small', `127.0.0.1:${small.port}`)
    await b.addService('fast', `127.0.0.1:${fast.port}`)
    const rb = await b.start('daemon')
    cleanups.unshift(() => b.stop())
    await rb.supervisor.waitForReservation(AbortSignal.timeout(20_000))
    await a.start('client')
    cleanups.unshift(() => a.stop())
  })

  after(async () => {
    for (const fn of cleanups) {
      await fn().catch(() => {})
    }
  })

  async function proxyTo(node: TestNode, svc: string) {
    const rt = node.runtime
    assert.ok(rt)
    const listener = await startListener({
      host: '127.0.0.1',
      port: 0,
      log: createLogger('proxy'),
      open: async (signal) => serviceStreamEnd((await rt.openService(b.peerId, svc, { signal })).stream),
    })
    cleanups.unshift(() => listener.close())
    return listener
  }

  it('reaches B through the relay and says so', async () => {
    const reached = await a.runtime?.reach(b.peerId)
    assert.equal(reached?.path.type, 'RELAYED')
    assert.equal(reached?.path.relay, relay.peerId)
    assert.equal(reached?.path.limited, false)
  })

  it('moves 64 MiB each way byte-exact, with half-close both ways', async () => {
    const listener = await proxyTo(a, 'xfer')
    const before = service.transfers.length
    const socket = await connect(listener.address.port)
    const client = await exchange(socket, 64 * MiB)
    await waitFor(() => service.transfers.length > before)
    const server = service.transfers.at(-1)
    assert.ok(server)
    assert.equal(client.error, undefined)
    assert.equal(server.error, undefined)
    assert.equal(server.received, 64 * MiB)
    assert.equal(server.receivedHash, client.sentHash)
    assert.equal(client.received, 64 * MiB)
    assert.equal(client.receivedHash, server.sentHash)
  })

  it('carries 100 parallel connections, all byte-exact', async () => {
    const listener = await proxyTo(a, 'small')
    const results = await Promise.all(
      Array.from({ length: 100 }, async () => exchange(await connect(listener.address.port), 256 * 1024)),
    )
    await waitFor(() => small.transfers.length === 100)
    const serverByHash = new Map(small.transfers.map((t) => [t.receivedHash, t]))
    for (const r of results) {
      assert.equal(r.error, undefined)
      assert.equal(r.received, 256 * 1024)
      const s = serverByHash.get(r.sentHash)
      assert.ok(s, 'the server received exactly what a client sent')
      assert.equal(s.sentHash, r.receivedHash)
    }
  })

  it('holds a fast sender back while the reader is paused or slow: no reset', async () => {
    const listener = await proxyTo(a, 'fast')
    const nextSent = fast.next()
    const client = net.connect({ host: '127.0.0.1', port: listener.address.port, allowHalfOpen: true })
    cleanups.unshift(async () => client.destroy())
    await once(client, 'connect')
    client.pause()
    const sent = await nextSent
    // Paused: the sender on B must stop after what the path can hold (sockets, yamux windows on both
    // hops, the relay's bounded forwarding), and nothing may pile up in memory meanwhile. The event
    // here is the absence of progress, which nothing announces.
    const stalledAt = await waitForStall(() => fast.written)
    assert.ok(stalledAt < 48 * MiB, `B's service wrote ${stalledAt} bytes to a reader that read nothing`)
    // Slow: 1 MiB, then a 20 ms break, to the end. The stream must survive and arrive whole.
    let sinceBreak = 0
    const received = receiveAll(client, (n) => {
      sinceBreak += n
      if (sinceBreak >= MiB) {
        sinceBreak = 0
        client.pause()
        setTimeout(() => client.resume(), 20)
      }
    })
    const result = await received
    assert.equal(result.bytes, 128 * MiB)
    assert.equal(result.sha256, await sent.hash)
  })

  it('refuses a peer B does not authorize, and says so', async (t) => {
    const root = await tempDir(t)
    const c = await createTestNode(root, 'c', relay)
    await relay.authorize(c.peerId)
    const rc = await c.start('client')
    t.after(() => c.stop())
    await assert.rejects(rc.reach(b.peerId), (err: unknown) => {
      assert.ok(err instanceof PeerRefusedError, `got ${String(err)}`)
      assert.match(err.message, /not authorized by the peer/)
      return true
    })
  })

  it('an unknown source gets only a limited circuit, on which services do not run', async (t) => {
    const root = await tempDir(t)
    const e = await createTestNode(root, 'e', relay)
    await b.authorize(e.peerId)
    const re = await e.start('client')
    // The relay lets a peer it does not know reach only a member that is pairing.
    relay.handle.invites.open(b.peerId, 60_000)
    t.after(async () => {
      relay.handle.invites.close(b.peerId)
      await e.stop()
      const { removeAuthorizedPeer } = await import('../../../src/auth/ops.ts')
      await removeAuthorizedPeer(`${b.dir}/authorized_keys`, e.peerId)
      await b.runtime?.reloadAuthorized()
    })
    const reached = await re.reach(b.peerId)
    assert.equal(reached.path.type, 'RELAYED')
    assert.equal(reached.path.limited, true)
    await assert.rejects(re.openService(b.peerId, 'xfer', { attempts: 1 }))
  })

  it('refuses a reservation to a peer the relay does not authorize', async (t) => {
    const root = await tempDir(t)
    const d = await createTestNode(root, 'd', relay)
    await b.authorize(d.peerId)
    const refusalOf = (peer: string, what: string) =>
      new Promise<RelayRefusal>((resolve) => {
        const onRefusal = (evt: CustomEvent<RelayRefusal>): void => {
          if (evt.detail.peer === peer && evt.detail.what === what) {
            relay.handle.events.removeEventListener('refusal', onRefusal)
            resolve(evt.detail)
          }
        }
        relay.handle.events.addEventListener('refusal', onRefusal)
      })
    const refused = refusalOf(d.peerId, 'reservation')
    const rd = await d.start('daemon')
    t.after(() => d.stop())
    // D is connected to the relay but never gets a reservation, so nobody can reach it through it.
    const refusal = await refused
    assert.match(refusal.reason, /not in relay_authorized_keys/)
    assert.equal(rd.supervisor.status()[0]?.reserved, false)
    await assert.rejects(
      b.runtime?.reach(d.peerId) as Promise<unknown>,
      (err: unknown) => err instanceof PeerUnreachableError,
    )
  })

  it('closes the open connection of a revoked peer, resetting its proxied TCP', async () => {
    const listener = await proxyTo(a, 'xfer')
    const socket = await connect(listener.address.port)
    // An upload that takes longer than the revocation: the transfer is cut, not completed.
    const transfer = exchange(socket, 512 * MiB)
    await waitFor(() =>
      (b.runtime?.node.getConnections() ?? []).some((c) => c.remotePeer.toString() === a.peerId),
    )
    const { removeAuthorizedPeer } = await import('../../../src/auth/ops.ts')
    await removeAuthorizedPeer(`${b.dir}/authorized_keys`, a.peerId)
    await b.runtime?.reloadAuthorized()
    const cut = await transfer
    assert.ok(cut.error !== undefined || cut.received < 64 * MiB, 'the open transfer did not complete')
    await waitFor(
      () => !(b.runtime?.node.getConnections() ?? []).some((c) => c.remotePeer.toString() === a.peerId),
    )
    await assert.rejects(a.runtime?.reach(b.peerId) as Promise<unknown>, PeerRefusedError)
    await b.authorize(a.peerId)
  })

  it('regains the reservation after the relay restarts, and new connections work', async () => {
    const supervisor = b.runtime?.supervisor
    assert.ok(supervisor)
    const lost = reservationChange(supervisor, false)
    await relay.restart()
    await lost
    await supervisor.waitForReservation(AbortSignal.timeout(30_000))
    const listener = await proxyTo(a, 'xfer')
    const client = await exchange(await connect(listener.address.port), 1 * MiB)
    assert.equal(client.error, undefined)
    assert.equal(client.received, 64 * MiB)
  })
})

/** Resolves when the supervisor's reservation state on any relay becomes `reserved`. */
function reservationChange(
  supervisor: NonNullable<TestNode['runtime']>['supervisor'],
  reserved: boolean,
): Promise<void> {
  return new Promise((resolve) => {
    const off = supervisor.onChange((e) => {
      if (e.reserved === reserved) {
        off()
        resolve()
      }
    })
  })
}

/** Polls `cond` (cheap, in-process state) until true, bounded. */
async function waitFor(cond: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!cond()) {
    if (Date.now() > deadline) {
      throw new Error('condition not met in time')
    }
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

/** A service that sends `size` random bytes to each client as fast as it is let; one client at a time. */
async function startFastSender(size: number) {
  // Resolved with a box: a promise resolved with a promise would wait for the whole transfer.
  const waiting: Array<(sent: { hash: Promise<string> }) => void> = []
  const sockets = new Set<net.Socket>()
  const state = { written: 0 }
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket)
    socket.on('error', () => {})
    socket.once('close', () => sockets.delete(socket))
    state.written = 0
    const hash = sendRandom(socket, size, { onWritten: (n) => (state.written += n) })
    hash.catch(() => {})
    waiting.shift()?.({ hash })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    port: (server.address() as net.AddressInfo).port,
    get written() {
      return state.written
    },
    /** The sha256 of what the next client is sent. */
    next: () => new Promise<{ hash: Promise<string> }>((resolve) => waiting.push(resolve)),
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy()
        server.close(() => resolve())
      }),
  }
}
