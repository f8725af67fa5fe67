/**
 * The relay role: a libp2p node running circuit relay v2 and a DHT server on the private
 * protocol, gated by relay_authorized_keys, with limits per relayed connection that depend on
 * who opens it, and a loopback `/healthz`.
 *
 * @packageDocumentation
 */

import { circuitRelayServer } from '@libp2p/circuit-relay-v2'
import type { Connection, PeerId, PrivateKey } from '@libp2p/interface'
import { createLibp2p, type Libp2pOptions } from 'libp2p'
import { TypedEventEmitter, type TypedEventTarget } from 'main-event'
import { AuthorizedPeers } from '../auth/gater.ts'
import { loadIdentity, peerIdOf } from '../auth/identity.ts'
import { ipOfAddr } from '../auth/pending.ts'
import { resolveIn } from '../config/load.ts'
import type { RelayConfig } from '../config/schema.ts'
import type { Logger } from '../log/index.ts'
import { NO_OBSERVER, type Observer } from '../metrics/observer.ts'
import { RELAY_AGENT, RELAY_STOP_PROTOCOL, RELAY_YAMUX_OPTIONS } from '../p2p/constants.ts'
import { type BaseServices, baseLibp2pOptions, type PeerupLibp2p } from '../p2p/node.ts'
import {
  type Component,
  componentName,
  type StopErrorHandler,
  startAll,
  stopAll,
} from '../util/components.ts'
import { VERSION } from '../version.ts'
import { type RefusalWhat, relayGater } from './gater.ts'
import { HealthServer } from './health.ts'
import { OpenInvites } from './invites.ts'
import { assertRelayPatched } from './patch-check.ts'
import { IdleStrangers, RefusalReport, RelayNotices, RevokedRelayPeers } from './relay-components.ts'
import { SpliceServer } from './splice.ts'
import { StunResponder } from './stun.ts'

export interface RelayServices extends BaseServices {
  relay: ReturnType<ReturnType<typeof circuitRelayServer>>
}

/** A refusal by the relay: a reservation or a relayed connection it would not make. */
export interface RelayRefusal {
  what: RefusalWhat
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
  /** The members' open invites: strangers reach only those members, and sponsoring follows them. */
  invites: OpenInvites
  /** The STUN responder nodes use for their direct (WebRTC) path; undefined when `stun.enabled` is false. */
  stun: StunResponder | undefined
  /** The splice port for members' bulk transfers; undefined when `splice.enabled` is false. */
  splice: SpliceServer | undefined
  /** Multiaddrs the relay listens on, each ending in /p2p/<relay>. */
  addresses(): string[]
  /** Re-reads relay_authorized_keys; closes the connections of peers that lost authorization. */
  reloadAuthorized(): Promise<{ added: string[]; removed: string[] }>
  stop(): Promise<void>
}

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

/** How long an inbound connection may take to finish its handshake (libp2p's default is 10 s). */
export const RELAY_HANDSHAKE_TIMEOUT_MS = 10_000

/** Inbound handshakes under way at once, from everyone together (libp2p's default is 10). */
const MAX_PENDING_CONNECTIONS = 512

/**
 * The limit for a relayed connection from `source`: a peer the relay knows gets the configured
 * session limits (none by default: an SSH session lasts days); a peer it does not know gets just
 * enough for pairing and WebRTC signalling. The limit is a duration in ms and data in bytes (both
 * directions together); undefined is no limit.
 */
