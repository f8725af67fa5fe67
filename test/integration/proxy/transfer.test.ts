import assert from 'node:assert/strict'
import { once } from 'node:events'
import type * as net from 'node:net'
import { test } from 'node:test'
import { configureLogging } from '../../../src/log/index.ts'
import { connectTcp, receiveAll, sendRandom, startProxy } from '../../helpers/libp2p-pair.ts'

configureLogging({ level: 'warn' })

const MiB = 1024 * 1024

/** A service that reads until the client half-closes, then answers with `size` bytes and ends. */
function uploadThenDownload(size: number, seen: Array<Promise<{ received: string; sent: string }>>) {
  return (socket: net.Socket): void => {
    seen.push(
      (async () => {
        const received = await receiveAll(socket)
        const sent = await sendRandom(socket, size)
        return { received: received.sha256, sent }
      })(),
    )
  }
}

/** A service that sends `size` bytes and half-closes first, then reads what the client sends. */
function downloadThenUpload(size: number, seen: Array<Promise<{ received: string; sent: string }>>) {
  return (socket: net.Socket): void => {
    seen.push(
      (async () => {
        const receiving = receiveAll(socket)
        const sent = await sendRandom(socket, size)
        return { received: (await receiving).sha256, sent }
      })(),
    )
  }
}

// Plain, as on yamux, and framed with credit-based flow control, as on WebRTC (src/proxy/flow.ts).
for (const flowControl of [false, true]) {
  const label = flowControl ? ' (flow-controlled frames)' : ''
  test(`64 MiB up, then 64 MiB down after the client half-closes${label}`, { timeout: 60_000 }, async (t) => {
    const seen: Array<Promise<{ received: string; sent: string }>> = []
    const { listener } = await startProxy(t, {
      onServiceSocket: uploadThenDownload(64 * MiB, seen),
      flowControl,
    })
    const client = await connectTcp(t, listener.address.port)

    const started = performance.now()
    const receiving = receiveAll(client)
    const uploaded = await sendRandom(client, 64 * MiB)
    const downloaded = await receiving
    const seconds = (performance.now() - started) / 1000
    t.diagnostic(
      `128 MiB through the proxy in ${seconds.toFixed(2)} s (${((128 * MiB) / 1e6 / seconds).toFixed(0)} MB/s)`,
    )

    const server = await seen[0]
    assert.ok(server)
    assert.equal(server.received, uploaded, 'service received exactly what the client sent')
    assert.equal(downloaded.bytes, 64 * MiB)
    assert.equal(downloaded.sha256, server.sent, 'client received exactly what the service sent')
  })

  test(`64 MiB down, then 64 MiB up after the service half-closes${label}`, {
    timeout: 60_000,
  }, async (t) => {
    const seen: Array<Promise<{ received: string; sent: string }>> = []
    const { listener } = await startProxy(t, {
      onServiceSocket: downloadThenUpload(64 * MiB, seen),
      flowControl,
    })
    const client = await connectTcp(t, listener.address.port)
    const closed = once(client, 'close')

    const downloaded = await receiveAll(client)
    assert.equal(downloaded.bytes, 64 * MiB)
    // The client's write side is still open after the service's end reached it.
    const uploaded = await sendRandom(client, 64 * MiB)

    const server = await seen[0]
    assert.ok(server)
    assert.equal(downloaded.sha256, server.sent)
    assert.equal(server.received, uploaded)
    await closed
  })
}
