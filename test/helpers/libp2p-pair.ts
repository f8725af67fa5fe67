/**
 * Real libp2p nodes in the test process: TCP on 127.0.0.1, noise, yamux with the proxy's
 * {@link YAMUX_OPTIONS}, no services. Every node is stopped in `t.after`.
 */

import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import * as net from 'node:net'
import type { Readable, Writable } from 'node:stream'
import type { TestContext } from 'node:test'
import * as v8 from 'node:v8'
import * as vm from 'node:vm'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import type { Connection, ConnectionGater, Libp2p, Stream } from '@libp2p/interface'
import { tcp } from '@libp2p/tcp'
import { createLibp2p } from 'libp2p'
import { createLogger } from '../../src/log/index.ts'
import { YAMUX_OPTIONS } from '../../src/p2p/constants.ts'
import { type Listener, type ListenerInit, startListener } from '../../src/pipe/listener.ts'
import { flowControlledProtocol, serviceStreamEnd } from '../../src/pipe/stream.ts'
import { SERVICE_DIAL_OPTIONS, SERVICE_HANDLE_OPTIONS } from '../../src/proxy/constants.ts'
import { createServiceHandler, type ServiceEvent, type ServiceHandler } from '../../src/proxy/service.ts'

/** Options of {@link createTestNode}. */
export interface TestNodeOptions {
  /** Overrides of the yamux options (for tests that show why the defaults were changed). */
  yamux?: Parameters<typeof yamux>[0]
  connectionGater?: ConnectionGater
  /** Told of every stream the remote side opens, as this node's muxer takes it (before any handler). */
  onRemoteStream?: (count: number) => void
}

/**
 * yamux, with `onRemoteStream` told of each stream the remote opens — also the "early" ones a
 * muxer holds while the connection is not handed over yet, which no libp2p event reports.
 */
function watchedYamux(options: TestNodeOptions): ReturnType<typeof yamux> {
  const make = yamux(options.yamux ?? YAMUX_OPTIONS)
  const onRemoteStream = options.onRemoteStream
  if (onRemoteStream === undefined) {
    return make
  }
  return () => {
    const factory = make()
    return {
      protocol: factory.protocol,
      createStreamMuxer: (maConn: Parameters<typeof factory.createStreamMuxer>[0]) => {
        const muxer = factory.createStreamMuxer(maConn) as ReturnType<typeof factory.createStreamMuxer> & {
          onRemoteStream(stream: unknown): void
        }
        const take = muxer.onRemoteStream.bind(muxer)
        let count = 0
        muxer.onRemoteStream = (stream) => {
          take(stream)
          onRemoteStream(++count)
        }
        return muxer
      },
    }
  }
}

/** Starts one node listening on an ephemeral loopback port; it is stopped when the test ends. */
export async function createTestNode(t: TestContext, options: TestNodeOptions = {}): Promise<Libp2p> {
  const node = await createLibp2p({
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [watchedYamux(options)],
    // One lost ping under load must not abort a connection full of proxied streams (libp2p's monitor aborts a connection on one failed ping).
    connectionMonitor: { abortConnectionOnPingFailure: false },
    // Every test node connects from 127.0.0.1: the default of 5 inbound connections per second per
    // host would refuse some of them.
    connectionManager: { inboundConnectionThreshold: 1000 },
    ...(options.connectionGater === undefined ? {} : { connectionGater: options.connectionGater }),
  })
  t.after(() => node.stop())
  return node
}

/** Two connected nodes: `client` dialled `server`. */
export interface NodePair {
  client: Libp2p
  server: Libp2p
  connection: Connection
  /** Opens a stream from client to server for `protocol`, with the proxy's dial options. */
  openStream(protocol: string, signal?: AbortSignal): Promise<Stream>
}

/** Creates two nodes and connects the first to the second; `server` options apply to the second only. */
export async function createNodePair(
  t: TestContext,
  options: TestNodeOptions & { server?: TestNodeOptions } = {},
): Promise<NodePair> {
  const [client, server] = await Promise.all([
    createTestNode(t, options),
    createTestNode(t, { ...options, ...options.server }),
  ])
  const addr = server.getMultiaddrs()[0]
  if (addr === undefined) {
    throw new Error('test node has no listen address')
  }
  const connection = await client.dial(addr, { signal: AbortSignal.timeout(10_000) })
  return {
    client,
    server,
    connection,
    openStream: (protocol, signal) =>
      connection.newStream(protocol, {
        ...SERVICE_DIAL_OPTIONS,
        signal: signal ?? AbortSignal.timeout(10_000),
      }),
  }
}

