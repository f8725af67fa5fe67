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
import { ipOfAddr } from '../auth/pending.ts'
import { resolveIn } from '../config/load.ts'
import type { RelayConfig } from '../config/schema.ts'
import { INVITE_PROTOCOL } from '../invite/protocol.ts'
import type { Logger } from '../log/index.ts'
import { NO_OBSERVER, type Observer } from '../metrics/observer.ts'
import {
  RELAY_AGENT,
  RELAY_HOP_PROTOCOL,
  RELAY_STOP_PROTOCOL,
  RELAY_YAMUX_OPTIONS,
} from '../p2p/constants.ts'
import { type BaseServices, baseLibp2pOptions, type PeerupLibp2p } from '../p2p/node.ts'
import { VERSION } from '../version.ts'
import { RelayStartError } from './errors.ts'
import { type RefusalWhat, relayGater } from './gater.ts'
import { type HealthServer, startHealthServer } from './health.ts'
import { OpenInvites } from './invites.ts'
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

/** How long an inbound connection may take to finish its handshake (libp2p's default is 10 s). */
export const RELAY_HANDSHAKE_TIMEOUT_MS = 10_000

/** Inbound handshakes under way at once, from everyone together (libp2p's default is 10). */
const MAX_PENDING_CONNECTIONS = 512

/** Refusals of one kind are logged at most once per this, with the count of those not logged. */
const REFUSAL_LOG_INTERVAL_MS = 10_000

/**
 * Protocols that make a stranger's connection useful: a circuit (pairing with a member) or the
 * relay's own group codes. A stranger holding none of them for `unknown_peer_idle_timeout` is
 * disconnected.
 */
const STRANGER_BUSY_PROTOCOLS = new Set([RELAY_HOP_PROTOCOL, INVITE_PROTOCOL])

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
  const invites = new OpenInvites()
  const connectionsOf = (peer: PeerId): Connection[] => node?.getConnections(peer) ?? []
  const logRefusal = throttledRefusalLog(log)
  const gater = relayGater(
    authorized,
    {
      ipOf: (peer) => {
        const conn = connectionsOf(peer).find((c) => c.status === 'open')
        return conn === undefined ? undefined : ipOfAddr(conn.remoteAddr)
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
      connections: () => node?.getConnections() ?? [],
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
      onRefusal: (what, peer, reason) => {
        observer.relayRefusal(what, peer, reason)
        logRefusal(what, peer, reason)
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
    // Strangers' handshakes are bounded per IP by the gater; the pool as a whole must not be
    // what a single flood exhausts (docs/decisions/0004-strangers.md).
    maxPendingConnections: MAX_PENDING_CONNECTIONS,
    // Limited per IP by the gater, which audits a refusal and does not count members.
    inboundConnectionsPerSecondPerIp: Number.POSITIVE_INFINITY,
    handshakeTimeoutMs: RELAY_HANDSHAKE_TIMEOUT_MS,
    yamux: RELAY_YAMUX_OPTIONS,
    // The DHT and the full identify are for members only (src/p2p/members-only.ts).
    members: {
      isMember: (peer) => !config.security.enable_connection_gating || authorized.has(peer),
      onRefused: (peer, what) => {
        const reason =
          what === 'dht' ? 'the DHT is for members only' : 'strangers stay out of the routing table'
        observer.relayRefusal(what, peer, reason)
        logRefusal(what, peer, reason)
        events.safeDispatchEvent('refusal', { detail: { what, peer, reason } })
      },
    },
  })
  if (config.network.announce_addresses.length > 0) {
    base.addresses = { ...base.addresses, announce: config.network.announce_addresses }
  }
  const relayInit = {
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

  // Strangers that hold no circuit and no pairing exchange are let go: an idle identity costs the
  // relay ~100 KB and a slot of its per-IP allowance (docs/decisions/0004-strangers.md).
  const idleMs = config.resources.unknown_peer_idle_timeout
  const sweep = setInterval(
    () => {
      const now = Date.now()
      for (const conn of relayNode.getConnections()) {
        const id = conn.remotePeer.toString()
        if (
          conn.status !== 'open' ||
          !config.security.enable_connection_gating ||
          authorized.has(id) ||
          now - conn.timeline.open < idleMs ||
          conn.streams.some((s) => s.protocol !== undefined && STRANGER_BUSY_PROTOCOLS.has(s.protocol))
        ) {
          continue
        }
        conn.close().catch(() => conn.abort(new Error('idle unknown peer')))
        observer.relayRefusal('connection', id, 'idle unknown peer')
        logRefusal('connection', id, 'idle unknown peer')
        events.safeDispatchEvent('refusal', {
          detail: { what: 'connection', peer: id, reason: 'idle unknown peer' },
        })
      }
    },
    Math.max(Math.floor(idleMs / 3), 200),
  )
  sweep.unref()

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
      clearInterval(sweep)
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
    invites,
    health,
    stun,
    addresses: () => relayNode.getMultiaddrs().map((a) => a.toString()),
    reloadAuthorized: () => authorized.reloadFromFile(),
    stop: async () => {
      clearInterval(sweep)
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

/**
 * Logs refusals so that a flood cannot fill the log: the first of each kind (what and why, the
 * addresses and peer ids taken out) at once, then at most one line per
 * {@link REFUSAL_LOG_INTERVAL_MS} saying how many were not logged. Metrics and the audit log
 * still count every one.
 */
function throttledRefusalLog(log: Logger): (what: RefusalWhat, peer: string, reason: string) => void {
  const last = new Map<string, { at: number; suppressed: number }>()
  return (what, peer, reason) => {
    const kind = `${what}:${reason.replace(/\b(12D3Koo|Qm)\w+|\d+\.\d+\.\d+\.\d+|[0-9a-f:]*:[0-9a-f:]+/g, '…')}`
    const now = Date.now()
    const seen = last.get(kind)
    if (seen !== undefined && now - seen.at < REFUSAL_LOG_INTERVAL_MS) {
      seen.suppressed++
      return
    }
    last.set(kind, { at: now, suppressed: 0 })
    if (last.size > 256) {
      last.delete(last.keys().next().value as string)
    }
    log.warn(`${what} refused`, {
      peer,
      reason,
      ...(seen !== undefined && seen.suppressed > 0 ? { suppressed: seen.suppressed } : {}),
    })
  }
}
