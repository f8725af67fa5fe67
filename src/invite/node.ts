/**
 * The short-lived libp2p node `peerup invite` and `peerup join` run. It is a plain peerup node
 * (the config's identity, relays and network) with two differences from the daemon's:
 *
 * - it offers no services at all: the only protocols it answers are identify, ping and, while an
 *   invite waits, `/peerup/invite/1.0.0`;
 * - its gater also admits a peer that is not in authorized_keys, but only while an invite is
 *   waiting and only on a relayed connection — the joiner, which nobody could have authorized yet.
 *   What such a peer can reach is the list above; nothing of the machine's services.
 *
 * @packageDocumentation
 */

import type { Connection, MultiaddrConnection, PeerId } from '@libp2p/interface'
import { AuthorizedPeers } from '../auth/gater.ts'
import { loadIdentity, peerIdOf } from '../auth/identity.ts'
import { loadNodeConfig, resolveIn } from '../config/load.ts'
import type { NodeConfig } from '../config/schema.ts'
import type { Logger } from '../log/index.ts'
import { createPeerupNode, type PeerupLibp2p } from '../p2p/node.ts'
import { type RelayState, ReservationSupervisor } from '../p2p/reservations.ts'
import { type Component, componentName, startAll, stopAll } from '../util/components.ts'

export interface PairingNodeOptions {
  configFile: string
  log: Logger
  /** Hold a reservation on the relays (the inviter does, so the joiner can reach it). */
  reserve: boolean
}

/**
 * What an invite needs of a node: the short-lived pairing node of `peerup invite`, or a running
 * daemon's runtime (`POST /v1/invite`), so that its daemon takes the new peer at once.
 */
export interface PairingHost {
  node: PeerupLibp2p
  config: NodeConfig
  configFile: string
  peerId: string
  authorizedKeysFile: string
  authorized: { reloadFromFile(): Promise<unknown> }
  supervisor: {
    waitForReservation(signal?: AbortSignal): Promise<void>
    status(): RelayState[]
    onUpdate(listener: (state: RelayState) => void): () => void
  }
  /** Lets the joiner (unknown, on a relayed connection) in until the returned function is called. */
  admitJoiners(): () => void
  /** The open, unlimited connection to a relay, if there is one. */
  relayConnection(relayPeerId: string): Connection | undefined
}

/** A running pairing node; the inviter admits joiners while its code is open. */
export type PairingNode = PairingHost & {
  dir: string
  authorized: AuthorizedPeers
  supervisor: ReservationSupervisor
  stop(): Promise<void>
}

/** The open, unlimited (not relayed) connection of `node` to `peerId`, if there is one. */
export function unlimitedConnection(
  node: Pick<PeerupLibp2p, 'getConnections'>,
  peerId: string,
): Connection | undefined {
  return node
    .getConnections()
    .find((c) => c.remotePeer.toString() === peerId && c.status === 'open' && c.limits === undefined)
}

export async function startPairingNode(options: PairingNodeOptions): Promise<PairingNode> {
  const { config, dir, file } = await loadNodeConfig(options.configFile)
  const log = options.log
  const privateKey = await loadIdentity(resolveIn(dir, config.identity.key_file))
  const peerId = peerIdOf(privateKey)
  const authorizedKeysFile = resolveIn(dir, config.security.authorized_keys_file)
  // Loaded when it starts, first of the components below.
  const authorized = new AuthorizedPeers([], authorizedKeysFile)
  // One token per invite that admits joiners now.
  const admitting = new Set<object>()
  const gating = config.security.enable_connection_gating
  const gater = {
    denyInboundEncryptedConnection: (peer: PeerId, maConn: MultiaddrConnection): boolean => {
      const id = peer.toString()
      if (!gating || authorized.has(id)) {
        return false
      }
      if (admitting.size > 0 && maConn.remoteAddr.toString().includes('/p2p-circuit')) {
        log.debug('admitting a peer to pair', { peer: id })
        return false
      }
      log.warn('connection refused: peer not in authorized_keys', { peer: id })
      return true
    },
  }
  const relays = config.relay.addresses
  const node = await createPeerupNode({
    privateKey,
    // No direct listener: the code names the relay, and the joiner only ever dials out.
    listen: [],
    relayCount: options.reserve ? new Set(relays.map((r) => r.split('/p2p/').pop())).size : 0,
    network: config.discovery.network,
    gater,
    start: false,
  })
  const supervisor = new ReservationSupervisor(
    { node, log: log.child('relays') },
    { relays: options.reserve ? relays : [] },
  )
  const components: Component[] = [authorized, node, supervisor]
  await startAll(components)
  return {
    node,
    config,
    dir,
    configFile: file,
    peerId,
    authorizedKeysFile,
    authorized,
    supervisor,
    admitJoiners: () => {
      const token = {}
      admitting.add(token)
      return () => admitting.delete(token)
    },
    relayConnection: (relayPeerId) => unlimitedConnection(node, relayPeerId),
    stop: () =>
      stopAll(components, (err, c) =>
        log.warn('stopping the pairing node failed', { component: componentName(c), error: err as Error }),
      ),
  }
}
