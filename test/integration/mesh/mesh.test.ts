/**
 * Three real nodes — relay, A, B — with gating on everywhere, all in this process on 127.0.0.1.
 * A reaches a TCP service on B through the relay.
 */

import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { createLogger } from '../../../src/log/index.ts'
import { PeerRefusedError, PeerUnreachableError } from '../../../src/p2p/errors.ts'
import { startProxyListener } from '../../../src/proxy/listener.ts'
import { tempDir } from '../../helpers/cli.ts'
import { createTestNode, startTestRelay, type TestNode, type TestRelay } from '../../helpers/mesh.ts'
import { connect, exchange, startTransferServer } from '../../helpers/tcp.ts'

const MiB = 1024 * 1024

describe('mesh through a relay', { timeout: 180_000 }, () => {
  let relay: TestRelay
  let a: TestNode
  let b: TestNode
  let service: Awaited<ReturnType<typeof startTransferServer>>
  const cleanups: Array<() => Promise<unknown>> = []

  before(async () => {
    const root = await tempDir({ after: (fn) => cleanups.push(fn) })
    relay = await startTestRelay(root)
    cleanups.unshift(() => relay.stop())
    a = await createTestNode(root, 'a', relay)
    b = await createTestNode(root, 'b', relay)
    await relay.authorize(a.peerId)
    await relay.authorize(b.peerId)
    await b.authorize(a.peerId)
    service = await startTransferServer(64 * MiB)
    cleanups.unshift(() => service.close())
    await b.addService('xfer', `127.0.0.1:${service.port}`)
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
    const listener = await startProxyListener({
      host: '127.0.0.1',
      port: 0,
      log: createLogger('proxy'),
      openStream: async (signal) => (await rt.openService(b.peerId, svc, { signal })).stream,
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
    const small = await startTransferServer(256 * 1024)
    cleanups.unshift(() => small.close())
    await b.stop()
    await b.addService('small', `127.0.0.1:${small.port}`)
    const rb = await b.start('daemon')
    await rb.supervisor.waitForReservation(AbortSignal.timeout(20_000))
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
    t.after(async () => {
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
    const rd = await d.start('daemon')
    t.after(() => d.stop())
    // D is connected to the relay but never gets a reservation, so nobody can reach it through it.
    await waitFor(() => rd.supervisor.status().every((s) => s.connected))
    await new Promise((resolve) => setTimeout(resolve, 1500))
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
    await relay.restart()
    const listener = await proxyTo(a, 'xfer')
    // Retry until B has its reservation back; the test's timeout bounds how long "back" may take.
    for (;;) {
      const socket = await connect(listener.address.port)
      const client = await exchange(socket, 1 * MiB)
      if (client.error === undefined && client.received === 64 * MiB) {
        break
      }
      await new Promise((resolve) => setTimeout(resolve, 250))
    }
    assert.ok(b.runtime?.supervisor.status().every((s) => s.reserved))
  })
})

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
