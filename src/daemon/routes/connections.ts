/**
 * `connections`: who is connected through this node and how much — the proxied connections open
 * now, the last ones that ended, and the bytes by peer and by service (src/proxy/connections.ts).
 *
 * @packageDocumentation
 */

import { sumBy } from '../../proxy/connections.ts'
import type { DaemonContext, Handlers } from './context.ts'

export function connectionHandlers(ctx: DaemonContext): Pick<Handlers, 'connections'> {
  const { rt } = ctx
  // Names as they are now: a peer renamed under names: shows under its new name.
  const named = <T extends { peerId: string }>(item: T): T & { name?: string } => {
    const name = ctx.events.nameOf(item.peerId)
    return name === undefined ? item : { ...item, name }
  }
  return {
    connections: async () => {
      const totals = rt.connections.totals()
      return {
        open: rt.connections.list().map(named),
        closed: rt.connections.history().map(named),
        peers: sumBy(totals, (t) => t.peerId).map(({ of, ...sum }) => named({ peerId: of.peerId, ...sum })),
        services: sumBy(totals, (t) => `${t.side} ${t.service}`).map(({ of, ...sum }) => ({
          service: of.service,
          side: of.side,
          ...sum,
        })),
      }
    },
  }
}