// ---- TCP endpoints for proxy tests ----

/** A TCP server on 127.0.0.1 that hands each connection to `onSocket`; closed when the test ends. */
export interface TestServer {
  port: number
  /** Connections accepted so far. */
  accepted: number
  /** Sockets still open. */
  sockets: Set<net.Socket>
}

/** Starts a half-open-capable TCP server; every socket it accepted is destroyed when the test ends. */
export async function startTcpServer(
  t: TestContext,
  onSocket: (socket: net.Socket) => void,
): Promise<TestServer> {
  const sockets = new Set<net.Socket>()
  const state: TestServer = { port: 0, accepted: 0, sockets }
  const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
    state.accepted++
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    // Tests assert on errors through their own listeners; this one only keeps a stray reset from
    // crashing the process.
    socket.on('error', () => {})
    onSocket(socket)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  state.port = (server.address() as net.AddressInfo).port
  t.after(async () => {
    for (const s of sockets) {
      s.destroy()
    }
    await new Promise<void>((resolve) => server.close(() => resolve()))
  })
  return state
}

/** Connects to 127.0.0.1:`port` with half-open support; destroyed when the test ends. */
export async function connectTcp(t: TestContext, port: number): Promise<net.Socket> {
  const socket = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true, noDelay: true })
  // Tests observe errors with their own listeners (receiveAll, socketFailure); this one keeps the
  // reset that cleanup causes (listener closed before this socket) from failing a passed test.
  socket.on('error', () => {})
  t.after(() => {
    socket.destroy()
  })
  await once(socket, 'connect')
  return socket
}

/** Writes `total` random bytes with backpressure, optionally ends, and returns their sha256. */
export async function sendRandom(
  socket: Writable,
  total: number,
  options: { end?: boolean; chunkSize?: number; onWritten?: (n: number) => void } = {},
): Promise<string> {
  const hash = createHash('sha256')
  const chunkSize = options.chunkSize ?? 64 * 1024
  // One random block reused at shifting offsets keeps generation cheap while every chunk differs.
  const block = randomBytes(chunkSize * 2)
  let sent = 0
  let i = 0
  while (sent < total) {
    const n = Math.min(chunkSize, total - sent)
    const offset = (i * 4099) % chunkSize
    const chunk = Buffer.from(block.subarray(offset, offset + n))
    chunk.writeUInt32BE(i >>> 0, 0)
    i++
    hash.update(chunk)
    sent += n
    const ok = socket.write(chunk)
    options.onWritten?.(n)
    if (!ok) {
      await waitForDrain(socket)
    }
  }
  if (options.end !== false) {
    socket.end()
  }
  return hash.digest('hex')
}

async function waitForDrain(w: Writable): Promise<void> {
  if (w.destroyed) {
    throw new Error('destroyed while writing')
  }
  const ac = new AbortController()
  try {
    await Promise.race([
      once(w, 'drain', { signal: ac.signal }),
      once(w, 'close', { signal: ac.signal }).then(() => {
        throw new Error('closed while waiting for drain')
      }),
    ])
  } finally {
    ac.abort()
  }
}

/** What {@link receiveAll} read. */
export interface Received {
  bytes: number
  sha256: string
}

/**
 * Reads until a clean end and returns the byte count and sha256. Rejects when the stream errors
 * (ECONNRESET) or closes without an end: a reset must never look like a complete transfer.
 */
export function receiveAll(socket: Readable, onData?: (n: number) => void): Promise<Received> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256')
    let bytes = 0
    let ended = false
    socket.on('data', (chunk: Buffer) => {
      bytes += chunk.byteLength
      hash.update(chunk)
      onData?.(chunk.byteLength)
    })
    socket.once('end', () => {
      ended = true
      resolve({ bytes, sha256: hash.digest('hex') })
    })
    socket.once('error', reject)
    socket.once('close', () => {
      if (!ended) {
        reject(Object.assign(new Error(`closed without an end after ${bytes} bytes`), { code: 'NO_END' }))
      }
    })
    // A 'data' listener does not restart a stream that was paused explicitly.
    socket.resume()
  })
}

