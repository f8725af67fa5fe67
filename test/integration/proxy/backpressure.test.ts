import assert from 'node:assert/strict'
import type * as net from 'node:net'
import { test } from 'node:test'
import { configureLogging } from '../../../src/log/index.ts'
import type { ServiceEvent } from '../../../src/proxy/service.ts'
import { connectTcp, receiveAll, sendRandom, startProxy, waitForStall } from '../../helpers/libp2p-pair.ts'

configureLogging({ level: (process.env.LOG_LEVEL as 'warn') ?? 'warn' })

const MiB = 1024 * 1024

/**
 * Bytes in flight between the service's writes and the client's reads: kernel socket buffers (four
 * sockets), the yamux window, and whatever the proxy holds. Without backpressure it would approach
 * everything the service has written.
 */
const IN_FLIGHT_BOUND = 32 * MiB

/** A service that writes `size` random bytes as fast as the proxy accepts them. */
function fastSender(size: number) {
  const state = { written: 0, sent: undefined as Promise<string> | undefined }
  const onServiceSocket = (socket: net.Socket): void => {
    state.sent = sendRandom(socket, size, { onWritten: (n) => (state.written += n) })
  }
  return { state, onServiceSocket }
}

for (const flowControl of [false, true]) {
  const label = flowControl ? ' (flow-controlled frames)' : ''
  test(`paused reader, fast sender: the sender is held back, no reset${label}`, {
    timeout: 30_000,
  }, async (t) => {
    const events: ServiceEvent[] = []
    const sender = fastSender(128 * MiB)
    const { listener } = await startProxy(t, {
      onServiceSocket: sender.onServiceSocket,
      onServiceEvent: (e) => events.push(e),
      flowControl,
    })
    const client = await connectTcp(t, listener.address.port)
    client.pause()

    // The event here is the absence of progress: nothing announces that a sender is blocked.
    // (What the process holds meanwhile is measured by test/memory/proxy-memory.test.ts.)
    const written = await waitForStall(() => sender.state.written)
    t.diagnostic(`service blocked after ${(written / MiB).toFixed(1)} MiB`)
    assert.ok(written < IN_FLIGHT_BOUND, `service wrote ${written} bytes to a reader that read nothing`)
    assert.equal(events.filter((e) => e.type === 'closed').length, 0, 'the session is still open')

    const received = await receiveAll(client)
    assert.equal(received.bytes, 128 * MiB)
    assert.equal(received.sha256, await sender.state.sent)
  })

  test(`slow reader: in-flight bytes stay bounded for the whole transfer${label}`, {
    timeout: 30_000,
  }, async (t) => {
    const total = 64 * MiB
    const sender = fastSender(total)
    const { listener } = await startProxy(t, { onServiceSocket: sender.onServiceSocket, flowControl })
    const client = await connectTcp(t, listener.address.port)

    // Read 1 MiB, then stop for 20 ms: about 40 MB/s, well below what the proxy moves on loopback.
    let read = 0
    let sinceBreak = 0
    let maxInFlight = 0
    const received = receiveAll(client, (n) => {
      read += n
      sinceBreak += n
      maxInFlight = Math.max(maxInFlight, sender.state.written - read)
      if (sinceBreak >= MiB) {
        sinceBreak = 0
        client.pause()
        setTimeout(() => client.resume(), 20)
      }
    })
    const result = await received
    t.diagnostic(`max in flight ${(maxInFlight / MiB).toFixed(1)} MiB of ${total / MiB} MiB`)
    assert.equal(result.bytes, total)
    assert.equal(result.sha256, await sender.state.sent)
    assert.ok(maxInFlight < IN_FLIGHT_BOUND, `${maxInFlight} bytes were in flight at once`)
  })
}
