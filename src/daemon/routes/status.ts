/**
 * `status`, `services`, `shutdown`: the daemon itself.
 *
 * @packageDocumentation
 */

import { API_VERSION, type ServiceState, type StatusResponse } from '../../api/index.ts'
import { VERSION } from '../../version.ts'
import { sessionCounts } from '../node.ts'
import type { DaemonContext, Handlers } from './context.ts'

function services(ctx: DaemonContext): ServiceState[] {
  return ctx.rt.services.list().map((s) => ({
    name: s.name,
    protocol: s.protocol,
    localAddress: s.localAddress,
    allowedPeers: s.allowedPeers,
    source: s.source,
    activeConnections: s.activeConnections,
  }))
}

export function statusHandlers(ctx: DaemonContext): Pick<Handlers, 'status' | 'services' | 'shutdown'> {
  const { rt } = ctx
  return {
    status: async (): Promise<StatusResponse> => ({
      version: VERSION,
      apiVersion: API_VERSION,
      pid: process.pid,
      peerId: rt.peerId,
      network: rt.config.discovery.network,
      networkName:
        ctx.networkName ?? (rt.config.discovery.network === '' ? 'default' : rt.config.discovery.network),
      startedAt: ctx.startedAt.toISOString(),
      uptimeSeconds: Math.floor((Date.now() - ctx.startedAt.getTime()) / 1000),
      configFile: rt.configFile,
      listenAddresses: rt.node.getMultiaddrs().map(String),
      relays: rt.supervisor.status().map((r) => ({
        ...r,
        since: new Date(r.since).toISOString(),
        nextAttemptAt: r.nextAttemptAt === undefined ? undefined : new Date(r.nextAttemptAt).toISOString(),
      })),
      services: services(ctx),
      connectedPeers: new Set(rt.node.getConnections().map((c) => c.remotePeer.toString())).size,
      proxies: ctx.proxies.size,
      persistentProxies: ctx.persistentProxies?.list() ?? [],
      sessions: sessionCounts(rt),
    }),
    services: async () => services(ctx),
    shutdown: async () => {
      // After the answer is out: the client learns the daemon is stopping, then the socket goes.
      setImmediate(ctx.shutdown)
      return { stopping: true as const }
    },
  }
}
