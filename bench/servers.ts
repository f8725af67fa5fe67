/**
 * The benchmark's servers, run inside lab namespaces with the Node that runs the harness:
 *
 * - `node bench/servers.ts serve <host> <port>`: the target service (see wire.ts) — throughput sink
 *   with sampled byte checks, and echo;
 * - `node bench/servers.ts forward <host> <port> <to-host> <to-port>`: a plain user-space TCP
 *   forwarder, the raw-TCP baseline of the relay hop (what a relay costs without any protocol).
 *
 * Both print `listening <host>:<port>` once ready, and run until killed.
 *
 * @packageDocumentation
 */

import * as net from 'node:net'
import {
  BLOCK_BYTES,
  isSampled,
  MODE_ECHO,
  MODE_THROUGHPUT,
  payloadBlock,
  payloadMiB,
  REPLY_ERROR,
  REPLY_OK,
  THROUGHPUT_HEADER_BYTES,
} from './wire.ts'

function serve(host: string, port: number): void {
  const blocks = new Map<number, Buffer>()
  const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
    socket.on('error', () => socket.destroy())
    let head = Buffer.alloc(0)
    const onHead = (chunk: Buffer): void => {
      head = Buffer.concat([head, chunk])
      const mode = head[0]
      if (mode === MODE_ECHO) {
        socket.off('data', onHead)
        const rest = head.subarray(1)
        if (rest.length > 0) {
          socket.write(rest)
        }
        socket.pipe(socket)
        return
      }
      if (mode === MODE_THROUGHPUT) {
        if (head.length < THROUGHPUT_HEADER_BYTES) {
          return
        }
        socket.off('data', onHead)
        const length = Number(head.readBigUInt64BE(1))
        const seed = head.readUInt32BE(9)
        let block = blocks.get(seed)
        if (block === undefined) {
          block = payloadBlock(seed)
          blocks.set(seed, block)
        }
        sink(socket, length, block, head.subarray(THROUGHPUT_HEADER_BYTES))
        return
      }
      socket.end(Buffer.from([REPLY_ERROR, ...Buffer.from(`unknown mode ${mode}`)]))
    }
    socket.on('data', onHead)
  })
  server.listen(port, host, () => console.log(`listening ${host}:${port}`))
}

/** Counts `length` bytes, compares the sampled MiBs with the expected payload, then answers. */
function sink(socket: net.Socket, length: number, block: Buffer, first: Buffer): void {
  const totalMiB = Math.ceil(length / BLOCK_BYTES)
  let received = 0
  let sample: Buffer | undefined
  let sampleIndex = -1
  let error: string | undefined
  const take = (chunk: Buffer): void => {
    let offset = 0
    while (offset < chunk.length) {
      const index = Math.floor(received / BLOCK_BYTES)
      const inBlock = received % BLOCK_BYTES
      const n = Math.min(chunk.length - offset, BLOCK_BYTES - inBlock)
      if (isSampled(index, totalMiB) && error === undefined) {
        if (sampleIndex !== index) {
          sample = Buffer.alloc(Math.min(BLOCK_BYTES, length - index * BLOCK_BYTES))
          sampleIndex = index
        }
        chunk.copy(sample as Buffer, inBlock, offset, offset + n)
        if (inBlock + n === (sample as Buffer).length) {
          const want = payloadMiB(block, index).subarray(0, (sample as Buffer).length)
          if (!want.equals(sample as Buffer)) {
            error = `MiB ${index} differs from what was sent`
          }
        }
      }
      received += n
      offset += n
    }
    if (received > length) {
      error ??= `received ${received} bytes, more than the ${length} announced`
    }
    if (received >= length) {
      socket.off('data', take)
      socket.end(
        error === undefined ? Buffer.from([REPLY_OK]) : Buffer.from([REPLY_ERROR, ...Buffer.from(error)]),
      )
    }
  }
  socket.on('data', take)
  socket.on('end', () => {
    if (received < length) {
      socket.end(Buffer.from([REPLY_ERROR, ...Buffer.from(`ended after ${received} of ${length} bytes`)]))
    }
  })
  if (first.length > 0) {
    take(first)
  }
}

function forward(host: string, port: number, toHost: string, toPort: number): void {
  const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (client) => {
    const upstream = net.connect({ host: toHost, port: toPort, allowHalfOpen: true, noDelay: true })
    const fail = (): void => {
      client.resetAndDestroy()
      upstream.resetAndDestroy()
    }
    client.on('error', fail)
    upstream.on('error', fail)
    client.pipe(upstream)
    upstream.pipe(client)
  })
  server.listen(port, host, () => console.log(`listening ${host}:${port}`))
}

const [mode, ...args] = process.argv.slice(2)
if (mode === 'serve' && args.length === 2) {
  serve(args[0] as string, Number(args[1]))
} else if (mode === 'forward' && args.length === 4) {
  forward(args[0] as string, Number(args[1]), args[2] as string, Number(args[3]))
} else {
  console.error('usage: servers.ts serve <host> <port> | forward <host> <port> <to-host> <to-port>')
  process.exit(2)
}
