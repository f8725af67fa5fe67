/**
 * `ping` and `traceroute`: round-trip times to a peer and to the relay in between, with the path,
 * reported in the API's own types (src/api/schemas.ts).
 *
 * @packageDocumentation
 */

import type { Connection } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import type { Hop, PingPathChange, PingReply, PingResponse, TracerouteResponse } from '../api/index.ts'
import { pingConnection } from './liveness.ts'
import { bestConnection, classifyConnection, describePath, type PathInfo, samePath } from './path.ts'
import type { PeerPath, UpgradeEvent } from './paths.ts'
import type { NodeRuntime } from './runtime.ts'
import { nextEvent } from './wait.ts'

export interface PingOptions {
  /** Number of pings; 0 = until the signal fires (or, with `untilDirect`, until the path is direct). */
  count: number
  intervalMs: number
  signal?: AbortSignal
  /**
   * Keep pinging until a reply goes over a DIRECT path; stop early, not direct, when the upgrade
   * fails or the peer offers no direct path, or after `deadlineMs`.
   */
  untilDirect?: boolean
  /** Stop after this long, whatever `count` says. */
  deadlineMs?: number
  onReply?: (reply: PingReply) => void
  onConnected?: (path: PathInfo, via: string, ms: number) => void
  onPathChange?: (change: PingPathChange) => void
}

/** Pings `peer` `count` times (0 = until the signal fires), over the connection new streams would take. */
export async function pingPeer(rt: NodeRuntime, peer: string, options: PingOptions): Promise<PingResponse> {
  const signal = AbortSignal.any([
    ...(options.signal === undefined ? [] : [options.signal]),
    ...(options.deadlineMs === undefined ? [] : [AbortSignal.timeout(options.deadlineMs)]),
  ])
  const reached = await rt.reach(peer, signal)
  const connectedAt = performance.now()
  options.onConnected?.(reached.path, reached.via, reached.elapsedMs)
  const peerId = rt.resolve(peer)
  const remote = peerIdFromString(peerId)
  const replies: PingReply[] = []
  const pathChanges: PingPathChange[] = []
  let last = reached.path
  // With --until-direct, an upgrade that fails (or cannot be tried) after we started ends the run;
  // so does one that had failed already, whose next try waits for its backoff (up to 10 min):
  // the report says why and when it tries again.
  const upgradeGaveUp = new AbortController()
  const onUpgrade = (evt: CustomEvent<UpgradeEvent>): void => {
    if (evt.detail.peer === peerId && evt.detail.outcome === 'failed') {
      upgradeGaveUp.abort()
    }
  }
  const state = rt.paths.get(peerId)?.upgrade.state
  const unavailable = state === 'unavailable' || state === 'failed'
  if (options.untilDirect === true) {
    rt.paths.addEventListener('upgrade', onUpgrade)
  }
  try {
    for (let seq = 1; options.count === 0 || options.untilDirect === true || seq <= options.count; seq++) {
      if (signal.aborted) {
        break
      }
      let conn: Connection | undefined
      let rttMs: number | undefined
      let error: string | undefined
      try {
        conn = bestConnection(rt.node.getConnections(remote)) ?? (await rt.reach(peer, signal)).connection
        rttMs = await pingConnection(conn, AbortSignal.any([AbortSignal.timeout(PING_TIMEOUT_MS), signal]))
      } catch (err) {
        if (signal.aborted) {
          break
        }
        error = (err as Error).message
      }
      const path = conn === undefined ? last : classifyConnection(conn)
      const reply: PingReply = { seq, rttMs, error, path, changed: !samePath(path, last) }
      if (reply.changed) {
        const change = { seq, afterMs: performance.now() - connectedAt, from: last, to: reply.path }
        pathChanges.push(change)
        options.onPathChange?.(change)
      }
      last = reply.path
      replies.push(reply)
      options.onReply?.(reply)
      const done =
        options.untilDirect === true
          ? rttMs !== undefined && (path.type === 'DIRECT' || upgradeGaveUp.signal.aborted || unavailable)
          : options.count !== 0 && seq >= options.count
      if (done) {
        break
      }
      // A change of path (the upgrade finishing) wakes the wait, or skips it when it came during
      // this ping: the next reply shows it at once.
      const now = bestConnection(rt.node.getConnections(remote))
      if (now !== undefined && !samePath(classifyConnection(now), last)) {
        continue
      }
      // The interval, or less when the path to the peer changes.
      const wakeUp = AbortSignal.any([signal, upgradeGaveUp.signal])
      await nextEvent(rt.paths, 'path', (evt) => evt.detail.peer === peerId, options.intervalMs, wakeUp)
    }
  } finally {
    rt.paths.removeEventListener('upgrade', onUpgrade)
  }
  if (
    options.untilDirect === true &&
    last.type === 'DIRECT' &&
    rt.paths.get(peerId)?.upgrade.state === 'upgrading' &&
    !signal.aborted
  ) {
    // A punched connection (src/p2p/punch.ts) carries pings a moment before the upgrader has
    // confirmed it: the report waits for that outcome (bounded), so it says how long it took.
    const settled = (evt: CustomEvent<UpgradeEvent>): boolean =>
      evt.detail.peer === peerId && evt.detail.outcome !== 'started'
    await nextEvent(rt.paths, 'upgrade', settled, UPGRADE_SETTLE_MS, signal)
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
    pathChanges,
    finalPath: last,
    upgrade: rt.paths.get(peerId)?.upgrade,
  }
}

