/**
 * `networkList`, `networkAdd`, `networkRemove`: the daemon's networks (docs/cli.md "Several
 * networks"). The same whichever network a request selects.
 *
 * @packageDocumentation
 */

import { type DaemonContext, type Handlers, networksOf } from './context.ts'

export function networkHandlers(
  ctx: DaemonContext,
): Pick<Handlers, 'networkList' | 'networkAdd' | 'networkRemove'> {
  return {
    networkList: async () => networksOf(ctx).list(),
    networkAdd: async ({ name }) => networksOf(ctx).startNetwork(name),
    networkRemove: async ({ name }) => {
      await networksOf(ctx).stopNetwork(name)
      return { removed: name }
    },
  }
}
