/**
 * The relay's forwarding of relayed connections (our patch of @libp2p/circuit-relay-v2, see
 * patches/): memory stays flat however many bytes are relayed, half-close and resets cross the
 * relay, and the per-connection data and duration limits still apply.
 *
 * The relay runs in a child process (test/fixtures/relay-fixture.ts) so that its RSS, read from
 * /proc/<pid>/status after a forced GC, is the relay's alone. A and B run in this process; B holds a
 * reservation and A dials B's circuit address explicitly.
 *
 * Manual measurements: `PEERUP_RELAY_TEST_MIB=1024` relays 1 GiB instead of 256 MiB;
 * `PEERUP_RELAY_TEST_NODE_FLAGS=''` runs the relay with V8's defaults (see {@link RELAY_NODE_FLAGS}).
 */

import * as assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { createHash, type Hash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { createInterface } from 'node:readline'
import { after, before, describe, it } from 'node:test'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { circuitRelayTransport } from '@libp2p/circuit-relay-v2'
import { identify } from '@libp2p/identify'
import type { Connection, Libp2p, Stream, StreamMessageEvent } from '@libp2p/interface'
import { tcp } from '@libp2p/tcp'
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'
import { YAMUX_OPTIONS } from '../../src/p2p/constants.ts'
import { assertRelayPatched, isRelayPatched } from '../../src/relay/patch-check.ts'
import type { FixtureReply, FixtureRequest } from '../fixtures/relay-fixture.ts'
import { waitForStall } from '../helpers/libp2p-pair.ts'

const FIXTURE = path.resolve(import.meta.dirname, '../fixtures/relay-fixture.ts')
const MiB = 1024 * 1024
const TRANSFER_BYTES = Number(process.env.PEERUP_RELAY_TEST_MIB ?? 256) * MiB
/** ≥ 64 KiB per send(): smaller writes cost throughput (docs/decisions/0005-data-plane.md). */
const CHUNK_BYTES = 64 * 1024
/** What the relay may hold on to while a connection that carried {@link TRANSFER_BYTES} is open. */
const MAX_RELAY_GROWTH_BYTES = 64 * MiB
/** Growth of the relay's buffers (`arrayBuffers`) after GC: relayed bytes it still references. */
const MAX_RELAY_BUFFERS_GROWTH_BYTES = 16 * MiB
/**
 * V8 flags of the relay process. With V8's default young generation (up to 3 × 16 MB semi-spaces) a
 * relay pushing 40–60 MB/s leaves 60–80 MB of dead buffers between scavenges and glibc keeps those
 * pages after GC: RSS ends 60–100 MB above idle although nothing is retained, right at the limit
 * above. 2 MB semi-spaces keep it within 20 MB at the same throughput (measured with 256 MiB and
 * 1 GiB); the production relay needs the same flag to stay under 150 MB.
 */
const RELAY_NODE_FLAGS = process.env.PEERUP_RELAY_TEST_NODE_FLAGS ?? '--max-semi-space-size=2'
const SINK_PROTOCOL = '/peerup-test/sink/1.0.0'
const HALF_CLOSE_PROTOCOL = '/peerup-test/half-close/1.0.0'
const SLOW_PROTOCOL = '/peerup-test/slow/1.0.0'
/**
 * What may be in flight between a sender and a reader that stopped: each hop's yamux window
 * (4 MiB), the relay's read and write buffers (up to 8 MiB each) and the TCP socket buffers.
 */
const MAX_IN_FLIGHT_BYTES = 32 * MiB
const STEP_TIMEOUT_MS = 20_000

/** Relay memory as seen from outside, after a forced GC in the relay. */
interface RelayMemory {
  rssBytes: number
  /** Of {@link rssBytes}: anonymous memory (heap, buffers, malloc), the rest is mapped files (code). */
  rssAnonBytes: number
  peakRssBytes: number
  circuits: number
  hopStreams: number
  heapUsedBytes: number
  heapTotalBytes: number
  arrayBuffersBytes: number
}

/** The relay child process. */
interface RelayProcess {
  addr: Multiaddr
  peerId: string
  /** Forces GC in the relay, then reads its RSS; with `circuits`, first waits for circuits to close. */
  measure(circuits?: number): Promise<RelayMemory>
  stop(): Promise<void>
}

function procStatusBytes(pid: number, field: 'VmRSS' | 'VmHWM' | 'RssAnon' | 'RssFile'): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8')
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)
  assert.ok(m !== null, `no ${field} in /proc/${pid}/status`)
  return Number(m[1]) * 1024
}

