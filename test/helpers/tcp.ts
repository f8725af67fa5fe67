/**
 * Local TCP endpoints for proxy tests: a service that takes an upload and sends a download, with
 * both directions hashed, and a client that does the same through a proxy.
 */

import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import * as net from 'node:net'

/** What one side sent and received. */
export interface Transfer {
  sent: number
  sentHash: string
  received: number
  receivedHash: string
  /** The socket ended with an error (reset) instead of a clean end. */
  error: string | undefined
}

/** Writes `total` random bytes to `socket` with backpressure, then half-closes; hashes what it wrote. */
export async function sendRandom(socket: net.Socket, total: number): Promise<{ sent: number; hash: string }> {
  const hash = createHash('sha256')
  let sent = 0
  while (sent < total) {
    const chunk = randomBytes(Math.min(64 * 1024, total - sent))
    hash.update(chunk)
    sent += chunk.length
    if (!socket.write(chunk)) {
      await new Promise<void>((resolve, reject) => {
        const onErr = (err: Error): void => reject(err)
        socket.once('error', onErr)
        socket.once('drain', () => {
          socket.off('error', onErr)
          resolve()
        })
      })
    }
  }
  socket.end()
  return { sent, hash: hash.digest('hex') }
}

/** Reads `socket` to its end, hashing it. */
export function receiveAll(
  socket: net.Socket,
): Promise<{ received: number; hash: string; error: string | undefined }> {
  const hash = createHash('sha256')
  let received = 0
  return new Promise((resolve) => {
    socket.on('data', (chunk: Buffer) => {
      received += chunk.length
      hash.update(chunk)
    })
    let error: string | undefined
    socket.once('error', (err: NodeJS.ErrnoException) => {
      error = err.code ?? err.message
    })
    socket.once('close', () => resolve({ received, hash: hash.digest('hex'), error }))
  })
}

/** Both directions of one connection at once. */
export async function exchange(socket: net.Socket, upload: number): Promise<Transfer> {
  const [recv, sent] = await Promise.all([
    receiveAll(socket),
    sendRandom(socket, upload).catch(() => ({ sent: -1, hash: '' })),
  ])
  return {
    sent: sent.sent,
    sentHash: sent.hash,
    received: recv.received,
    receivedHash: recv.hash,
    error: recv.error,
  }
}

/** A service that, per connection, receives an upload and sends `download` bytes; reports each transfer. */
export async function startTransferServer(download: number): Promise<{
  port: number
  transfers: Transfer[]
  connections: number
  /** The transfer whose upload hashed to `receivedHash`, once it is over. */
  transfer(receivedHash: string): Promise<Transfer>
  close(): Promise<void>
}> {
  const transfers: Transfer[] = []
  const waiters: Array<{ hash: string; resolve: (t: Transfer) => void }> = []
  const sockets = new Set<net.Socket>()
  const state = { connections: 0 }
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    state.connections++
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
    exchange(socket, download).then((t) => {
      transfers.push(t)
      for (const w of waiters.filter((x) => x.hash === t.receivedHash)) {
        waiters.splice(waiters.indexOf(w), 1)
        w.resolve(t)
      }
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    port: (server.address() as net.AddressInfo).port,
    transfers,
    get connections() {
      return state.connections
    },
    transfer: (hash) => {
      const done = transfers.find((t) => t.receivedHash === hash)
      return done === undefined
        ? new Promise((resolve) => waiters.push({ hash, resolve }))
        : Promise.resolve(done)
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy()
        server.close(() => resolve())
      }),
  }
}

/**
 * Moves `bytes` each way through `socket` (a tunnel to `server`, which sends as many) and checks
 * that both ends saw the same bytes and a clean end.
 */
export async function checkedExchange(
  socket: net.Socket,
  server: { transfer(receivedHash: string): Promise<Transfer> },
  bytes: number,
): Promise<void> {
  const mine = await exchange(socket, bytes)
  assert.equal(mine.error, undefined, 'the connection ended cleanly')
  assert.equal(mine.received, bytes)
  const theirs = await server.transfer(mine.sentHash)
  assert.equal(theirs.received, bytes)
  assert.equal(mine.receivedHash, theirs.sentHash, 'the download arrived intact')
}

