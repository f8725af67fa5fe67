/**
 * Clients of the gateway (src/daemon/gateway.ts) written out byte by byte, for tests that need
 * the socket after the handshake (a transfer through it) or the exact reply code: SOCKS5 CONNECT
 * by domain name, with or without username/password, and HTTP CONNECT.
 */

import { once } from 'node:events'
import type * as net from 'node:net'
import { connect } from './tcp.ts'

/** Reads exactly `n` bytes (or what came before the end). */
async function read(socket: net.Socket, n: number): Promise<Buffer> {
  const chunks: Buffer[] = []
  let have = 0
  while (have < n) {
    const chunk = socket.read(Math.min(n - have, socket.readableLength || n - have)) as Buffer | null
    if (chunk !== null) {
      chunks.push(chunk)
      have += chunk.length
      continue
    }
    if (socket.readableEnded || socket.destroyed) {
      break
    }
    await Promise.race([once(socket, 'readable'), once(socket, 'end'), once(socket, 'close')])
  }
  return Buffer.concat(chunks)
}

/**
 * A SOCKS5 CONNECT to `host:port` through the gateway on 127.0.0.1:`gateway`: the reply code, and
 * the socket (ready for the tunnel's bytes when the code is 0). `login` fails the handshake's
 * authentication step with `auth: 'refused'` when wrong.
 */
export async function socksConnect(
  gateway: number,
  host: string,
  port: number,
  login?: { user: string; password: string },
): Promise<{ socket: net.Socket; reply: number | 'refused' | 'closed' }> {
  const socket = await connect(gateway)
  socket.on('error', () => {})
  socket.write(Buffer.from([5, 1, login === undefined ? 0 : 2]))
  const choice = await read(socket, 2)
  if (choice.length < 2 || choice[1] === 0xff) {
    return { socket, reply: 'refused' }
  }
  if (login !== undefined) {
    const u = Buffer.from(login.user)
    const p = Buffer.from(login.password)
    socket.write(Buffer.concat([Buffer.from([1, u.length]), u, Buffer.from([p.length]), p]))
    const status = await read(socket, 2)
    if (status[1] !== 0) {
      return { socket, reply: 'refused' }
    }
  }
  const name = Buffer.from(host)
  const portBytes = Buffer.alloc(2)
  portBytes.writeUInt16BE(port)
  socket.write(Buffer.concat([Buffer.from([5, 1, 0, 3, name.length]), name, portBytes]))
  const reply = await read(socket, 10)
  return { socket, reply: reply.length < 10 ? 'closed' : (reply[1] as number) }
}

/** An HTTP CONNECT to `authority` through 127.0.0.1:`gateway`: the status and the socket after the head. */
export async function httpConnect(
  gateway: number,
  authority: string,
  headers: string[] = [],
): Promise<{ socket: net.Socket; status: number; head: string }> {
  const socket = await connect(gateway)
  socket.on('error', () => {})
  socket.write(
    `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n${headers.map((h) => `${h}\r\n`).join('')}\r\n`,
  )
  let head = Buffer.alloc(0)
  while (!head.includes('\r\n\r\n')) {
    const byte = await read(socket, 1)
    if (byte.length === 0) {
      break
    }
    head = Buffer.concat([head, byte])
  }
  const text = head.toString('latin1')
  return { socket, status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0), head: text }
}
