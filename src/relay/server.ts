/**
 * The relay role: a libp2p node running circuit relay v2 and a DHT server on the private
 * protocol, gated by relay_authorized_keys, with limits per relayed connection that depend on
 * who opens it, and a loopback `/healthz`.
 *
 * @packageDocumentation
 */

import * as path from 'node:path'
import { circuitRelayServer } from '@libp2p/circuit-relay-v2'
import type { Connection, PeerId } from '@libp2p/interface'
import { createLibp2p, type Libp2pOptions } from 'libp2p'
import { TypedEventEmitter, type TypedEventTarget } from 'main-event'
import { AuthorizedPeers } from '../auth/gater.ts'
import { loadIdentity, peerIdOf } from '../auth/identity.ts'
import { resolveIn } from '../config/load.ts'
import type { RelayConfig } from '../config/schema.ts'
import type { Logger } from '../log/index.ts'
import { NO_OBSERVER, type Observer } from '../metrics/observer.ts'
import { RELAY_AGENT, RELAY_STOP_PROTOCOL } from '../p2p/constants.ts'
import { type BaseServices, baseLibp2pOptions, type PeerupLibp2p } from '../p2p/node.ts'
import { RELAY_YAMUX_OPTIONS } from '../proxy/constants.ts'
import { VERSION } from '../version.ts'
import { RelayStartError } from './errors.ts'
import { relayGater } from './gater.ts'
import { type HealthServer, startHealthServer } from './health.ts'
import { assertRelayPatched } from './patch-check.ts'
import { type StunResponder, startStunResponder } from './stun.ts'

/** The limit of one relayed connection: duration in ms, data in bytes (both directions together). */
export interface CircuitLimit {
  duration?: number
  data?: bigint
}

/** Services of the relay node. */
export interface RelayServices extends BaseServices {
  relay: ReturnType<ReturnType<typeof circuitRelayServer>>
}

/** A refusal by the relay: a reservation or a relayed connection it would not make. */
export interface RelayRefusal {
  what: 'reservation' | 'circuit'
  /** The peer that asked. */
  peer: string
  reason: string
}

/** Events of a running relay: `refusal` ({@link RelayRefusal}) for metrics, logs and tests. */
export interface RelayEvents {
  refusal: CustomEvent<RelayRefusal>
}

/** A running relay. */
export interface RelayHandle {
  node: PeerupLibp2p<RelayServices>
  /** See {@link RelayEvents}. */
  events: TypedEventTarget<RelayEvents>
  peerId: string
  authorized: AuthorizedPeers
  health: HealthServer | undefined
  /** The STUN responder nodes use for their direct (WebRTC) path; undefined when `stun.enabled` is false. */
  stun: StunResponder | undefined
  /** Multiaddrs the relay listens on, each ending in /p2p/<relay>. */
  addresses(): string[]
  /** Re-reads relay_authorized_keys; closes the connections of peers that lost authorization. */
  reloadAuthorized(): Promise<{ added: string[]; removed: string[] }>
  stop(): Promise<void>
}

/** Options of {@link startRelay}. */
export interface StartRelayOptions {
  config: RelayConfig
  /** Directory of relay-server.yaml: relative paths resolve against it. */
  dir: string
  log: Logger
  /** Metrics and audit (see src/metrics/); nothing by default. */
  observer?: Observer
  /** libp2p's metrics into the relay's registry, when metrics are on. */
  libp2pMetrics?: Libp2pOptions['metrics']
}

function ipOfConnection(conn: Connection): string | undefined {
  const c = conn.remoteAddr.getComponents().find((x) => x.name === 'ip4' || x.name === 'ip6')
  return c?.value
}

/**
 * The limit for a relayed connection from `source`: a peer the relay knows gets the configured
 * session limits (none by default: an SSH session lasts days); a peer it does not know gets just
 * enough for pairing and WebRTC signalling.
 */
export function circuitLimitFor(config: RelayConfig, sourceAuthorized: boolean): CircuitLimit | undefined {
  const r = config.resources
  const duration = sourceAuthorized ? r.session_duration : r.unknown_peer_session_duration
  const data = sourceAuthorized ? r.session_data_limit : r.unknown_peer_data_limit
  if (duration === 0 && data === 0) {
    return undefined
  }
  return {
    ...(duration === 0 ? {} : { duration }),
    ...(data === 0 ? {} : { data: BigInt(data) }),
  }
}