async function startRelayProcess(env: Record<string, string> = {}): Promise<RelayProcess> {
  const flags = RELAY_NODE_FLAGS.split(' ').filter((f) => f !== '')
  const child: ChildProcess = spawn(process.execPath, ['--expose-gc', ...flags, FIXTURE], {
    stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
    env: { ...process.env, ...env },
  })
  const exited = once(child, 'exit')
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL')
      await exited
    }
  }
  try {
    const lines = createInterface({ input: child.stdout! })
    const [line] = (await Promise.race([
      once(lines, 'line', { signal: AbortSignal.timeout(STEP_TIMEOUT_MS) }),
      exited.then(([code]) => {
        throw new Error(`relay fixture exited with ${code} before listening`)
      }),
    ])) as [string]
    const addr = multiaddr((JSON.parse(line) as { multiaddr: string }).multiaddr)
    const peerId = addr.getComponents().find((c) => c.name === 'p2p')?.value
    assert.ok(peerId !== undefined, `relay address without peer id: ${addr}`)
    let nextId = 0
    const measure = async (circuits?: number): Promise<RelayMemory> => {
      const id = nextId++
      const reply = new Promise<FixtureReply>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error('relay fixture did not answer gc+rss')),
          STEP_TIMEOUT_MS,
        )
        const onMessage = (msg: FixtureReply): void => {
          if (msg.id === id) {
            clearTimeout(timer)
            child.off('message', onMessage)
            resolve(msg)
          }
        }
        child.on('message', onMessage)
      })
      child.send({
        type: 'gc+rss',
        id,
        ...(circuits === undefined ? {} : { circuits }),
      } satisfies FixtureRequest)
      const r = await reply
      return {
        rssBytes: procStatusBytes(child.pid!, 'VmRSS'),
        rssAnonBytes: procStatusBytes(child.pid!, 'RssAnon'),
        peakRssBytes: procStatusBytes(child.pid!, 'VmHWM'),
        circuits: r.circuits,
        hopStreams: r.hopStreams,
        heapUsedBytes: r.memory.heapUsed,
        heapTotalBytes: r.memory.heapTotal,
        arrayBuffersBytes: r.memory.arrayBuffers,
      }
    }
    return { addr, peerId, measure, stop }
  } catch (err) {
    await stop()
    throw err
  }
}

async function createPeer(listen: string[]): Promise<Libp2p> {
  return createLibp2p({
    addresses: { listen },
    transports: [tcp(), circuitRelayTransport()],
    connectionEncrypters: [noise()],
    // The window must not exceed the read buffer, or a paused stream resets (docs/decisions/0005-data-plane.md).
    streamMuxers: [yamux(YAMUX_OPTIONS)],
    connectionMonitor: { abortConnectionOnPingFailure: false },
    connectionManager: { inboundConnectionThreshold: 1000 },
    services: { identify: identify() },
  })
}

/** Waits until `node` announces a circuit address through `relay`, i.e. holds a reservation there. */
async function reservedCircuit(node: Libp2p, relayPeerId: string): Promise<Multiaddr> {
  const signal = AbortSignal.timeout(STEP_TIMEOUT_MS)
  const marker = `/p2p/${relayPeerId}/p2p-circuit`
  const find = (): Multiaddr | undefined => node.getMultiaddrs().find((a) => a.toString().includes(marker))
  let found = find()
  while (found === undefined) {
    await once(node, 'self:peer:update', { signal })
    found = find()
  }
  return found
}

