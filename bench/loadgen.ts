/**
 * A load generator for the relay capacity test: many libp2p peers (each its own identity, own TCP
 * connection, noise, yamux, identify, ping — what a peerup node brings to a relay) in one process,
 * driven by JSON lines on stdin, answering JSON lines on stdout.
 *
 * `node bench/loadgen.ts <relay multiaddr> <run id>`; identities are derived from `<run id>` and a
 * global index (see {@link benchKey}), so the harness knows every peer id in advance and can put
 * them all into the relay's relay_authorized_keys.
 *
 * Commands: `{op:"reserve", indexes:[…], concurrency}` → `{op:"reserved", ok, failed, errors, ms}`;
 * `{op:"circuits", pairs:[[index, targetPeerId]…], concurrency}` → `{op:"circuits", ok, failed, errors, ms}`;
 * `{op:"check"}` → `{op:"check", connected, lost, circuits, circuitsAlive}`; `{op:"stop"}`.
 *
 * A reservation is made with the circuit relay v2 hop protocol directly (RESERVE, then the
 * relay's STATUS), so each refusal comes back with its status code.
 *
 * @packageDocumentation
 */

import { createHash } from 'node:crypto'
import { createInterface } from 'node:readline'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { circuitRelayTransport } from '@libp2p/circuit-relay-v2'
import { generateKeyPairFromSeed } from '@libp2p/crypto/keys'
import { identify } from '@libp2p/identify'
import type { Connection, Libp2p, PrivateKey } from '@libp2p/interface'
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id'
import { type Ping, ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { lpStream } from '@libp2p/utils'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'

const HOP = '/libp2p/circuit/relay/0.2.0/hop'
const STATUS_NAMES: Record<number, string> = {
  100: 'OK',
  200: 'RESERVATION_REFUSED',
  201: 'RESOURCE_LIMIT_EXCEEDED',
  202: 'PERMISSION_DENIED',
  203: 'CONNECTION_FAILED',
  204: 'NO_RESERVATION',
  400: 'MALFORMED_MESSAGE',
  401: 'UNEXPECTED_MESSAGE',
}

/** The identity of load-generator peer `index` of run `runId`. */
export async function benchKey(runId: string, index: number): Promise<PrivateKey> {
  const seed = createHash('sha256').update(`peerup-bench-loadgen-${runId}-${index}`).digest()
  return generateKeyPairFromSeed('Ed25519', seed)
}

/** The peer id of load-generator peer `index` of run `runId`. */
export async function benchPeerId(runId: string, index: number): Promise<string> {
  return peerIdFromPrivateKey(await benchKey(runId, index)).toString()
}

interface Peer {
  index: number
  node: Libp2p<{ ping: Ping }>
  relayConn: Connection
  lost: boolean
  circuits: Connection[]
}

function readVarint(buf: Uint8Array, pos: number): [number, number] {
  let value = 0
  let shift = 0
  for (;;) {
    const b = buf[pos++]
    if (b === undefined) {
      throw new Error('truncated varint')
    }
    value += (b & 0x7f) * 2 ** shift
    if ((b & 0x80) === 0) {
      return [value, pos]
    }
    shift += 7
  }
}

/** The `status` field (5) of a HopMessage. */
function hopStatus(msg: Uint8Array): number | undefined {
  let pos = 0
  let status: number | undefined
  while (pos < msg.length) {
    const [tag, p1] = readVarint(msg, pos)
    pos = p1
    const wire = tag & 7
    if (wire === 0) {
      const [v, p2] = readVarint(msg, pos)
      pos = p2
      if (tag >>> 3 === 5) {
        status = v
      }
    } else if (wire === 2) {
      const [len, p2] = readVarint(msg, pos)
      pos = p2 + len
    } else {
      throw new Error(`unexpected wire type ${wire}`)
    }
  }
  return status
}

async function runPool<T>(items: T[], concurrency: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0
  await Promise.all(
    Array.from({ length: Math.max(1, concurrency) }, async () => {
      while (next < items.length) {
        const item = items[next++] as T
        await fn(item)
      }
    }),
  )
}

function count(errors: Record<string, number>, err: unknown): void {
  const key = (err instanceof Error ? `${err.name}: ${err.message}` : String(err)).slice(0, 160)
  errors[key] = (errors[key] ?? 0) + 1
}

async function main(): Promise<void> {
  const [relayAddrText, runId] = process.argv.slice(2)
  if (relayAddrText === undefined || runId === undefined) {
    throw new Error('usage: loadgen.ts <relay multiaddr> <run id>')
  }
  const relayAddr = multiaddr(relayAddrText)
  const peers = new Map<number, Peer>()
  const out = (o: object): void => {
    process.stdout.write(`${JSON.stringify(o)}\n`)
  }

  const reserve = async (index: number): Promise<void> => {
    const privateKey = await benchKey(runId, index)
    const node = await createLibp2p({
      privateKey,
      addresses: { listen: [] },
      transports: [tcp(), circuitRelayTransport()],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
      connectionMonitor: { abortConnectionOnPingFailure: false },
      services: { identify: identify(), ping: ping({ maxInboundStreams: 16, maxOutboundStreams: 16 }) },
    })
    try {
      const relayConn = await node.dial(relayAddr, { signal: AbortSignal.timeout(30_000) })
      const stream = await relayConn.newStream(HOP, { signal: AbortSignal.timeout(30_000) })
      const lp = lpStream(stream)
      await lp.write(Uint8Array.from([0x08, 0x00]), { signal: AbortSignal.timeout(30_000) })
      const answer = await lp.read({ signal: AbortSignal.timeout(30_000) })
      const status = hopStatus(answer.subarray())
      await stream.close().catch(() => {})
      if (status !== 100) {
        throw new Error(`reservation refused: ${STATUS_NAMES[status ?? -1] ?? status}`)
      }
      const peer: Peer = { index, node, relayConn, lost: false, circuits: [] }
      node.addEventListener('connection:close', (evt) => {
        if (evt.detail.id === relayConn.id) {
          peer.lost = true
        }
      })
      peers.set(index, peer)
    } catch (err) {
      await Promise.resolve(node.stop()).catch(() => {})
      throw err
    }
  }

  const circuit = async (index: number, target: string): Promise<void> => {
    const peer = peers.get(index)
    if (peer === undefined) {
      throw new Error(`no peer ${index} here`)
    }
    const addr = relayAddr.encapsulate(`/p2p-circuit/p2p/${target}`)
    const conn = await peer.node.dial(addr, { signal: AbortSignal.timeout(30_000) })
    if (conn.limits !== undefined) {
      throw new Error(
        `the relay limited the circuit: ${JSON.stringify(conn.limits, (_, v) => (typeof v === 'bigint' ? String(v) : v))}`,
      )
    }
    // A round trip over the circuit: it carries data, not just a handshake.
    await peer.node.services.ping.ping(peerIdFromString(target), { signal: AbortSignal.timeout(30_000) })
    peer.circuits.push(conn)
  }

  const lines = createInterface({ input: process.stdin })
  for await (const line of lines) {
    if (line.trim() === '') {
      continue
    }
    const cmd = JSON.parse(line) as {
      op: string
      indexes?: number[]
      pairs?: Array<[number, string]>
      concurrency?: number
    }
    const started = performance.now()
    if (cmd.op === 'reserve') {
      const errors: Record<string, number> = {}
      const okIndexes: number[] = []
      let failed = 0
      await runPool(cmd.indexes ?? [], cmd.concurrency ?? 2, async (i) => {
        try {
          await reserve(i)
          okIndexes.push(i)
        } catch (err) {
          failed++
          count(errors, err)
        }
      })
      out({
        op: 'reserved',
        ok: okIndexes.length,
        okIndexes,
        failed,
        errors,
        ms: performance.now() - started,
      })
    } else if (cmd.op === 'circuits') {
      const errors: Record<string, number> = {}
      let ok = 0
      let failed = 0
      await runPool(cmd.pairs ?? [], cmd.concurrency ?? 4, async ([i, target]) => {
        try {
          await circuit(i, target)
          ok++
        } catch (err) {
          failed++
          count(errors, err)
        }
      })
      out({ op: 'circuits', ok, failed, errors, ms: performance.now() - started })
    } else if (cmd.op === 'check') {
      let connected = 0
      let lost = 0
      const lostIndexes: number[] = []
      let circuits = 0
      let circuitsAlive = 0
      const errors: Record<string, number> = {}
      const checks: Array<Promise<void>> = []
      for (const peer of peers.values()) {
        if (peer.lost || peer.relayConn.status !== 'open') {
          lost++
          lostIndexes.push(peer.index)
        } else {
          connected++
        }
        for (const c of peer.circuits) {
          circuits++
          checks.push(
            (async () => {
              try {
                if (c.status !== 'open') {
                  throw new Error(`circuit ${c.status}`)
                }
                await peer.node.services.ping.ping(c.remotePeer, { signal: AbortSignal.timeout(30_000) })
                circuitsAlive++
              } catch (err) {
                count(errors, err)
              }
            })(),
          )
        }
      }
      await Promise.all(checks)
      out({
        op: 'check',
        connected,
        lost,
        lostIndexes,
        circuits,
        circuitsAlive,
        errors,
        ms: performance.now() - started,
      })
    } else if (cmd.op === 'stop') {
      break
    }
  }
  await Promise.all([...peers.values()].map((p) => Promise.resolve(p.node.stop()).catch(() => {})))
  process.exit(0)
}

if (import.meta.main) {
  main().catch((err: unknown) => {
    console.error((err as Error).stack)
    process.exit(1)
  })
}