/** Starts a relay from its config. */
export async function startRelay(options: StartRelayOptions): Promise<RelayHandle> {
  assertRelayPatched()
  const { config, dir, log } = options
  const observer = options.observer ?? NO_OBSERVER
  const privateKey = await loadIdentity(resolveIn(dir, config.identity.key_file))
  const authorized = await AuthorizedPeers.fromFile(resolveIn(dir, config.security.authorized_keys_file))
  let node: PeerupLibp2p<RelayServices> | undefined
  const events = new TypedEventEmitter<RelayEvents>()
  const connectionsOf = (peer: PeerId): Connection[] => node?.getConnections(peer) ?? []
  const gater = relayGater(
    authorized,
    {
      ipOf: (peer) => {
        const conn = connectionsOf(peer).find((c) => c.status === 'open')
        return conn === undefined ? undefined : ipOfConnection(conn)
      },
      reservedPeers: () => {
        const out: Array<{ peer: string; ip: string | undefined }> = []
        for (const [peer, reservation] of node?.services.relay.reservations ?? []) {
          if (connectionsOf(peer).some((c) => c.status === 'open')) {
            const ip = reservation.addr
              .getComponents()
              .find((x) => x.name === 'ip4' || x.name === 'ip6')?.value
            out.push({ peer: peer.toString(), ip })
          }
        }
        return out
      },
      openCircuits: () => countCircuits(node),
    },
    {
      enabled: config.security.enable_connection_gating,
      maxReservationsPerIp: config.resources.max_reservations_per_ip,
      maxCircuits: config.resources.max_circuits,
      onDecision: (peer, decision, where) => observer.authDecision(peer, decision, where),
      onRefusal: (what, peer, reason) => {
        observer.relayRefusal(what, reason)
        log.warn(`${what} refused`, { peer, reason })
        events.safeDispatchEvent('refusal', { detail: { what, peer, reason } })
      },
    },
  )
  const base = baseLibp2pOptions({
    privateKey,
    listen: config.network.listen_addresses,
    network: config.discovery.network,
    gater,
    agent: `${RELAY_AGENT}/${VERSION}`,
    dhtServer: true,
    // From the 301st peer on, libp2p's default reset every new connection (measured: 300
    // reservations and 150 circuits at most).
    maxConnections: config.resources.max_connections,
    yamux: RELAY_YAMUX_OPTIONS,
  })
  if (config.network.announce_addresses.length > 0) {
    base.addresses = { ...base.addresses, announce: config.network.announce_addresses }
  }
  const relayInit = {
    reservations: {
      maxReservations: config.resources.max_reservations,
      reservationTtl: config.resources.reservation_ttl,
      // Limits are decided per relayed connection below, not per reservation: the stock default
      // (2 min, 128 KiB) would cut every SSH session (PITFALLS: circuit relay v2).
      applyDefaultLimit: false,
    },
    // Every relayed connection opens one hop stream here and one stop stream to the target.
    maxInboundHopStreams: config.resources.max_circuits + 64,
    maxOutboundStopStreams: config.resources.max_circuits + 64,
    // Added by our patch of @libp2p/circuit-relay-v2 (patches/): the limit of each relayed
    // connection depends on its source, which the stock server cannot express.
    // Also ours: every byte the forwarder moves, for peerup_relay_relayed_bytes_total.
    onRelayedBytes: (n: number) => observer.relayedBytes(n),
    connectLimit: (source: PeerId) =>
      circuitLimitFor(config, !config.security.enable_connection_gating || authorized.has(source.toString())),
  }
  const init = {
    ...base,
    ...(options.libp2pMetrics === undefined ? {} : { metrics: options.libp2pMetrics }),
    services: {
      ...base.services,
      relay: circuitRelayServer(relayInit as Parameters<typeof circuitRelayServer>[0]),
    },
  } as unknown as Libp2pOptions<RelayServices>
  node = await createLibp2p(init)
  const relayNode = node
  const peerId = peerIdOf(privateKey)

  const closeRevoked = async (removed: string[]): Promise<void> => {
    for (const id of removed) {
      const peer = relayNode.getConnections().find((c) => c.remotePeer.toString() === id)?.remotePeer
      if (peer === undefined) {
        continue
      }
      // Internal API: the stock server has no public way to drop one reservation.
      ;(
        relayNode.services.relay as unknown as { reservationStore?: { removeReservation(p: PeerId): void } }
      ).reservationStore?.removeReservation(peer)
      await relayNode.hangUp(peer).catch(() => {})
      log.info('deauthorized peer disconnected', { peer: id })
    }
  }
  authorized.onChange((added, removed) => {
    observer.authChanged(added, removed, resolveIn(dir, config.security.authorized_keys_file))
    closeRevoked(removed).catch((err: unknown) =>
      log.warn('closing revoked peers failed', { error: err as Error }),
    )
  })

  const health = config.health.enabled
    ? await startHealthServer(config.health.listen_address, {
        connectedPeers: () => new Set(relayNode.getConnections().map((c) => c.remotePeer.toString())).size,
      })
    : undefined

  let stun: StunResponder | undefined
  if (config.stun.enabled) {
    try {
      stun = await startStunResponder({ listenAddress: config.stun.listen_address, log: log.child('stun') })
    } catch (err) {
      // Undo what was started so far: a relay that cannot bind its STUN port does not half-run.
      await health?.close()
      await relayNode.stop()
      authorized.stop()
      throw new RelayStartError(
        `cannot listen for STUN on udp ${config.stun.listen_address}: ${(err as Error).message}`,
        {
          hint: 'pick another stun.listen_address in relay-server.yaml, or set stun.enabled: false (nodes then get no direct path across NAT)',
          cause: err,
        },
      )
    }
    log.info('STUN responder listening', { listen: `udp ${stun.address.host}:${stun.address.port}` })
  }

  return {
    node: relayNode,
    events,
    peerId,
    authorized,
    health,
    stun,
    addresses: () => relayNode.getMultiaddrs().map((a) => a.toString()),
    reloadAuthorized: () => authorized.reloadFromFile(),
    stop: async () => {
      authorized.stop()
      await stun?.close()
      await health?.close()
      await relayNode.stop()
    },
  }
}

/** Relayed circuits open on the relay: each is one outbound stop stream to its target. */
export function countCircuits(node: PeerupLibp2p<RelayServices> | undefined): number {
  let n = 0
  for (const conn of node?.getConnections() ?? []) {
    for (const s of conn.streams) {
      if (s.protocol === RELAY_STOP_PROTOCOL && s.direction === 'outbound') {
        n++
      }
    }
  }
  return n
}

/** Where the relay keeps its files, for messages. */
export function relayFiles(dir: string, config: RelayConfig): { key: string; authorizedKeys: string } {
  return {
    key: path.join(dir, config.identity.key_file),
    authorizedKeys: path.join(dir, config.security.authorized_keys_file),
  }
}
