/**
 * `connect` and `expose`: the daemon's proxy listeners, and services offered at run time.
 *
 * @packageDocumentation
 */

import { normaliseLocalAddress } from '../../config/ops.ts'
import { type DaemonContext, type Handlers, peerIdOf } from './context.ts'

/** The handlers of the proxy and service routes. */
export function proxyHandlers(
  ctx: DaemonContext,
): Pick<Handlers, 'connectList' | 'connectAdd' | 'connectRemove' | 'exposeAdd' | 'exposeRemove'> {
  const { rt, proxies } = ctx
  return {
    connectList: async () => proxies.list(),
    connectAdd: async (req, r) => {
      peerIdOf(ctx, req.peer)
      return proxies.add(req, r.signal)
    },
    connectRemove: async ({ id }) => {
      await proxies.remove(id)
      return { removed: id }
    },
    exposeAdd: async ({ name, localAddress, allowedPeers }) =>
      rt.services.expose({
        name,
        localAddress: normaliseLocalAddress(localAddress),
        allowedPeers: (allowedPeers ?? []).map((p) => peerIdOf(ctx, p)),
        source: 'runtime',
      }),
    exposeRemove: async ({ name }) => {
      await rt.services.unexpose(name)
      return { removed: name }
    },
  }
}
