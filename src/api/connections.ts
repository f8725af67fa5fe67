/**
 * `GET /v1/connections` (`peerup daemon connections`): who is connected through this node and how
 * much — every proxied connection open now, with its path, bytes and rate; the last ones that
 * ended and how; and the bytes by peer and by service since the daemon started. The shapes, and
 * how they read as text.
 *
 * @packageDocumentation
 */

import { z } from 'zod'
import { apiPath } from './schemas.ts'
import { ago, describePath, listTable, shortId } from './text.ts'

/** `inbound`: a peer uses a service of ours; `outbound`: we use a peer's. */
export const connectionSide = z.enum(['inbound', 'outbound'])

/**
 * How a connection ended: `clean` (both sides finished), `reset` (either side failed, or reset
 * its end), `expired` (its link did not come back within `proxy.resume_grace`), `closed` (its
 * proxy, its service or the daemon stopped), `refused` (the peer would not take the session back:
 * we are no longer authorized there), `interrupted` (the connection under a plain stream went),
 * `failed` (anything else; `error` says what).
 */
export const connectionEnd = z.enum([
  'clean',
  'reset',
  'expired',
  'closed',
  'refused',
  'interrupted',
  'failed',
])

const connectionFields = {
  /** Unique while the daemon runs; counts up from 1. */
  id: z.number(),
  side: connectionSide,
  peerId: z.string(),
  /** The peer's name under `names:`, when it has one. */
  name: z.string().optional(),
  service: z.string(),
  /**
   * What it is joined to on this machine: the address of the listener that accepted it
   * (outbound), `stdio` (`peerup proxy --stdio`, `peerup ssh`), or the service's local address
   * (inbound).
   */
  local: z.string(),
  /** The proxy of config.yaml's `proxies:`, or the `daemon connect` id, whose listener accepted it. */
  proxy: z.string().optional(),
  /** Whether it is a resumable session (docs/decisions/0006-sessions.md), not a plain stream. */
  resumable: z.boolean(),
  /** The path its bytes take (the last one, for a connection that ended); absent while a session waits for its link. */
  path: apiPath.optional(),
  /** When it opened (RFC 3339). */
  since: z.string(),
  /** Bytes from the peer. */
  bytesIn: z.number(),
  /** Bytes to the peer. */
  bytesOut: z.number(),
}

/** A proxied connection open now. */
export const openConnection = z.object({
  ...connectionFields,
  /** Bytes from the peer per second, over the last second. */
  bytesInPerSecond: z.number(),
  /** Bytes to the peer per second, over the last second. */
  bytesOutPerSecond: z.number(),
})

/** A proxied connection that ended. */
export const closedConnection = z.object({
  ...connectionFields,
  /** When it ended (RFC 3339). */
  ended: z.string(),
  durationMs: z.number(),
  end: connectionEnd,
  /** Why, when it did not end `clean`. */
  error: z.string().optional(),
})

/** The bytes of every connection, open and ended, since the daemon started, by one key. */
export const connectionTotal = z.object({
  connections: z.number(),
  bytesIn: z.number(),
  bytesOut: z.number(),
})

/** `GET /v1/connections` */
export const connectionsResponse = z.object({
  open: z.array(openConnection),
  /** The last connections that ended, newest first (at most 100). */
  closed: z.array(closedConnection),
  /** By peer (both sides, every service). */
  peers: z.array(connectionTotal.extend({ peerId: z.string(), name: z.string().optional() })),
  /** By service and side (every peer). */
  services: z.array(connectionTotal.extend({ service: z.string(), side: connectionSide })),
})

export type ConnectionSide = z.infer<typeof connectionSide>
export type ConnectionEnd = z.infer<typeof connectionEnd>
export type OpenConnection = z.infer<typeof openConnection>
export type ClosedConnection = z.infer<typeof closedConnection>
export type ConnectionsResponse = z.infer<typeof connectionsResponse>

/** `1.2 MiB`, `300 KiB`, `12 B`: bytes for people, in powers of 1024. */
export function byteSize(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let i = 0
  let v = n
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024
    i++
  }
  return i === 0 ? `${n} B` : `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`
}

/** `12 KiB/s`, `0 B/s`. */
function rate(n: number): string {
  return `${byteSize(Math.round(n))}/s`
}

/** The cells that say which connection a row is: id, peer, service, side. */
function who(c: OpenConnection | ClosedConnection): string[] {
  return [String(c.id), c.name ?? shortId(c.peerId), c.service, c.side === 'inbound' ? 'in' : 'out']
}

/** `12s`, `5m 3s` … rounded for a table. */
function duration(ms: number): string {
  const s = Math.round(ms / 1000)
  return s < 60
    ? `${s}s`
    : s < 3600
      ? `${Math.floor(s / 60)}m${s % 60}s`
      : `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`
}

/** `peerup daemon connections`: the open connections, then the ones that ended lately. */
export function connectionsText(r: ConnectionsResponse, now = Date.now()): string {
  const open = listTable(
    r.open,
    'no open connections',
    ['ID', 'PEER', 'SERVICE', 'SIDE', 'PATH', 'SINCE', 'IN', 'OUT', 'RATE IN', 'RATE OUT'],
    (c) => [
      ...who(c),
      c.path === undefined ? 'waiting for its link' : describePath(c.path),
      ago(c.since, now),
      byteSize(c.bytesIn),
      byteSize(c.bytesOut),
      rate(c.bytesInPerSecond),
      rate(c.bytesOutPerSecond),
    ],
  )
  const closed = listTable(
    r.closed,
    'none',
    ['ID', 'PEER', 'SERVICE', 'SIDE', 'ENDED', 'LASTED', 'IN', 'OUT', 'HOW'],
    (c) => [
      ...who(c),
      `${ago(c.ended, now)} ago`,
      duration(c.durationMs),
      byteSize(c.bytesIn),
      byteSize(c.bytesOut),
      c.error === undefined ? c.end : `${c.end}: ${c.error}`,
    ],
  )
  return `open (${r.open.length})\n${open}\n\nrecently closed (${r.closed.length})\n${closed}`
}
