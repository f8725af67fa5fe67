/**
 * What a proxy holds in memory while its reader does not read: a fast service sends 128 MiB to a
 * client that paused; once the service is held back, the ArrayBuffers this process holds (the
 * proxy's two nodes and its sockets) are measured after a full GC and reported. A job of its own
 * (`npm run test:memory`), apart from the behaviour tests: its figure depends on the machine's
 * load, and it says what it measured when it fails.
 */

import assert from 'node:assert/strict'
import type * as net from 'node:net'
import { test } from 'node:test'
import { configureLogging } from '../../src/log/index.ts'
import {
  arrayBufferBytes,
  connectTcp,
  receiveAll,
  sendRandom,
  startProxy,
  waitForStall,
} from '../helpers/libp2p-pair.ts'

configureLogging({ level: 'warn' })

const MiB = 1024 * 1024

/**
 * ArrayBuffer bytes the process may hold while the reader is paused: about one yamux window (4
 * MiB) per direction and hop, socket write queues, and a byte held twice in user space (plain in
 * one socket's queue, encrypted in the next). Without backpressure it is everything written: 128 MiB
 * or more.
 */
const MEMORY_BOUND = 48 * MiB

for (const flowControl of [false, true]) {
  const label = flowControl ? ' (flow-controlled frames)' : ''
  test(`a paused reader: memory held by the proxy stays bounded${label}`, { timeout: 60_000 }, async (t) => {
    const state = { written: 0, sent: undefined as Promise<string> | undefined }
    const { listener } = await startProxy(t, {
      onServiceSocket: (socket: net.Socket) => {
        state.sent = sendRandom(socket, 128 * MiB, { onWritten: (n) => (state.written += n) })
      },
      flowControl,
    })
    const before = arrayBufferBytes()
    const client = await connectTcp(t, listener.address.port)
    client.pause()
    const written = await waitForStall(() => state.written)
    const held = arrayBufferBytes() - before
    t.diagnostic(
      `held ${(held / MiB).toFixed(1)} MiB of ArrayBuffers (bound ${MEMORY_BOUND / MiB} MiB) with ${(written / MiB).toFixed(1)} MiB written to a paused reader`,
    )
    assert.ok(held < MEMORY_BOUND, `held ${(held / MiB).toFixed(1)} MiB, more than ${MEMORY_BOUND / MiB} MiB`)
    const received = await receiveAll(client)
    assert.equal(received.bytes, 128 * MiB)
    assert.equal(received.sha256, await state.sent)
  })
}
