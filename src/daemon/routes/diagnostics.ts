/**
 * `ping` (a report, or its lines as they happen) and `traceroute`.
 *
 * @packageDocumentation
 */

import type { PingLine } from '../../api/index.ts'
import { UsageError } from '../../errors.ts'
import { pingPeer, traceroutePeer } from '../../p2p/diagnostics.ts'
import { Channel } from '../../util/channel.ts'
import { type DaemonContext, type Handlers, peerIdOf } from './context.ts'

export function diagnosticHandlers(ctx: DaemonContext): Pick<Handlers, 'ping' | 'traceroute'> {
  const { rt } = ctx
  return {
    ping: (input, r) => {
      const { peer, deadlineMs } = input
      const count = input.count ?? 4
      if (count === 0 && input.untilDirect !== true && !r.streaming) {
        throw new UsageError('count 0 (until stopped) needs ?stream=true')
      }
      peerIdOf(ctx, peer)
      const lines = new Channel<PingLine>()
      pingPeer(rt, peer, {
        count,
        intervalMs: input.intervalMs ?? 1000,
        ...(input.untilDirect === true ? { untilDirect: true } : {}),
        ...(deadlineMs === undefined ? {} : { deadlineMs }),
        signal: r.signal,
        onConnected: (path, via, connectMs) => lines.push({ type: 'connected', path, via, connectMs }),
        onReply: (reply) => lines.push({ type: 'reply', reply }),
        onPathChange: (change) => lines.push({ type: 'path-changed', change }),
      }).then(
        (report) => {
          lines.push({ type: 'done', report })
          lines.end()
        },
        (err: unknown) => lines.fail(err instanceof Error ? err : new Error(String(err))),
      )
      return lines
    },
    traceroute: async ({ peer }, r) => {
      peerIdOf(ctx, peer)
      return traceroutePeer(rt, peer, r.signal)
    },
  }
}
