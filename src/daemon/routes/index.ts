/**
 * Every route's handler, from one daemon context: what the HTTP server serves and what the
 * in-process client calls.
 *
 * @packageDocumentation
 */

import { authHandlers } from './auth.ts'
import { connectionHandlers } from './connections.ts'
import type { DaemonContext, Handlers } from './context.ts'
import { diagnosticHandlers } from './diagnostics.ts'
import { networkHandlers } from './networks.ts'
import { peerHandlers } from './peers.ts'
import { proxyHandlers } from './proxies.ts'
import { statusHandlers } from './status.ts'
import { streamHandlers } from './streams.ts'
import { uiHandlers } from './ui.ts'

export type { DaemonContext, HandlerContext, Handlers, NetworksControl } from './context.ts'
export { checkInput, reportOf, statusOf } from './context.ts'

export function handlersFor(ctx: DaemonContext): Handlers {
  return {
    ...statusHandlers(ctx),
    ...peerHandlers(ctx),
    ...connectionHandlers(ctx),
    ...authHandlers(ctx),
    ...diagnosticHandlers(ctx),
    ...proxyHandlers(ctx),
    ...streamHandlers(ctx),
    ...uiHandlers(ctx),
    ...networkHandlers(ctx),
  }
}
