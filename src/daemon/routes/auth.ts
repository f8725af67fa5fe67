/**
 * `auth`: list, add and remove lines of authorized_keys; a change is applied at once and a
 * removed peer's connections are closed.
 *
 * @packageDocumentation
 */

import { peerIdFromString } from '@libp2p/peer-id'
import { addAuthorizedPeer, listAuthorizedPeers, removeAuthorizedPeer } from '../../auth/ops.ts'
import { resolveIn } from '../../config/load.ts'
import { setPeerName } from '../../config/ops.ts'
import { ConflictError } from '../../errors.ts'
import { type DaemonContext, type Handlers, peerIdOf } from './context.ts'

export function authHandlers(ctx: DaemonContext): Pick<Handlers, 'authList' | 'authAdd' | 'authRemove'> {
  const { rt } = ctx
  const keysFile = resolveIn(rt.dir, rt.config.security.authorized_keys_file)
  return {
    authList: async () =>
      (await listAuthorizedPeers(keysFile, rt.config.names)).map((p) => ({
        peerId: p.peerId,
        name: p.name,
        comment: p.comment,
        verified: p.verified,
        expires: p.expires,
        expired: p.expired,
        group: p.group,
      })),
    authAdd: async ({ peer, comment, name }) => {
      const id = peerIdOf(ctx, peer)
      // `names:` is a null-prototype map: a name such as `constructor` finds nothing.
      const taken = name === undefined ? undefined : rt.config.names[name]
      if (taken !== undefined && taken !== id) {
        throw new ConflictError(`the name ${name} is already used for ${taken}`)
      }
      const added = await addAuthorizedPeer(keysFile, id, comment === undefined ? {} : { comment })
      if (name !== undefined) {
        await setPeerName(rt.configFile, name, added.peerId)
        rt.config.names = Object.assign(Object.create(null), rt.config.names, { [name]: added.peerId })
      }
      await rt.reloadAuthorized()
      return { peerId: added.peerId, closedConnections: 0 }
    },
    authRemove: async ({ peer }) => {
      const removed = await removeAuthorizedPeer(keysFile, peerIdOf(ctx, peer))
      const open = rt.node.getConnections().filter((c) => c.remotePeer.toString() === removed.peerId).length
      await rt.reloadAuthorized()
      // The reload's listener hangs up too, without waiting; here the answer waits until they are closed.
      await rt.node.hangUp(peerIdFromString(removed.peerId)).catch(() => {})
      return { peerId: removed.peerId, closedConnections: open }
    },
  }
}
