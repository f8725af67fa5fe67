/** The daemon's framed dial socket as an end (src/pipe/framed.ts), over a real Unix socket pair. */

import assert from 'node:assert/strict'
import { once } from 'node:events'
import * as net from 'node:net'
import * as path from 'node:path'
import { PassThrough } from 'node:stream'
import { describe, it, type TestContext } from 'node:test'
import { RemoteResetError } from '../../../src/pipe/errors.ts'
import { framedEnd, MAX_DIAL_FRAME_PAYLOAD } from '../../../src/pipe/framed.ts'
import { stdioEnd } from '../../../src/pipe/node.ts'
import { type PipeResult, pipe } from '../../../src/pipe/pipe.ts'
import { tempDir } from '../../helpers/cli.ts'

/** Two sockets of one Unix connection. */
async function socketPair(t: TestContext): Promise<[net.Socket, net.Socket]> {
  const dir = await tempDir(t)
  const file = path.join(dir, 's.sock')
  const server = net.createServer({ allowHalfOpen: true })
  await new Promise<void>((resolve) => server.listen(file, resolve))
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())))
  const accepted = once(server, 'connection') as Promise<[net.Socket]>
  const client = net.connect({ path: file, allowHalfOpen: true })
  await once(client, 'connect')
  const [sock] = await accepted
  t.after(() => {
    client.destroy()
    sock.destroy()
  })
  return [client, sock]
}

/** One side: what is written to `input` goes out framed; what comes in lands in `output`. */
function side(socket: net.Socket) {
  const input = new PassThrough()
  const output = new PassThrough()
  const chunks: Buffer[] = []
  output.on('data', (c: Buffer) => chunks.push(c))
  const done: Promise<PipeResult> = pipe(stdioEnd(input, output), framedEnd(socket))
  return { input, output, done, received: () => Buffer.concat(chunks) }
}

describe('the framed dial socket', () => {
  it('carries bytes both ways, larger than a frame, with half-close each way', async (t) => {
    const [x, y] = await socketPair(t)
    const a = side(x)
    const b = side(y)
    const big = Buffer.alloc(3 * MAX_DIAL_FRAME_PAYLOAD + 17)
    for (let i = 0; i < big.length; i++) big[i] = i % 251
    const bEnded = once(b.output, 'end')
    a.input.end(big)
    await bEnded
    assert.ok(b.received().equals(big))
    // a's direction ended; b can still answer.
    b.input.end(Buffer.from('answer'))
    const [ra, rb] = await Promise.all([a.done, b.done])
    assert.equal(a.received().toString(), 'answer')
    assert.deepEqual([ra.reset, rb.reset], [false, false])
    assert.deepEqual([ra.bytesOut, rb.bytesIn, rb.bytesOut, ra.bytesIn], [big.length, big.length, 6, 6])
  })

  it('a failure on one side reaches the other as a reset, with its reason, not as an end', async (t) => {
    const [x, y] = await socketPair(t)
    const a = side(x)
    const b = side(y)
    a.input.write(Buffer.from('partial'))
    await once(b.output, 'data')
    a.input.destroy(new Error('the far side failed'))
    const [ra, rb] = await Promise.all([a.done, b.done])
    assert.equal(ra.reset, true)
    assert.equal(rb.reset, true)
    assert.ok(rb.error instanceof RemoteResetError)
    assert.match(rb.error.message, /the far side failed/)
    assert.equal(b.output.destroyed, true, 'the reader sees a broken stream, not an end')
  })

  it('a socket cut without a FIN or RESET is a reset too', async (t) => {
    const dir = await tempDir(t)
    const file = path.join(dir, 's.sock')
    const server = net.createServer((s) => s.end('raw bytes, no frames'))
    await new Promise<void>((resolve) => server.listen(file, resolve))
    t.after(() => new Promise<void>((resolve) => server.close(() => resolve())))
    const client = net.connect({ path: file })
    await once(client, 'connect')
    const r = await side(client).done
    assert.equal(r.reset, true)
  })
})
