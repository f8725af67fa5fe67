/**
 * `peerup daemon connections [--watch]`: who is connected through the running daemon and how much
 * — every proxied connection open now (peer, service, path, since, bytes each way, rate), the last
 * ones that ended and how, and the bytes by peer and service. `--watch` asks again every second:
 * redrawn in place on a terminal, one line per connection that opened or ended otherwise, and
 * with `--json` the whole answer as one line each time.
 *
 * @packageDocumentation
 */

import { setTimeout as delay } from 'node:timers/promises'
import {
  byteSize,
  type ClosedConnection,
  type ConnectionsResponse,
  connectionsText,
  describePath,
  type OpenConnection,
} from '../../api/index.ts'
import type { LocalClient } from '../../client/local.ts'
import { type CliContext, type GlobalOptions, graceful } from '../context.ts'
import { daemonClient, nodeConfigFile } from '../load.ts'
import type { CliCommand } from '../options.ts'
import { emit } from '../output.ts'

/** How often `--watch` asks the daemon. */
export const WATCH_INTERVAL_MS = 1_000

type Flags = GlobalOptions & { watch?: boolean }

export function registerDaemonConnections(daemon: CliCommand, ctx: CliContext): void {
  daemon
    .command('connections')
    .description(
      'proxied connections open now (peer, service, path, bytes, rate) and the last ones that ended',
    )
    .option('--watch', 'ask again every second until Ctrl+C')
    .run(async (opts: Flags) => {
      const client = daemonClient(ctx, await nodeConfigFile(ctx, opts))
      if (opts.watch === true) {
        await graceful(ctx, () => watchConnections(ctx, opts, client))
        return
      }
      emit(ctx, opts, await client.call('connections', {}, ctx.signal), (r) => connectionsText(r))
    })
}

/** `opened 3 home ssh out DIRECT (tcp)` */
function openedLine(c: OpenConnection): string {
  const path = c.path === undefined ? 'waiting for its link' : describePath(c.path)
  return `opened ${c.id} ${c.name ?? c.peerId} ${c.service} ${c.side} ${c.local} ${path}`
}

/** `closed 3 home ssh out clean in 1.2 MiB out 300 KiB` */
function closedLine(c: ClosedConnection): string {
  const how = c.error === undefined ? c.end : `${c.end} (${c.error})`
  return `closed ${c.id} ${c.name ?? c.peerId} ${c.service} ${c.side} ${how} in ${byteSize(c.bytesIn)} out ${byteSize(c.bytesOut)}`
}

/** Asks the daemon every `intervalMs` until Ctrl+C, and shows each answer (see the file's comment). */
export async function watchConnections(
  ctx: CliContext,
  opts: GlobalOptions,
  client: Pick<LocalClient, 'call'>,
  intervalMs = WATCH_INTERVAL_MS,
): Promise<void> {
  const tty = ctx.stdout.isTTY === true && opts.json !== true
  // Without a terminal: the connections shown already. At the start, what ended is history, not news.
  let open: Set<number> | undefined
  let closed: Set<number> | undefined
  while (!ctx.signal.aborted) {
    let r: ConnectionsResponse
    try {
      r = await client.call('connections', {}, ctx.signal)
    } catch (err) {
      if (ctx.signal.aborted) {
        return
      }
      throw err
    }
    if (opts.json === true) {
      ctx.stdout.write(`${JSON.stringify(r)}\n`)
    } else if (tty) {
      // Home, clear to the end: redraw in place.
      ctx.stdout.write(
        `\x1b[H\x1b[2J${new Date().toLocaleTimeString()} (Ctrl+C to stop)\n\n${connectionsText(r)}\n`,
      )
    } else {
      const time = new Date().toISOString()
      const lines = [
        ...r.open.filter((c) => open?.has(c.id) !== true).map(openedLine),
        ...(closed === undefined
          ? []
          : r.closed
              .filter((c) => !closed?.has(c.id))
              .toReversed()
              .map(closedLine)),
      ]
      ctx.stdout.write(lines.map((l) => `${time} ${l}\n`).join(''))
      open = new Set(r.open.map((c) => c.id))
      closed = new Set(r.closed.map((c) => c.id))
    }
    await delay(intervalMs, undefined, { signal: ctx.signal }).catch(() => {})
  }
}
