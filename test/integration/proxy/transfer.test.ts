import assert from 'node:assert/strict'
import { once } from 'node:events'
import type * as net from 'node:net'
import { type TestContext, test } from 'node:test'
import { configureLogging } from '../../../src/log/index.ts'
import type { ListenerEvent } from '../../../src/pipe/listener.ts'
import type { PipeResult } from '../../../src/pipe/pipe.ts'
import type { ServiceEvent } from '../../../src/proxy/service.ts'
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

/**
 * Why the proxy reset a connection, from both of its sides, told when a transfer fails: the
 * client's ECONNRESET alone does not say which side gave up, or why.
 */
function proxyResets() {
  const seen: string[] = []
  const note = (side: string, e: { type: string; result?: PipeResult }): void => {
    if (e.type === 'closed' && e.result?.reset === true) {
      seen.push(
        `${side}: ${e.result.error?.name}: ${e.result.error?.message} (in ${e.result.bytesIn}, out ${e.result.bytesOut})`,
      )
    }
  }
  return {
    options: {
      onListenerEvent: (e: ListenerEvent) => note('listener', e),
      onServiceEvent: (e: ServiceEvent) => note('service', e),
      retry: {
        attempts: 2,
        baseMs: 10,
        onRetry: (info: { error: unknown }) =>
          seen.push(`listener retried the open after: ${String(info.error)}`),
      },
    },
    async explain<T>(t: TestContext, p: Promise<T>): Promise<T> {
      try {
        return await p
      } catch (err) {
        // The proxy's own 'closed' events may come a moment after the client saw the reset.
        await new Promise((resolve) => setImmediate(resolve))
        t.diagnostic(`proxy resets: ${seen.join('; ') || 'none seen'}`)
        throw err
      }
    },
  }
}

/**
 * The service connection that carried the transfer: the one that received `uploaded`. Usually the
 * only one; when the listener's first attempt to open the stream failed after the service side had
 * already dialled the service (startProxy retries once), that first service connection was reset,
 * as it must be, and the retry carried the transfer.
 */
async function carrier(
  t: TestContext,
  seen: Array<Promise<{ received: string; sent: string }>>,
  uploaded: string,
): Promise<{ received: string; sent: string }> {
  const settled = await Promise.allSettled(seen)
  const done = settled.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []))
  if (settled.length > 1) {
    t.diagnostic(`${settled.length} service connections: ${settled.map((r) => r.status).join(', ')}`)
  }
  const server = done.find((d) => d.received === uploaded) ?? done[0]
  if (server === undefined) {
    throw (settled[0] as PromiseRejectedResult | undefined)?.reason ?? new Error('no service connection')
  }
  assert.equal(done.length, 1, 'one service connection carried the transfer')
  return server
}

// Plain, as on yamux, and framed with credit-based flow control, as on WebRTC (src/proxy/flow.ts).
for (const flowControl of [false, true]) {
  const label = flowControl ? ' (flow-controlled frames)' : ''
  test(`64 MiB up, then 64 MiB down after the client half-closes${label}`, { timeout: 60_000 }, async (t) => {
    const seen: Array<Promise<{ received: string; sent: string }>> = []
    const resets = proxyResets()
    const { listener } = await startProxy(t, {
      onServiceSocket: uploadThenDownload(64 * MiB, seen),
      flowControl,
      ...resets.options,
    })
    const client = await connectTcp(t, listener.address.port)

    const started = performance.now()
    const receiving = receiveAll(client)
    const uploaded = await resets.explain(t, sendRandom(client, 64 * MiB))
    const downloaded = await resets.explain(t, receiving)
    const seconds = (performance.now() - started) / 1000
    t.diagnostic(
      `128 MiB through the proxy in ${seconds.toFixed(2)} s (${((128 * MiB) / 1e6 / seconds).toFixed(0)} MB/s)`,
    )

    const server = await carrier(t, seen, uploaded)
    assert.equal(server.received, uploaded, 'service received exactly what the client sent')
    assert.equal(downloaded.bytes, 64 * MiB)
    assert.equal(downloaded.sha256, server.sent, 'client received exactly what the service sent')
  })

  test(`64 MiB down, then 64 MiB up after the service half-closes${label}`, {
    timeout: 60_000,
  }, async (t) => {
    const seen: Array<Promise<{ received: string; sent: string }>> = []
    const resets = proxyResets()
    const { listener } = await startProxy(t, {
      onServiceSocket: downloadThenUpload(64 * MiB, seen),
      flowControl,
      ...resets.options,
    })
    const client = await connectTcp(t, listener.address.port)
    const closed = once(client, 'close')

    const downloaded = await resets.explain(t, receiveAll(client))
    assert.equal(downloaded.bytes, 64 * MiB)
    // The client's write side is still open after the service's end reached it.
    const uploaded = await resets.explain(t, sendRandom(client, 64 * MiB))

    const server = await carrier(t, seen, uploaded)
    assert.equal(downloaded.sha256, server.sent)
    assert.equal(server.received, uploaded)
    await closed
  })
}
