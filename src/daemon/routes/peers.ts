/**
 * `peers`, `paths`, `resolve`: who the node is connected to, and how.
 *
 * @packageDocumentation
 */

import type { Connection, PeerId } from '@libp2p/interface'
import type { PeerState } from '../../api/index.ts'
import { resolvePeer } from '../../config/ops.ts'
import { bestConnection, classifyConnection } from '../../p2p/path.ts'
import type { DaemonContext, Handlers } from './context.ts'

/** The identify user agent a peer told us, if any. */
async function agentOf(ctx: DaemonContext, peer: PeerId): Promise<string | undefined> {
  try {
    const raw = (await ctx.rt.node.peerStore.get(peer)).metadata.get('AgentVersion')
    return raw === undefined ? undefined : new TextDecoder().decode(raw)
  } catch {
    return undefined
  }
}

/** Whether an agent is a peerup node or relay (what `daemon peers` shows without `--all`). */
function isPeerup(agent: string | undefined): boolean {
  return agent?.startsWith('peerup/') === true || agent?.startsWith('relay-server/') === true
}

export function peerHandlers(ctx: DaemonContext): Pick<Handlers, 'peers' | 'paths' | 'resolve'> {
  const { rt } = ctx
  return {
    peers: async ({ all }) => {
      const byPeer = new Map<string, Connection[]>()
      for (const c of rt.node.getConnections()) {
        if (c.status === 'open') {
          const id = c.remotePeer.toString()
          byPeer.set(id, [...(byPeer.get(id) ?? []), c])
        }
      }
      const out: PeerState[] = []
      for (const [id, conns] of byPeer) {
        const best = bestConnection(conns)
        const agent = best === undefined ? undefined : await agentOf(ctx, best.remotePeer)
        if (best === undefined || (all !== true && !isPeerup(agent))) {
          continue
        }
        out.push({
          peerId: id,
          name: ctx.events.nameOf(id),
          agent,
          authorized: rt.authorized.has(id),
          path: classifyConnection(best),
          connections: conns.length,
          since: new Date(Math.min(...conns.map((c) => c.timeline.open))).toISOString(),
        })
      }
      return out
    },
    paths: async () => ctx.events.paths(),
    resolve: async ({ name }) => resolvePeer(rt.config, name),
  }
}
