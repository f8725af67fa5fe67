/**
 * `proxies` (the proxies of config.yaml), `connect` (the daemon's proxy listeners until it stops),
 * `expose` (services offered at run time) and `socks/hold` (a gateway for as long as a request
 * lasts).
 *
 * @packageDocumentation
 */

import { normaliseLocalAddress } from '../../config/ops.ts'
import { holdGateway } from '../gateway.ts'
import { type DaemonContext, type Handlers, peerIdOf, persistentProxiesOf } from './context.ts'

type ProxyRoutes = 'proxyList' | 'proxyAdd' | 'proxyRemove' | 'proxyEnable' | 'proxyDisable'

export function proxyHandlers(
  ctx: DaemonContext,
): Pick<
  Handlers,
  | ProxyRoutes
  | 'connectList'
  | 'connectAdd'
  | 'connectHold'
  | 'connectRemove'
  | 'exposeAdd'
  | 'exposeRemove'
  | 'socksHold'
> {
  const { rt, proxies } = ctx
  return {
    proxyList: async () => ctx.persistentProxies?.list() ?? [],
    proxyAdd: (req) => persistentProxiesOf(ctx).add(req),
    proxyRemove: async ({ name }) => {
      await persistentProxiesOf(ctx).remove(name)
      return { removed: name }
    },
    proxyEnable: ({ name }) => persistentProxiesOf(ctx).setEnabled(name, true),
    proxyDisable: ({ name }) => persistentProxiesOf(ctx).setEnabled(name, false),
    connectList: async () => proxies.list(),
    connectAdd: async (req, r) => {
      peerIdOf(ctx, req.peer)
      return proxies.add(req, r.signal)
    },
    connectHold: (req, r) => {
      peerIdOf(ctx, req.peer)
      return proxies.hold(req, rt.config.proxy.connect_timeout, r.signal)
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
    socksHold: (req, r) =>
      holdGateway(req, { rt, log: ctx.log.child('gateway'), observer: ctx.observer }, r.signal),
    exposeRemove: async ({ name }) => {
      await rt.services.unexpose(name)
      return { removed: name }
    },
  }
}