/** Resolves on the next 'drain' of `stream`; rejects if it closes first. Never `onDrain()` (docs/decisions/0005-data-plane.md). */
function drained(stream: Stream): Promise<void> {
  return new Promise((resolve, reject) => {
    const onDrain = (): void => {
      cleanup()
      resolve()
    }
    const onClose = (evt: Event): void => {
      cleanup()
      reject((evt as Event & { error?: Error }).error ?? new Error('stream closed while waiting for drain'))
    }
    const cleanup = (): void => {
      stream.removeEventListener('drain', onDrain)
      stream.removeEventListener('close', onClose)
    }
    stream.addEventListener('drain', onDrain)
    stream.addEventListener('close', onClose)
  })
}

const PATTERN = randomBytes(CHUNK_BYTES)

/**
 * Sends `total` bytes in 64 KiB chunks, each stamped with its index so that reordering changes the
 * hash; `progress.bytes` counts what the stream accepted so far.
 */
async function sendPattern(
  stream: Stream,
  total: number,
  hash: Hash,
  progress = { bytes: 0 },
): Promise<void> {
  for (let sent = 0, i = 0; sent < total; i++) {
    const n = Math.min(CHUNK_BYTES, total - sent)
    const buf = Buffer.from(PATTERN.subarray(0, n))
    if (n >= 4) {
      buf.writeUInt32BE(i, 0)
    }
    hash.update(buf)
    sent += n
    progress.bytes = sent
    if (!stream.send(buf)) {
      await drained(stream)
    }
  }
}

/** Counts and hashes what a stream receives, and tells when its remote closed for writing. */
class Received {
  bytes = 0
  readonly hash = createHash('sha256')
  readonly ended: Promise<number>
  #waiters: Array<{ bytes: number; resolve: () => void }> = []

  constructor(stream: Stream) {
    this.ended = new Promise((resolve, reject) => {
      // 'end' also fires when the stream is reset; the 'close' event below reports those.
      stream.addEventListener('end', () => {
        if (stream.status !== 'reset' && stream.status !== 'aborted') {
          resolve(this.bytes)
        }
      })
      stream.addEventListener('close', (evt) => {
        if (evt.error !== undefined) {
          reject(evt.error)
        }
      })
    })
    // Tests that cut a connection need not wait for this.
    this.ended.catch(() => {})
    // The test never stops reading, so 'message' is safe here: no pause needed.
    stream.addEventListener('message', (evt: StreamMessageEvent) => {
      for (const buf of evt.data instanceof Uint8Array ? [evt.data] : evt.data) {
        this.hash.update(buf)
      }
      this.bytes += evt.data.byteLength
      this.#waiters = this.#waiters.filter((w) => {
        if (this.bytes >= w.bytes) {
          w.resolve()
          return false
        }
        return true
      })
    })
  }

  /** Resolves once at least `bytes` arrived. */
  atLeast(bytes: number): Promise<void> {
    if (this.bytes >= bytes) {
      return Promise.resolve()
    }
    return new Promise((resolve) => this.#waiters.push({ bytes, resolve }))
  }
}

/** Registers `protocol` on `node`; resolves each inbound stream in arrival order. */
function inboundStreams(
  node: Libp2p,
  protocol: string,
  runOnLimitedConnection = false,
): () => Promise<Stream> {
  const queue: Stream[] = []
  const waiters: Array<(s: Stream) => void> = []
  node.handle(
    protocol,
    (stream) => {
      const w = waiters.shift()
      if (w === undefined) {
        queue.push(stream)
      } else {
        w(stream)
      }
    },
    { runOnLimitedConnection },
  )
  return () => {
    const s = queue.shift()
    return s === undefined ? new Promise((resolve) => waiters.push(resolve)) : Promise.resolve(s)
  }
}

/** Resolves when `node` sees `peer`'s relayed connection close. */
function relayedConnectionClosed(node: Libp2p, peer: string): Promise<Connection> {
  return new Promise((resolve) => {
    const onClose = (evt: CustomEvent<Connection>): void => {
      if (
        evt.detail.remotePeer.toString() === peer &&
        evt.detail.remoteAddr.toString().includes('/p2p-circuit')
      ) {
        node.removeEventListener('connection:close', onClose)
        resolve(evt.detail)
      }
    }
    node.addEventListener('connection:close', onClose)
  })
}