/** Resolves with the error a socket fails with; rejects if it ends cleanly instead. */
export function socketFailure(socket: net.Socket): Promise<NodeJS.ErrnoException> {
  return new Promise((resolve, reject) => {
    socket.once('error', resolve)
    socket.once('end', () => reject(new Error('socket ended cleanly where a reset was expected')))
    socket.resume()
  })
}

// ---- a whole proxy: TCP client → listener → libp2p → service handler → TCP service ----

/** Options of {@link startProxy}. */
export interface ProxyFixtureOptions {
  /** The local TCP service behind the exposing node. */
  onServiceSocket: (socket: net.Socket) => void
  /** Service name; the protocol is `/peerup/<name>/1.0.0`. */
  name?: string
  isAllowed?: (peerId: string) => boolean
  onServiceEvent?: (event: ServiceEvent) => void
  /** Replaces the listener's default retry options (tests use short delays). */
  retry?: ListenerInit['retry']
  /** Dial this instead of the test's TCP service (a closed port, a black hole). */
  localAddress?: string
  dialTimeoutMs?: number
  onListenerEvent?: ListenerInit['onConnection']
  /** Use the flow-controlled protocol (`/peerup/<name>/fc/1.0.0`, src/pipe/stream.ts). */
  flowControl?: boolean
}

/** A running proxy and everything under it. */
export interface ProxyFixture {
  pair: NodePair
  service: TestServer
  handler: ServiceHandler
  listener: Listener
  protocol: string
}

/** Nodes, a local TCP service, its handler and a client-side listener, all cleaned up after the test. */
export async function startProxy(t: TestContext, options: ProxyFixtureOptions): Promise<ProxyFixture> {
  const name = options.name ?? 'test'
  const protocol = options.flowControl === true ? flowControlledProtocol(name) : `/peerup/${name}/1.0.0`
  const log = createLogger('test.proxy')
  const pair = await createNodePair(t)
  const service = await startTcpServer(t, options.onServiceSocket)
  const handler = createServiceHandler({
    name,
    localAddress: options.localAddress ?? `127.0.0.1:${service.port}`,
    isAllowed: options.isAllowed ?? (() => true),
    dialTimeoutMs: options.dialTimeoutMs,
    log,
    onConnection: options.onServiceEvent,
  })
  await pair.server.handle(protocol, handler, SERVICE_HANDLE_OPTIONS)
  t.after(() => handler.close())
  const listener = await startListener({
    port: 0,
    open: async (signal) => serviceStreamEnd(await pair.openStream(protocol, signal)),
    log,
    retry: options.retry ?? { attempts: 2, baseMs: 10 },
    onConnection: options.onListenerEvent,
  })
  t.after(() => listener.close())
  return { pair, service, handler, listener, protocol }
}

// ---- measuring ----

/**
 * Resolves once `read()` has not changed for `quietMs`, with its last value. Used where the event is
 * the *absence* of progress (a sender blocked by backpressure), which no event announces.
 */
export async function waitForStall(
  read: () => number,
  options: { quietMs?: number; intervalMs?: number; signal?: AbortSignal } = {},
): Promise<number> {
  const quietMs = options.quietMs ?? 300
  const intervalMs = options.intervalMs ?? 50
  let last = read()
  let since = performance.now()
  while (performance.now() - since < quietMs) {
    await new Promise((resolve) => setTimeout(resolve, intervalMs))
    options.signal?.throwIfAborted()
    const now = read()
    if (now !== last) {
      last = now
      since = performance.now()
    }
  }
  return last
}

let collect: (() => void) | undefined

/** Bytes held in ArrayBuffers (Buffers, Uint8Arrays) after a full garbage collection. */
export function arrayBufferBytes(): number {
  if (collect === undefined) {
    // --expose-gc cannot be passed through `node --test`; enabling it at run time works in V8.
    v8.setFlagsFromString('--expose-gc')
    collect = vm.runInNewContext('gc') as () => void
  }
  // V8 frees the backing stores of dead ArrayBuffers on a background thread after a GC, so right
  // after one the count can still include tens of MiB of garbage; the next GC first waits for that
  // sweep to finish.
  collect()
  collect()
  return process.memoryUsage().arrayBuffers
}
