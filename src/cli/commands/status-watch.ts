/**
 * `peerup status --watch`: the peers of the running daemon, live, fed by its events stream — name,
 * path (DIRECT or RELAYED via which relay), round-trip time and since when. On a terminal the view
 * is redrawn in place; otherwise (a pipe, a log) each change is one line, with `--json` one JSON
 * event per line.
 *
 * @packageDocumentation
 */

import { type ApiPath, ago, type DaemonEvent, describePath, listTable } from '../../api/index.ts'
import type { Client } from '../../client/client.ts'
import type { CliContext, GlobalOptions } from '../context.ts'
import { daemonClient } from '../load.ts'

/** How often the round-trip time of each peer is measured. */
const RTT_INTERVAL_MS = 5_000

interface Row {
  peerId: string
  name: string | undefined
  path: ApiPath | undefined
  since: string
  rttMs?: number | undefined
}

export interface WatchOptions {
  /** Called once the event stream is open (for tests: nothing before it is missed after it). */
  onReady?: () => void
  /** How often each peer's round-trip time is measured again (default 5 s). */
  rttIntervalMs?: number
}

/**
 * Measures peers' round-trip times through the daemon (one ping each): a peer as soon as it is
 * shown or its path changes, and every peer again each interval, one ping per peer at a time. A
 * peer that did not answer shows no time rather than its last one. The function it returns pings
 * a row's peer, unless a ping to it is under way, and fills in `row.rttMs`.
 */
function rttProbe(client: Client, signal: AbortSignal, measured: () => void): (row: Row) => void {
  const pending = new Set<string>()
  return (row) => {
    if (pending.has(row.peerId) || signal.aborted) {
      return
    }
    pending.add(row.peerId)
    client
      .call('ping', { peer: row.peerId, count: 1, intervalMs: 0 }, signal)
      .then(
        (r) => r.replies[0]?.rttMs,
        () => undefined,
      )
      .then((rttMs) => {
        row.rttMs = rttMs
        pending.delete(row.peerId)
        if (!signal.aborted) {
          measured()
        }
      })
  }
}

/** Runs the live view until Ctrl+C or the daemon stops. */
export async function watchStatus(
  ctx: CliContext,
  opts: GlobalOptions,
  configFile: string,
  options: WatchOptions = {},
): Promise<void> {
  const client = daemonClient(ctx, configFile)
  const status = await client.call('status', {})
  const relays = new Set(status.relays.map((r) => r.peerId))
  const rows = new Map<string, Row>()
  for (const p of await client.call('paths', {})) {
    if (!relays.has(p.peerId) && p.path !== undefined) {
      rows.set(p.peerId, { peerId: p.peerId, name: p.name, path: p.path, since: p.since })
    }
  }
  const tty = ctx.stdout.isTTY === true && opts.json !== true
  const draw = (): void => {
    if (!tty) {
      return
    }
    const list = [...rows.values()].sort((a, b) => (a.name ?? a.peerId).localeCompare(b.name ?? b.peerId))
    const body = listTable(list, 'no peers connected', ['NAME', 'PEER', 'PATH', 'RTT', 'SINCE'], (r) => [
      r.name ?? '-',
      r.peerId,
      describePath(r.path),
      r.rttMs === undefined ? '-' : `${r.rttMs.toFixed(1)} ms`,
      ago(r.since),
    ])
    // Home, clear to the end: redraw in place.
    ctx.stdout.write(
      `\x1b[H\x1b[2J${status.peerId} — ${list.length} peers, ${new Date().toLocaleTimeString()} (Ctrl+C to stop)\n\n${body}\n`,
    )
  }
  const line = (event: DaemonEvent, text: string): void => {
    if (opts.json === true) {
      ctx.stdout.write(`${JSON.stringify(event)}\n`)
    } else if (!tty) {
      ctx.stdout.write(`${event.time} ${text}\n`)
    }
  }

  const controller = new AbortController()
  const stop = (): void => controller.abort()
  ctx.signal.addEventListener('abort', stop, { once: true })
  // Only on a terminal is there an RTT column to fill.
  const measure = tty ? rttProbe(client, controller.signal, draw) : undefined
  const measureAll = (): void => {
    for (const row of rows.values()) {
      measure?.(row)
    }
  }
  const rtt = setInterval(() => {
    measureAll()
    draw()
  }, options.rttIntervalMs ?? RTT_INTERVAL_MS)
  measureAll()
  draw()
  try {
    for await (const e of client.lines('events', {}, controller.signal)) {
      if (e.type === 'hello') {
        options.onReady?.()
      }
      const text = applyEvent(rows, relays, e)
      if (text !== undefined) {
        line(e, text)
      }
      // A peer just shown, or on a new path: its time now, not at the next round.
      const row = e.type === 'peer-connected' || e.type === 'path-changed' ? rows.get(e.peerId) : undefined
      if (row !== undefined) {
        measure?.(row)
      }
      draw()
    }
  } finally {
    clearInterval(rtt)
    // Pings still under way end here: nothing is drawn after the view has ended.
    controller.abort()
    ctx.signal.removeEventListener('abort', stop)
  }
}

/**
 * Applies one event to the rows of the live view; returns the line it prints where it prints one
 * (a peer coming or going, a path changing, an upgrade ending, a reservation, authorized_keys).
 */
function applyEvent(rows: Map<string, Row>, relays: Set<string>, e: DaemonEvent): string | undefined {
  switch (e.type) {
    case 'hello':
      return undefined
    case 'peer-connected':
      if (!relays.has(e.peerId)) {
        rows.set(e.peerId, { peerId: e.peerId, name: e.name, path: e.path, since: e.time })
        return `connected ${e.name ?? e.peerId} ${describePath(e.path)}`
      }
      return undefined
    case 'peer-disconnected':
      return rows.delete(e.peerId) ? `disconnected ${e.name ?? e.peerId}` : undefined
    case 'path-changed': {
      const row = rows.get(e.peerId)
      if (row !== undefined) {
        row.path = e.to
        row.since = e.time
      }
      return relays.has(e.peerId)
        ? undefined
        : `path ${e.name ?? e.peerId} ${describePath(e.from)} → ${describePath(e.to)}`
    }
    case 'upgrade':
      return e.outcome === 'started'
        ? undefined
        : `upgrade ${e.peerId} ${e.outcome}${e.transport === undefined ? '' : ` (${e.transport})`}${e.error === undefined ? '' : `: ${e.error}`}`
    case 'reservation':
      return `reservation ${e.reserved ? 'held' : 'lost'} on ${e.relay}`
    case 'auth-changed':
      return `authorized_keys: +${e.added.length} -${e.removed.length}`
    case 'stopping':
      return 'daemon stopping'
    default:
      return e.type
  }
}
