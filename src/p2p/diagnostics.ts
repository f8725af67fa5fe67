/**
 * `ping` and `traceroute`: round-trip times to a peer and to the relay in between, with the path.
 *
 * @packageDocumentation
 */

import { peerIdFromString } from '@libp2p/peer-id'
import { classifyConnection, describePath, type PathInfo } from './path.ts'
import type { NodeRuntime } from './runtime.ts'

/** One ping. */
export interface PingReply {
  seq: number
  rttMs: number | undefined
  error: string | undefined
  path: PathInfo
}

/** A whole ping run. */
export interface PingReport {
  peer: string
  peerId: string
  /** How the connection was made: a live one, a relay circuit, or an address from the DHT. */
  via: 'existing' | 'relay' | 'dht'
  connectMs: number
  path: PathInfo
  replies: PingReply[]
  sent: number
  received: number
  minMs: number | undefined
  avgMs: number | undefined
  maxMs: number | undefined
}

/** Options of {@link pingPeer}. */
export interface PingOptions {
  count: number
  intervalMs: number
  signal?: AbortSignal
  onReply?: (reply: PingReply) => void
  onConnected?: (path: PathInfo, via: string, ms: number) => void
}

/** Pings `peer` `count` times (0 = until the signal fires). */
export async function pingPeer(rt: NodeRuntime, peer: string, options: PingOptions): Promise<PingReport> {
  const reached = await rt.reach(peer, options.signal)
  options.onConnected?.(reached.path, reached.via, reached.elapsedMs)
  const peerId = rt.resolve(peer)
  const replies: PingReply[] = []
  for (let seq = 1; options.count === 0 || seq <= options.count; seq++) {
    if (options.signal?.aborted === true) {
      break
    }
    let reply: PingReply
    try {
      const conn =
        reached.connection.status === 'open'
          ? reached.connection
          : (await rt.reach(peer, options.signal)).connection
      const rttMs = await rt.node.services.ping.ping(peerIdFromString(peerId), {
        signal: AbortSignal.any([
          AbortSignal.timeout(10_000),
          ...(options.signal === undefined ? [] : [options.signal]),
        ]),
      })
      reply = { seq, rttMs, error: undefined, path: classifyConnection(conn) }
    } catch (err) {
      if (isAborted(options.signal)) {
        break
      }
      reply = { seq, rttMs: undefined, error: (err as Error).message, path: reached.path }
    }
    replies.push(reply)
    options.onReply?.(reply)
    if (options.count === 0 || seq < options.count) {
      await sleep(options.intervalMs, options.signal)
    }
  }
  const rtts = replies.flatMap((r) => (r.rttMs === undefined ? [] : [r.rttMs]))
  return {
    peer,
    peerId,
    via: reached.via,
    connectMs: reached.elapsedMs,
    path: reached.path,
    replies,
    sent: replies.length,
    received: rtts.length,
    minMs: rtts.length === 0 ? undefined : Math.min(...rtts),
    avgMs: rtts.length === 0 ? undefined : rtts.reduce((a, b) => a + b, 0) / rtts.length,
    maxMs: rtts.length === 0 ? undefined : Math.max(...rtts),
  }
}

/** One hop of a traceroute. */
export interface Hop {
  hop: number
  peerId: string
  role: 'relay' | 'peer'
  address: string
  rttMs: number | undefined
  error: string | undefined
}

/** The path to a peer, hop by hop. */
export interface TraceReport {
  peer: string
  peerId: string
  path: PathInfo
  summary: string
  hops: Hop[]
}

/** Traces the path to `peer`: the relay (when relayed) and the peer, with a round trip to each. */
export async function traceroutePeer(
  rt: NodeRuntime,
  peer: string,
  signal?: AbortSignal,
): Promise<TraceReport> {
  const reached = await rt.reach(peer, signal)
  const peerId = rt.resolve(peer)
  const hops: Hop[] = []
  const measure = async (
    target: string,
  ): Promise<{ rttMs: number | undefined; error: string | undefined }> => {
    try {
      const rttMs = await rt.node.services.ping.ping(peerIdFromString(target), {
        signal: AbortSignal.any([AbortSignal.timeout(10_000), ...(signal === undefined ? [] : [signal])]),
      })
      return { rttMs, error: undefined }
    } catch (err) {
      return { rttMs: undefined, error: (err as Error).message }
    }
  }
  if (reached.path.type === 'RELAYED' && reached.path.relay !== undefined) {
    const relayConn = rt.node.getConnections(peerIdFromString(reached.path.relay))[0]
    hops.push({
      hop: 1,
      peerId: reached.path.relay,
      role: 'relay',
      address: relayConn?.remoteAddr.toString() ?? '',
      ...(await measure(reached.path.relay)),
    })
  }
  hops.push({
    hop: hops.length + 1,
    peerId,
    role: 'peer',
    address: reached.path.remoteAddr,
    ...(await measure(peerId)),
  })
  return { peer, peerId, path: reached.path, summary: describePath(reached.path, rt.config.names), hops }
}

// A function, not an inline check: TypeScript narrows \`signal.aborted\` to false after the first
// check and would not let a later one through.
function isAborted(signal: AbortSignal | undefined): boolean {
  return signal?.aborted === true
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms)
    function done(): void {
      clearTimeout(timer)
      signal?.removeEventListener('abort', done)
      resolve()
    }
    signal?.addEventListener('abort', done, { once: true })
  })
}
