/**
 * `peerup status` without a daemon: what this node is configured to be, read from its files.
 *
 * @packageDocumentation
 */

import * as path from 'node:path'
import { loadIdentity, peerIdOf } from '../auth/identity.ts'
import { listAuthorizedPeers } from '../auth/ops.ts'
import { socketAnswers } from '../util/socket.ts'
import { loadNodeConfig, resolveIn } from './load.ts'
import { locateNetworkConfig, networkNameOf } from './networks.ts'
import { listRelays, listServices } from './ops.ts'
import { NODE_FILES } from './paths.ts'

/** The offline summary of a node. */
export type NodeSummary = Awaited<ReturnType<typeof summarizeNode>>

export async function summarizeNode(configFile: string) {
  const { dir, config } = await loadNodeConfig(configFile)
  const identity = resolveIn(dir, config.identity.key_file)
  const authorizedKeys = resolveIn(dir, config.security.authorized_keys_file)
  // A further network is served by the main config's daemon, on its socket (src/config/networks.ts).
  const located = locateNetworkConfig(configFile)
  const socket = path.join(path.dirname(located.mainConfigFile), NODE_FILES.socket)
  const peers = await listAuthorizedPeers(authorizedKeys, config.names)
  return {
    peerId: peerIdOf(await loadIdentity(identity)),
    network: config.discovery.network,
    /** Its name among the node's networks: its directory's under networks/, else `discovery.network` or `default`. */
    networkName: located.network ?? networkNameOf(config),
    files: { config: path.join(dir, path.basename(configFile)), identity, authorizedKeys, socket },
    daemon: { running: await socketAnswers(socket) },
    relays: listRelays(config),
    services: listServices(config),
    names: config.names,
    authorizedPeers: peers,
    // Authorized peers whose identity nobody has compared out of band yet (`peerup verify`).
    unverifiedPeers: peers.filter((p) => p.verified === undefined && !p.expired).length,
  }
}