/** `p`, or a rejection naming `what` after `ms`: every wait of these tests is bounded. */
async function within<T>(p: Promise<T>, what: string, ms = STEP_TIMEOUT_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms)
  })
  try {
    return await Promise.race([p, timeout])
  } finally {
    clearTimeout(timer)
  }
}

function mb(bytes: number): string {
  return `${(bytes / 1e6).toFixed(1)} MB`
}

function describeMemory(m: RelayMemory): string {
  return `rss ${mb(m.rssBytes)} (anon ${mb(m.rssAnonBytes)}, peak ${mb(m.peakRssBytes)}), heap ${mb(m.heapUsedBytes)} of ${mb(m.heapTotalBytes)}, buffers ${mb(m.arrayBuffersBytes)}`
}

it('the installed @libp2p/circuit-relay-v2 carries our forwarding patch', () => {
  assert.equal(isRelayPatched(), true, 'run `npm install`: its postinstall applies patches/')
  assert.doesNotThrow(assertRelayPatched)
})

describe('relay forwarding (unlimited relayed connections)', { timeout: 120_000 }, () => {
  let relay: RelayProcess
  let a: Libp2p
  let b: Libp2p
  let circuit: Multiaddr
  let nextSink: () => Promise<Stream>
  let nextHalfClose: () => Promise<Stream>
  let nextSlow: () => Promise<Stream>

  before(async () => {
    relay = await startRelayProcess()
    ;[a, b] = await Promise.all([createPeer([]), createPeer(['/p2p-circuit'])])
    nextSink = inboundStreams(b, SINK_PROTOCOL)
    nextHalfClose = inboundStreams(b, HALF_CLOSE_PROTOCOL)
    nextSlow = inboundStreams(b, SLOW_PROTOCOL)
    await b.dial(relay.addr, { signal: AbortSignal.timeout(STEP_TIMEOUT_MS) })
    circuit = await reservedCircuit(b, relay.peerId)
    assert.equal(circuit.toString(), `${relay.addr}/p2p-circuit/p2p/${b.peerId}`)
  })

  after(async () => {
    await Promise.all([a?.stop(), b?.stop()])
    await relay?.stop()
  })

  it(`keeps relay memory flat while ${TRANSFER_BYTES / MiB} MiB cross an open relayed connection`, async (t) => {
    const conn = await a.dial(circuit, { signal: AbortSignal.timeout(STEP_TIMEOUT_MS) })
    assert.ok(conn.remoteAddr.toString().includes('/p2p-circuit'), 'A must reach B through the relay')
    const [stream, inbound] = await Promise.all([
      conn.newStream(SINK_PROTOCOL, { signal: AbortSignal.timeout(STEP_TIMEOUT_MS) }),
      nextSink(),
    ])
    const received = new Received(inbound)
    const idle = await relay.measure()

    const sentHash = createHash('sha256')
    const start = performance.now()
    const during = received.atLeast(TRANSFER_BYTES / 2).then(() => relay.measure())
    await sendPattern(stream, TRANSFER_BYTES, sentHash)
    await within(received.atLeast(TRANSFER_BYTES), 'B receives everything', 10 * STEP_TIMEOUT_MS)
    const seconds = (performance.now() - start) / 1000
    const whileOpen = await relay.measure()

    assert.equal(received.bytes, TRANSFER_BYTES)
    assert.equal(
      received.hash.digest('hex'),
      sentHash.digest('hex'),
      'relayed bytes differ from the sent ones',
    )
    t.diagnostic(
      `relayed ${TRANSFER_BYTES / MiB} MiB in ${seconds.toFixed(1)} s: ${mb(TRANSFER_BYTES / seconds)}/s`,
    )
    t.diagnostic(`relay idle:       ${describeMemory(idle)}`)
    t.diagnostic(`relay during:     ${describeMemory(await during)}`)
    t.diagnostic(`relay after, open: ${describeMemory(whileOpen)}`)
    assert.ok(
      whileOpen.arrayBuffersBytes - idle.arrayBuffersBytes < MAX_RELAY_BUFFERS_GROWTH_BYTES,
      `the relay still references ${mb(whileOpen.arrayBuffersBytes)} of buffers after GC: ` +
        'is patches/@libp2p+circuit-relay-v2+*.patch applied?',
    )
    assert.ok(
      whileOpen.rssBytes - idle.rssBytes < MAX_RELAY_GROWTH_BYTES,
      `relay RSS grew by ${mb(whileOpen.rssBytes - idle.rssBytes)} while the relayed connection is open ` +
        `(limit ${mb(MAX_RELAY_GROWTH_BYTES)}): is patches/@libp2p+circuit-relay-v2+*.patch applied?`,
    )

    const bClosed = relayedConnectionClosed(b, a.peerId.toString())
    await stream.close()
    assert.equal(await within(received.ended, 'B sees end'), TRANSFER_BYTES)
    await conn.close()
    await within(bClosed, 'B sees the relayed connection close')
    const closed = await relay.measure(0)
    t.diagnostic(`relay after close: ${describeMemory(closed)}`)
    assert.equal(closed.circuits, 0, 'the relay still holds the closed circuit')
  })

  it('carries half-close both ways: A sends N and closes, B sees N then end, answers M and closes', async () => {
    const N = 3 * MiB + 7
    const M = 5 * MiB + 3
    const conn = await a.dial(circuit, { signal: AbortSignal.timeout(STEP_TIMEOUT_MS) })
    const [stream, inbound] = await Promise.all([
      conn.newStream(HALF_CLOSE_PROTOCOL, { signal: AbortSignal.timeout(STEP_TIMEOUT_MS) }),
      nextHalfClose(),
    ])
    const atB = new Received(inbound)
    const atA = new Received(stream)
    const answered = (async () => {
      assert.equal(await within(atB.ended, 'B sees end'), N, 'B must see end exactly after N bytes')
      const hash = createHash('sha256')
      await sendPattern(inbound, M, hash)
      await inbound.close()
      return hash.digest('hex')
    })()

    const sentHash = createHash('sha256')
    await sendPattern(stream, N, sentHash)
    await stream.close()
    // A's write side is closed, its read side still open: B's answer must arrive in full.
    assert.equal(await within(atA.ended, 'A sees end'), M)
    assert.equal(atB.hash.digest('hex'), sentHash.digest('hex'))
    assert.equal(atA.hash.digest('hex'), await answered)

    const bClosed = relayedConnectionClosed(b, a.peerId.toString())
    await conn.close()
    await within(bClosed, 'B sees the relayed connection close')
    assert.equal((await relay.measure(0)).circuits, 0)
  })

  it('stops the sender while the reader does not read, and resumes it with nothing lost', async (t) => {
    const total = 2 * MAX_IN_FLIGHT_BYTES
    const conn = await a.dial(circuit, { signal: AbortSignal.timeout(STEP_TIMEOUT_MS) })
    const [stream, inbound] = await Promise.all([
      conn.newStream(SLOW_PROTOCOL, { signal: AbortSignal.timeout(STEP_TIMEOUT_MS) }),
      nextSlow(),
    ])
    inbound.pause()
    const received = new Received(inbound)
    const sentHash = createHash('sha256')
    const progress = { bytes: 0 }
    const sending = sendPattern(stream, total, sentHash, progress)
    // Nothing signals "the sender is blocked": it is once its count stops moving.
    const stalledAt = await waitForStall(() => progress.bytes, {
      signal: AbortSignal.timeout(STEP_TIMEOUT_MS),
    })
    const relayWhileStalled = await relay.measure()
    t.diagnostic(`A stalled after ${mb(stalledAt)}; relay: ${describeMemory(relayWhileStalled)}`)
    assert.ok(stalledAt < MAX_IN_FLIGHT_BYTES, `A could send ${mb(stalledAt)} to a reader that does not read`)
    assert.ok(
      relayWhileStalled.arrayBuffersBytes < MAX_IN_FLIGHT_BYTES,
      `the relay buffers ${mb(relayWhileStalled.arrayBuffersBytes)} for a reader that does not read`,
    )
    inbound.resume()
    await within(sending, 'A sends everything once B reads')
    await within(received.atLeast(total), 'B receives everything')
    assert.equal(received.bytes, total)
    assert.equal(received.hash.digest('hex'), sentHash.digest('hex'))
    await conn.close()
  })

  it('resets the other half when one side aborts the relayed connection', async () => {
    const conn = await a.dial(circuit, { signal: AbortSignal.timeout(STEP_TIMEOUT_MS) })
    const [stream, inbound] = await Promise.all([
      conn.newStream(SINK_PROTOCOL, { signal: AbortSignal.timeout(STEP_TIMEOUT_MS) }),
      nextSink(),
    ])
    const received = new Received(inbound)
    await sendPattern(stream, MiB, createHash('sha256'))
    await within(received.atLeast(MiB), 'B receives 1 MiB')
    const bClosed = relayedConnectionClosed(b, a.peerId.toString())
    conn.abort(new Error('test: A aborts its relayed connection'))
    // Without the reset crossing the relay, B would keep its half open until a keep-alive failed.
    const closedAtB = await within(bClosed, 'B sees the aborted relayed connection close')
    assert.notEqual(closedAtB.status, 'open')
    assert.equal((await relay.measure(0)).circuits, 0)
  })
})