function circuitLimitFor(config: RelayConfig, sourceAuthorized: boolean) {
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

/**
 * Starts a relay from its config: its components in the order they start (relay_authorized_keys,
 * the libp2p node, the disconnection of revoked peers, the notices to connected peers, the sweep
 * of idle strangers, `/healthz`, the STUN responder), stopped in reverse.
 */
export async function startRelay(options: StartRelayOptions): Promise<RelayHandle> {
  assertRelayPatched()
  const { config, dir, log } = options
  const privateKey = await loadIdentity(resolveIn(dir, config.identity.key_file))
  const observer = options.observer ?? NO_OBSERVER
  const keysFile = resolveIn(dir, config.security.authorized_keys_file)
  // Loaded when it starts, first of the components.
  const authorized = new AuthorizedPeers([], keysFile)
  const events = new TypedEventEmitter<RelayEvents>()
  const invites = new OpenInvites()
  const refusals = new RefusalReport({ observer, log, events })
  const node = await relayNode(options, privateKey, { authorized, invites, observer, refusals })
  const health = config.health.enabled
    ? new HealthServer(
        { connectedPeers: () => new Set(node.getConnections().map((c) => c.remotePeer.toString())).size },
        { listenAddress: config.health.listen_address },
      )
    : undefined
  const splice = config.splice.enabled
    ? new SpliceServer(
        {
          node,
          log: log.child('splice'),
          member: (peer) => !config.security.enable_connection_gating || authorized.has(peer),
          onBytes: (n) => observer.relayedBytes(n),
        },
        { listenAddress: config.splice.listen_address },
      )
    : undefined
  const { stun, stunAlternate } = stunResponders(config, log)
  const components: Component[] = [
    authorized,
    node,
    new RevokedRelayPeers({ node, authorized, observer, log }, { keysFile }),
    new RelayNotices({ node, authorized, events, log: log.child('notify') }),
    new IdleStrangers(
      { node, authorized, refusals },
      {
        idleMs: config.resources.unknown_peer_idle_timeout,
        gating: config.security.enable_connection_gating,
      },
    ),
    // A relay that cannot bind its STUN port does not half-run: what started stops again.
    ...(health === undefined ? [] : [health]),
    ...(stun === undefined ? [] : [stun]),
    ...(stunAlternate === undefined ? [] : [stunAlternate]),
    ...(splice === undefined ? [] : [splice]),
  ]
  const stopFailed = stopFailedLogger(log)
  await startAll(components, stopFailed)
  return {
    node,
    events,
    peerId: peerIdOf(privateKey),
    authorized,
    invites,
    stun,
    splice,
    addresses: () => node.getMultiaddrs().map((a) => a.toString()),
    reloadAuthorized: () => authorized.reloadFromFile(),
    stop: () => stopAll(components, stopFailed),
  }
}

/**
 * The STUN responder, and the second one on `stun.alternate_listen_address` when set: each
 * announces the other as OTHER-ADDRESS (RFC 5780), the way `peerup doctor` finds the second port.
 */
function stunResponders(
  config: RelayConfig,
  log: Logger,
): { stun: StunResponder | undefined; stunAlternate: StunResponder | undefined } {
  if (!config.stun.enabled) {
    return { stun: undefined, stunAlternate: undefined }
  }
  const alternateAddress = config.stun.alternate_listen_address
  let alternate: StunResponder | undefined
  const stun = new StunResponder(
    { log: log.child('stun') },
    { listenAddress: config.stun.listen_address, other: () => alternate?.endpoint },
  )
  if (alternateAddress !== '') {
    alternate = new StunResponder(
      { log: log.child('stun') },
      { listenAddress: alternateAddress, other: () => stun.endpoint },
    )
  }
  return { stun, stunAlternate: alternate }
}

/** The relay's libp2p node, not started yet. */
async function relayNode(
  options: StartRelayOptions,
  privateKey: PrivateKey,
  parts: { authorized: AuthorizedPeers; invites: OpenInvites; observer: Observer; refusals: RefusalReport },
): Promise<PeerupLibp2p<RelayServices>> {
  const { config, log } = options
  const { authorized, observer, refusals } = parts
  // The gater asks about connections and reservations, which only the node (made below) knows.
  let node: PeerupLibp2p<RelayServices> | undefined
  const gater = gaterFor(config, { ...parts, node: () => node })
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
    // Strangers' handshakes are bounded per IP by the gater; the pool as a whole must not be
    // what a single flood exhausts (docs/decisions/0004-strangers.md).
    maxPendingConnections: MAX_PENDING_CONNECTIONS,
    // Limited per IP by the gater, which audits a refusal and does not count members.
    inboundConnectionsPerSecondPerIp: Number.POSITIVE_INFINITY,
    handshakeTimeoutMs: RELAY_HANDSHAKE_TIMEOUT_MS,
    yamux: RELAY_YAMUX_OPTIONS,
    liveness: {
      onDead: (connection, err) =>
        log.info('connection stopped answering; closed', {
          peer: connection.remotePeer.toString(),
          error: err,
        }),
    },
    // The DHT and the full identify are for members only (src/p2p/members-only.ts).
    members: {
      isMember: (peer) => !config.security.enable_connection_gating || authorized.has(peer),
      onRefused: (peer, what) =>
        refusals.report(
          what,
          peer,
          what === 'dht' ? 'the DHT is for members only' : 'strangers stay out of the routing table',
        ),
    },
  })
  if (config.network.announce_addresses.length > 0) {
    base.addresses = { ...base.addresses, announce: config.network.announce_addresses }
  }
  node = await createLibp2p({
    ...base,
    ...(options.libp2pMetrics === undefined ? {} : { metrics: options.libp2pMetrics }),
    services: { ...base.services, relay: circuitRelayServer(relayServerInit(config, authorized, observer)) },
    start: false,
  } as unknown as Libp2pOptions<RelayServices>)
  return node
}

