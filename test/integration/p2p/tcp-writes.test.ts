/**
 * Regression test of patches/@libp2p+tcp+11.0.28.patch: what one `sendData()` hands the TCP socket
 * (noise's length prefixes, ciphertexts and tags, several buffers per message) leaves in one
 * `writev`, not one write system call per buffer. Unpatched, the bench profiles showed 25–47 % of
 * every hop's CPU in socket writes (docs/benchmarks.md).
 */

import assert from 'node:assert/strict'
import { once } from 'node:events'
import * as net from 'node:net'
import { test } from 'node:test'
import type { Stream } from '@libp2p/interface'
import { SERVICE_HANDLE_OPTIONS } from '../../../src/proxy/constants.ts'
import { createNodePair } from '../../helpers/libp2p-pair.ts'

const MiB = 1024 * 1024
const CHUNK = 64 * 1024

test('a stream over TCP + noise + yamux costs one socket write per sent chunk, not one per buffer', {
  timeout: 30_000,
}, async (t) => {
  const pair = await createNodePair(t)
  const received = Promise.withResolvers<number>()
  await pair.server.handle(
    '/test/sink/1.0.0',
    (stream: Stream) => {
      let n = 0
      stream.addEventListener('message', (e) => {
        n += e.data.byteLength
      })
      stream.addEventListener('remoteCloseWrite', () => received.resolve(n))
    },
    SERVICE_HANDLE_OPTIONS,
  )
  const stream = await pair.openStream('/test/sink/1.0.0')
  const port = Number(/\/tcp\/(\d+)/.exec(pair.connection.remoteAddr.toString())?.[1])

  // Socket writes on the client's connection to the server, as the stream layer issues them.
  const calls = { write: 0, writev: 0 }
  const proto = net.Socket.prototype as unknown as Record<'_write' | '_writev', (...a: unknown[]) => void>
  const { _write, _writev } = proto
  proto._write = function (this: net.Socket, ...a: unknown[]) {
    if (this.remotePort === port) calls.write++
    return _write.apply(this, a)
  }
  proto._writev = function (this: net.Socket, ...a: unknown[]) {
    if (this.remotePort === port) calls.writev++
    return _writev.apply(this, a)
  }
  t.after(() => {
    proto._write = _write
    proto._writev = _writev
  })

  const total = 16 * MiB
  const chunk = new Uint8Array(CHUNK).fill(7)
  for (let sent = 0; sent < total; sent += CHUNK) {
    if (!stream.send(chunk)) {
      await once(stream as unknown as EventTarget, 'drain')
    }
  }
  await stream.close()
  assert.equal(await received.promise, total)

  const chunks = total / CHUNK
  const writes = calls.write + calls.writev
  // Each 64 KiB chunk is a yamux frame in two noise messages: five buffers or more (prefix,
  // ciphertext pieces, tag). Batched, that is at most one write per chunk (fewer when the
  // socket was busy and chunks queued up); one per buffer would be over five.
  assert.ok(writes <= chunks * 1.1, `${writes} socket writes for ${chunks} chunks (${JSON.stringify(calls)})`)
  assert.ok(calls.writev > 0, 'the buffers of a chunk leave together')
})