describe('relay forwarding (limited relayed connections)', { timeout: 60_000 }, () => {
  const DATA_LIMIT_BYTES = MiB
  const DURATION_LIMIT_MS = 2_000
  let relay: RelayProcess
  let a: Libp2p
  let b: Libp2p
  let circuit: Multiaddr
  let nextSink: () => Promise<Stream>

  before(async () => {
    relay = await startRelayProcess({
      RELAY_FIXTURE_DATA_LIMIT: String(DATA_LIMIT_BYTES),
      RELAY_FIXTURE_DURATION_LIMIT: String(DURATION_LIMIT_MS),
    })
    ;[a, b] = await Promise.all([createPeer([]), createPeer(['/p2p-circuit'])])
    nextSink = inboundStreams(b, SINK_PROTOCOL, true)
    await b.dial(relay.addr, { signal: AbortSignal.timeout(STEP_TIMEOUT_MS) })
    circuit = await reservedCircuit(b, relay.peerId)
  })

  after(async () => {
    await Promise.all([a?.stop(), b?.stop()])
    await relay?.stop()
  })

  it('cuts a relayed connection that exceeds its data limit', async () => {
    const conn = await a.dial(circuit, { signal: AbortSignal.timeout(STEP_TIMEOUT_MS) })
    assert.ok(conn.limits !== undefined, 'the relayed connection must be limited')
    const [stream, inbound] = await Promise.all([
      conn.newStream(SINK_PROTOCOL, {
        signal: AbortSignal.timeout(STEP_TIMEOUT_MS),
        runOnLimitedConnection: true,
      }),
      nextSink(),
    ])
    const received = new Received(inbound)
    const aClosed = relayedConnectionClosed(a, b.peerId.toString())
    // 8× the limit: the relay must reset the circuit long before all of it is through.
    await sendPattern(stream, 8 * DATA_LIMIT_BYTES, createHash('sha256')).catch(() => {})
    await within(aClosed, 'A sees the relay cut the connection')
    assert.ok(
      received.bytes < DATA_LIMIT_BYTES,
      `B received ${received.bytes} bytes past a ${DATA_LIMIT_BYTES} limit`,
    )
    assert.equal((await relay.measure(0)).circuits, 0)
  })

  it('cuts a relayed connection that exceeds its duration limit', async () => {
    const start = performance.now()
    const conn = await a.dial(circuit, { signal: AbortSignal.timeout(STEP_TIMEOUT_MS) })
    const bClosed = relayedConnectionClosed(b, a.peerId.toString())
    await within(relayedConnectionClosed(a, b.peerId.toString()), 'A sees the relay cut the connection')
    await within(bClosed, 'B sees the relay cut the connection')
    const elapsed = performance.now() - start
    assert.notEqual(conn.status, 'open')
    assert.ok(elapsed >= DURATION_LIMIT_MS - 100, `closed after ${elapsed.toFixed(0)} ms`)
    assert.equal((await relay.measure(0)).circuits, 0)
  })
})
