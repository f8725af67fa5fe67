/**
 * The routes that go on: `events` (what the daemon sees, as it happens), `invite` (a pairing
 * answered by the daemon's node) and `dial` (a service stream for a CLI command to pipe).
 *
 * @packageDocumentation
 */

import type { DaemonEvent, InviteLine } from '../../api/index.ts'
import { loadNodeConfig, resolveIn } from '../../config/load.ts'
import { ConflictError } from '../../errors.ts'
import { inviteOn, type PairingHost } from '../../invite/invite.ts'
import { Channel } from '../../util/channel.ts'
import { VERSION } from '../../version.ts'
import { type DaemonContext, type Handlers, peerIdOf } from './context.ts'

/** Events a watcher may leave unread before it is cut off. */
const MAX_EVENT_BACKLOG = 10_000

/** The node as a pairing needs it. */
function pairingHost(ctx: DaemonContext): PairingHost {
  const { rt } = ctx
  return {
    node: rt.node,
    config: rt.config,
    configFile: rt.configFile,
    peerId: rt.peerId,
    authorizedKeysFile: resolveIn(rt.dir, rt.config.security.authorized_keys_file),
    authorized: rt.authorized,
    supervisor: rt.supervisor,
    admitJoiners: () => rt.admitJoiners(),
    relayConnection: (relayPeerId) =>
      rt.node
        .getConnections()
        .find(
          (c) => c.remotePeer.toString() === relayPeerId && c.status === 'open' && c.limits === undefined,
        ),
  }
}

export function streamHandlers(ctx: DaemonContext): Pick<Handlers, 'events' | 'invite' | 'dial'> {
  const { rt } = ctx
  let inviting = false
  return {
    events: (_input, r) => {
      const lines = new Channel<DaemonEvent>(MAX_EVENT_BACKLOG)
      lines.push({ type: 'hello', time: new Date().toISOString(), version: VERSION, peerId: rt.peerId })
      const off = ctx.events.subscribe((e) => {
        lines.push(e)
        if (e.type === 'stopping') {
          lines.end()
        }
      })
      r.signal.addEventListener('abort', () => lines.end(), { once: true })
      lines.onClose(off)
      return lines
    },
    invite: ({ ttlMs, name }, r) => {
      if (inviting) {
        throw new ConflictError('an invite is already waiting on this daemon', {
          hint: 'finish or cancel it (Ctrl+C in the terminal of that `peerup invite`) first',
        })
      }
      inviting = true
      const lines = new Channel<InviteLine>()
      inviteOn(pairingHost(ctx), {
        log: ctx.log.child('invite'),
        name,
        ttlMs,
        signal: r.signal,
        observer: ctx.observer,
        onProgress: (message) => lines.push({ type: 'progress', message }),
        // The code goes to the client that asked, over the cookie-guarded socket, and nowhere else.
        onCode: (code, decoded, short) =>
          lines.push({
            type: 'code',
            code,
            expires: decoded.expires.toISOString(),
            ...(short === undefined ? {} : { short }),
          }),
      })
        .then(async (result) => {
          // The pairing wrote names: into config.yaml: the daemon knows them before it answers.
          rt.config.names = (await loadNodeConfig(rt.configFile)).config.names
          lines.push({ type: 'paired', result })
          lines.end()
        })
        .catch((err: unknown) => lines.fail(err instanceof Error ? err : new Error(String(err))))
        .finally(() => {
          inviting = false
        })
      return lines
    },
    dial: async ({ peer, service, waitMs }, r) => {
      peerIdOf(ctx, peer)
      return (await rt.openSession(peer, service, { signal: r.signal, waitMs })).end
    },
  }
}