/** The relay's gater: who may connect, reserve and open circuits (src/relay/gater.ts). */
function gaterFor(
  config: RelayConfig,
  parts: Parameters<typeof relayNode>[2] & { node: () => PeerupLibp2p<RelayServices> | undefined },
): ReturnType<typeof relayGater> {
  const { authorized, invites, observer, refusals } = parts
  const connectionsOf = (peer: PeerId): Connection[] => parts.node()?.getConnections(peer) ?? []
  return relayGater(
    authorized,
    {
      ipOf: (peer) => {
        const conn = connectionsOf(peer).find((c) => c.status === 'open')
        return conn === undefined ? undefined : ipOfAddr(conn.remoteAddr)
      },
      reservedPeers: () =>
        [...(parts.node()?.services.relay.reservations ?? [])]
          .filter(([peer]) => connectionsOf(peer).some((c) => c.status === 'open'))
          .map(([peer, reservation]) => ({ peer: peer.toString(), ip: ipOfAddr(reservation.addr) })),
      openCircuits: () => countCircuits(parts.node()),
      connections: () => parts.node()?.getConnections() ?? [],
      admitStranger: (member, source) => invites.admit(member, source),
    },
    {
      enabled: config.security.enable_connection_gating,
      maxReservationsPerIp: config.resources.max_reservations_per_ip,
      maxCircuits: config.resources.max_circuits,
      strangers: {
        maxPendingPerIp: config.resources.max_pending_per_ip,
        maxConnectionsPerIp: config.resources.max_unknown_connections_per_ip,
        maxCircuitsPerIp: config.resources.max_unknown_circuits_per_ip,
        circuitsPerMinutePerIp: config.resources.unknown_circuits_per_minute_per_ip,
      },
      handshakeTimeoutMs: RELAY_HANDSHAKE_TIMEOUT_MS,
      onDecision: (peer, decision, where) => observer.authDecision(peer, decision, where),
      onRefusal: (what, peer, reason) => refusals.report(what, peer, reason),
    },
  )
}

/** The settings of circuit relay v2's server, with the hooks our patch of it adds. */
function relayServerInit(
  config: RelayConfig,
  authorized: AuthorizedPeers,
  observer: Observer,
): Parameters<typeof circuitRelayServer>[0] {
  return {
    reservations: {
      maxReservations: config.resources.max_reservations,
      reservationTtl: config.resources.reservation_ttl,
      // Limits are decided per relayed connection below, not per reservation: the stock default
      // (2 min, 128 KiB) would cut every SSH session after 128 KiB.
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
  } as Parameters<typeof circuitRelayServer>[0]
}

/** Logs a part of the relay whose `stop()` threw (the others stop all the same). */
export function stopFailedLogger(log: Logger): StopErrorHandler {
  return (err, component) =>
    log.warn('stopping a part of the relay failed', {
      component: componentName(component),
      error: err as Error,
    })
}

/** Relayed circuits open on the relay: each is one outbound stop stream to its target. */
export function countCircuits(node: PeerupLibp2p<RelayServices> | undefined): number {
  const stops = (c: Connection): number =>
    c.streams.filter((s) => s.protocol === RELAY_STOP_PROTOCOL && s.direction === 'outbound').length
  return (node?.getConnections() ?? []).reduce((n, c) => n + stops(c), 0)
}