/** A port nothing listens on now (on 127.0.0.1). */
export async function freePort(): Promise<number> {
  const server = net.createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as net.AddressInfo
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

/** Connects to 127.0.0.1:`port` with half-open allowed. */
export function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true })
    socket.once('connect', () => resolve(socket))
    socket.once('error', reject)
  })
}

/** A TCP forwarder to 127.0.0.1:`target`: a stand-in for a NAT router between a node and a relay. */
export interface Forwarder {
  port: number
  /** Connections forwarded so far. */
  readonly connections: number
  /**
   * What a NAT does when it forgets its state (a reboot, `conntrack -F`): the connections through
   * it go silent — nothing passes either way, nothing is closed — while new ones pass.
   */
  blackhole(): void
  close(): Promise<void>
}

/** Starts a {@link Forwarder} on a free port of 127.0.0.1. */
export async function startForwarder(target: number): Promise<Forwarder> {
  const pairs = new Set<[net.Socket, net.Socket]>()
  const silent: net.Socket[] = []
  const state = { connections: 0 }
  const server = net.createServer((inbound) => {
    state.connections++
    const outbound = net.connect({ port: target, host: '127.0.0.1' })
    const pair: [net.Socket, net.Socket] = [inbound, outbound]
    pairs.add(pair)
    for (const s of pair) {
      s.on('error', () => {})
      s.once('close', () => {
        pairs.delete(pair)
        inbound.destroy()
        outbound.destroy()
      })
    }
    inbound.pipe(outbound)
    outbound.pipe(inbound)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    port: (server.address() as net.AddressInfo).port,
    get connections() {
      return state.connections
    },
    blackhole: () => {
      for (const [inbound, outbound] of pairs) {
        inbound.unpipe(outbound)
        outbound.unpipe(inbound)
        inbound.pause()
        outbound.pause()
        silent.push(inbound, outbound)
      }
      pairs.clear()
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        for (const s of [...[...pairs].flat(), ...silent]) {
          s.destroy()
        }
      }),
  }
}

/** Sends `first` bytes, awaits `between`, then sends the rest of `total` and half-closes. */
export async function sendInTwo(
  socket: net.Socket,
  total: number,
  first: number,
  between: () => Promise<void>,
): Promise<{ sent: number; hash: string }> {
  const hash = createHash('sha256')
  let sent = 0
  const write = async (n: number): Promise<void> => {
    const chunk = randomBytes(n)
    hash.update(chunk)
    sent += n
    if (!socket.write(chunk)) {
      await new Promise((resolve) => socket.once('drain', resolve))
    }
  }
  while (sent < first) {
    await write(Math.min(64 * 1024, first - sent))
  }
  await between()
  while (sent < total) {
    await write(Math.min(64 * 1024, total - sent))
  }
  socket.end()
  return { sent, hash: hash.digest('hex') }
}

/** A local TCP service that sends back what it receives (and ends when its client ends). */
export async function startEcho(): Promise<{ port: number; close: () => Promise<void> }> {
  const sockets = new Set<net.Socket>()
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s)
    s.on('error', () => {})
    s.once('close', () => sockets.delete(s))
    s.pipe(s)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) {
          s.destroy()
        }
        server.close(() => resolve())
      }),
  }
}

/** A client of the echo service that counts what comes back, and waits for a count. */
export function echoClient(socket: net.Socket) {
  let received = 0
  const waiters: Array<{ n: number; resolve: () => void }> = []
  socket.on('error', () => {})
  socket.on('data', (d: Buffer) => {
    received += d.length
    for (const w of [...waiters]) {
      if (received >= w.n) {
        waiters.splice(waiters.indexOf(w), 1)
        w.resolve()
      }
    }
  })
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()))
  return {
    closed,
    /** Sends `n` bytes and resolves once all of them came back. */
    roundTrip: (n: number): Promise<void> => {
      const want = received + n
      const back = new Promise<void>((resolve) => waiters.push({ n: want, resolve }))
      socket.write(Buffer.alloc(n, 7))
      return back
    },
  }
}
