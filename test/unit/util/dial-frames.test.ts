/** The framing of dial streams (src/util/dial-frames.ts) over a real Unix socket pair. */

import assert from 'node:assert/strict'
import { once } from 'node:events'
import * as net from 'node:net'
import * as path from 'node:path'
import { describe, it, type TestContext } from 'node:test'
import {
  type FramedEnd,
  framedEnd,
  MAX_FRAME_PAYLOAD,
  RemoteResetError,
} from '../../../src/util/dial-frames.ts'
import { tempDir } from '../../helpers/cli.ts'

async function pair(t: TestContext): Promise<[FramedEnd, FramedEnd]> {
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
  return [framedEnd(client), framedEnd(sock)]
}

function readAll(r: NodeJS.ReadableStream): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    r.on('data', (c: Buffer) => chunks.push(c))
    r.once('end', () => resolve(Buffer.concat(chunks)))
    r.once('error', reject)
  })
}

describe('dial frames', () => {
  it('carries bytes both ways, with half-close each way', async (t) => {
    const [a, b] = await pair(t)
    const big = Buffer.alloc(3 * MAX_FRAME_PAYLOAD + 17)
    for (let i = 0; i < big.length; i++) big[i] = i % 251
    const atB = readAll(b.readable)
    a.writable.end(big)
    assert.ok((await atB).equals(big))
    // a's direction ended; b can still answer.
    const atA = readAll(a.readable)
    b.writable.end(Buffer.from('answer'))
    assert.equal((await atA).toString(), 'answer')
  })

  it('a reset reaches the other side as an error, not an end', async (t) => {
    const [a, b] = await pair(t)
    const atB = readAll(b.readable)
    a.writable.write(Buffer.from('partial'))
    await new Promise<void>((resolve) => setImmediate(resolve))
    a.reset(new Error('the far side failed'))
    await assert.rejects(atB, (err: unknown) => {
      assert.ok(err instanceof RemoteResetError)
      assert.match(err.message, /the far side failed/)
      return true
    })
  })

  it('a socket cut without a FIN or RESET is an error too', async (t) => {
    const dir = await tempDir(t)
    const file = path.join(dir, 's.sock')
    const server = net.createServer((s) => s.end('raw bytes, no frames'))
    await new Promise<void>((resolve) => server.listen(file, resolve))
    t.after(() => new Promise<void>((resolve) => server.close(() => resolve())))
    const client = net.connect({ path: file })
    const f = framedEnd(client)
    await assert.rejects(readAll(f.readable))
  })
})