const PING_TIMEOUT_MS = 10_000

/** How long `--until-direct` waits, once a reply went DIRECT, for the upgrader's outcome. */
const UPGRADE_SETTLE_MS = 5_000

/** Traces the path to `peer`: the relay (when relayed) and the peer, with a round trip to each. */
export async function traceroutePeer(
  rt: NodeRuntime,
  peer: string,
  signal?: AbortSignal,
): Promise<TracerouteResponse> {
  const reached = await rt.reach(peer, signal)
  const peerId = rt.resolve(peer)
  // The connection new streams take now: the upgrade may have finished since the peer was reached.
  const conn = bestConnection(rt.node.getConnections(peerIdFromString(peerId))) ?? reached.connection
  const path = classifyConnection(conn)
  const timeout = (): AbortSignal =>
    AbortSignal.any([AbortSignal.timeout(PING_TIMEOUT_MS), ...(signal === undefined ? [] : [signal])])
  const measure = async (ping: () => Promise<number>): Promise<Pick<Hop, 'rttMs' | 'error'>> => {
    try {
      return { rttMs: await ping(), error: undefined }
    } catch (err) {
      return { rttMs: undefined, error: (err as Error).message }
    }
  }
  const hops: Hop[] = []
  if (path.type === 'RELAYED' && path.relay !== undefined) {
    const relay = path.relay
    const relayConn = bestConnection(rt.node.getConnections(peerIdFromString(relay)))
    hops.push({
      hop: 1,
      peerId: relay,
      role: 'relay',
      address: relayConn?.remoteAddr.toString() ?? '',
      ...(await measure(() => rt.node.services.ping.ping(peerIdFromString(relay), { signal: timeout() }))),
    })
  }
  hops.push({
    hop: hops.length + 1,
    peerId,
    role: 'peer',
    address: path.remoteAddr,
    ...(await measure(() => pingConnection(conn, timeout()))),
  })
  const state = rt.paths.get(peerId)
  return {
    peer,
    peerId,
    path,
    summary: describeHistory(path, state, rt.config.names),
    hops,
    since: state === undefined ? undefined : new Date(state.since).toISOString(),
    previous: state?.previous,
    upgrade: state?.upgrade,
  }
}

/**
 * The path with its history, for people: `DIRECT (webrtc) since 10:04:05, was RELAYED via relay
 * (direct after 0.8 s)`, or `RELAYED via relay (direct path failed: …; next try in 30 s)`.
 */
export function describeHistory(
  path: PathInfo,
  state: PeerPath | undefined,
  names: Record<string, string> = {},
): string {
  if (state === undefined) {
    return describePath(path, names)
  }
  let text = `${describePath(path, names)} since ${new Date(state.since).toISOString().slice(11, 19)}Z`
  if (state.previous !== undefined) {
    text += `, was ${describePath(state.previous, names)}`
  }
  const u = state.upgrade
  if (path.type === 'DIRECT' && u.timeToDirectMs !== undefined) {
    text += ` (direct after ${(u.timeToDirectMs / 1000).toFixed(1)} s)`
  } else if (path.type === 'RELAYED') {
    if (u.state === 'upgrading') {
      text += ' (trying a direct path)'
    } else if (u.state === 'failed') {
      const next =
        u.nextRetryAt === undefined
          ? ''
          : `; next try in ${Math.max(0, Math.round((u.nextRetryAt - Date.now()) / 1000))} s`
      text += ` (direct path failed: ${u.lastError ?? 'unknown error'}${next})`
    } else if (u.state === 'unavailable') {
      text += ` (no direct path: ${u.lastError ?? 'none offered'})`
    }
  }
  return text
}
