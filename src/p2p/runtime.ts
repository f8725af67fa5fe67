/**
 * A node assembled from a config directory: identity, authorized peers and gater, the libp2p
 * node, the reservation supervisor and (for the daemon) the exposed services. The daemon runs
 * one for its lifetime; `ping`, `proxy`, `ssh` without a daemon run a short-lived one.
 *
 * @packageDocumentation
 */

import type { Stream } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { AuthorizedPeers, nodeGater } from '../auth/gater.ts'
import { loadIdentity, peerIdOf } from '../auth/identity.ts'
import { loadNodeConfig, resolveIn } from '../config/load.ts'
import type { NodeConfig } from '../config/schema.ts'
import type { Logger } from '../log/index.ts'
import { NO_OBSERVER, type Observer } from '../metrics/observer.ts'
import { flowControlledProtocol } from '../pipe/stream.ts'
import { SERVICE_DIAL_OPTIONS } from '../proxy/constants.ts'
import { ServiceRegistry } from '../proxy/registry.ts'
import { withRetry } from '../util/retry.ts'
import { serviceProtocolId } from './constants.ts'
import { PeerRefusedError, ServiceRefusedError } from './errors.ts'
import { createPeerupNode, iceServersFor, type PeerupLibp2p, type PeerupNodeOptions } from './node.ts'
import { classifyConnection, describePath, type PathInfo } from './path.ts'
import { PathTracker } from './paths.ts'
import { type Reached, reachPeer } from './reach.ts'
import { ReservationSupervisor } from './reservations.ts'
import { DirectUpgrader } from './upgrade.ts'

/** Options of {@link startNodeRuntime}. */
export interface RuntimeOptions {
  configFile: string
  log: Logger
  /** Offer the config's enabled services (the daemon does; one-shot commands do not). */
  exposeServices: boolean
  /** Override the listen addresses (one-shot commands listen on nothing). */
  listen?: string[]
  /** Hold reservations on the relays so peers can reach this node; default: when exposing services. */
  reserve?: boolean
  /** Where metrics and audit events go (the daemon's); nothing by default. */
  observer?: Observer
  /** libp2p's metrics into the daemon's registry, when metrics are on. */
  libp2pMetrics?: PeerupNodeOptions['metrics']
}

/** A running node with everything around it. */
export interface NodeRuntime {
  node: PeerupLibp2p
  config: NodeConfig
  dir: string
  configFile: string
  peerId: string
  authorized: AuthorizedPeers
  supervisor: ReservationSupervisor
  /**
   * The path to every connected peer (DIRECT via tcp/webrtc or RELAYED via which relay), when it
   * changed, and how the upgrade to a direct path went: events and counters for the daemon API,
   * `status --watch` and metrics.
   */
  paths: PathTracker
  /** The services this node offers (config ones when started with `exposeServices`, plus run-time ones). */
  services: ServiceRegistry
  /** Reaches a peer (name or id) and reports the path. */
  reach(peer: string, signal?: AbortSignal): Promise<Reached>
  /** Opens a stream to a peer's service, reaching it first; retried with backoff on transient failures. */
  openService(
    peer: string,
    service: string,
    options?: { signal?: AbortSignal; attempts?: number },
  ): Promise<{ stream: Stream; path: PathInfo }>
  /** Resolves a name from `names:` (or a peer id) to a peer id. */
  resolve(peer: string): string
  /** Re-reads authorized_keys and closes connections of peers that lost authorization. */
  reloadAuthorized(): Promise<{ added: string[]; removed: string[] }>
  /**
   * Lets peers not in authorized_keys connect over a relay (limited connections: no services)
   * until the returned function is called: the joiner of an open invite.
   */
  admitJoiners(): () => void
  /**
   * Applies a changed config without a restart where that can be done: names, services (with
   * `exposeServices`), relays. Reports what took effect and what needs a restart.
   */
  applyConfig(next: NodeConfig): Promise<ConfigChanges>
  stop(): Promise<void>
}

/** What {@link NodeRuntime.applyConfig} did. */
export interface ConfigChanges {
  /** Keys applied live, like `names`, `services.ssh`, `relay.addresses`. */
  applied: string[]
  /** Keys that changed but take effect only at the next start. */
  restartNeeded: string[]
}

/** Keys of the config a running node cannot change under itself. */
const RESTART_KEYS = [
  'identity',
  'network',
  'discovery',
  'security',
  'relay.reservation_interval',
  'relay.stun_port',
  'telemetry',
] as const

function valueAt(config: NodeConfig, key: string): unknown {
  return key.split('.').reduce<unknown>((v, k) => (v as Record<string, unknown> | undefined)?.[k], config)
}

function same(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b)
}

/** Starts a node from its config file. */
export async function startNodeRuntime(options: RuntimeOptions): Promise<NodeRuntime> {
  const { config, dir, file } = await loadNodeConfig(options.configFile)
  const log = options.log
  const observer = options.observer ?? NO_OBSERVER
  const privateKey = await loadIdentity(resolveIn(dir, config.identity.key_file))
  const peerId = peerIdOf(privateKey)
  const authorized = await AuthorizedPeers.fromFile(resolveIn(dir, config.security.authorized_keys_file))
  // Open invites (the daemon's `POST /v1/invite`): while any is open, the joiner may connect.
  let admitting = 0
  // A flood of strangers is refused by the thousand: one line per 10 s says how many.
  let shedLogged = 0
  let shedSince = 0
  const shedLog = (what: string, peer: string, reason: string): void => {
    shedSince++
    if (Date.now() - shedLogged >= 10_000) {
      log.warn('unknown peers refused', { what, peer, reason, count: shedSince })
      shedLogged = Date.now()
      shedSince = 0
    }
  }
  const gater = nodeGater(authorized, {
    enabled: config.security.enable_connection_gating,
    admitRelayed: () => admitting > 0,
    onDecision: (peer, decision, where) => {
      observer.authDecision(peer, decision, where)
      log.debug('gater decision', { peer, decision, where })
      if (decision === 'deny') {
        log.warn('connection refused: peer not in authorized_keys', { peer, where })
      }
    },
    onShed: (what, peer, reason) => {
      observer.nodeRefusal(`${what}-handshake`, peer, reason)
      shedLog(what, peer, reason)
    },
  })
  const relays = config.relay.addresses
  const reserve = options.reserve ?? options.exposeServices
  // `/webrtc` in the config turns the direct path across NAT on, for dialling too: a one-shot
  // command listens on nothing but still upgrades the connection it makes.
  const webrtc = config.network.listen_addresses.some((a) => a.startsWith('/webrtc'))
  const node = await createPeerupNode({
    privateKey,
    listen: options.listen ?? config.network.listen_addresses,
    relayCount: reserve ? new Set(relays.map((r) => r.split('/p2p/').pop())).size : 0,
    network: config.discovery.network,
    gater,
    // The DHT and the full identify are for members only (src/p2p/members-only.ts): authorized
    // peers and this node's relays and bootstrap peers (read at each decision: `config` is
    // updated in place by applyConfig).
    members: {
      isMember: (peer) =>
        !config.security.enable_connection_gating ||
        authorized.has(peer) ||
        config.relay.addresses.some((r) => r.endsWith(`/p2p/${peer}`)) ||
        config.discovery.bootstrap_peers.some((b) => b.endsWith(`/p2p/${peer}`)),
      onRefused: (peer, what) => {
        const reason =
          what === 'dht' ? 'the DHT is for members only' : 'strangers stay out of the routing table'
        observer.nodeRefusal(what, peer, reason)
        shedLog(what, peer, reason)
      },
    },
    ...(webrtc ? { webrtc: { iceServers: iceServersFor(relays, config.relay.stun_port) } } : {}),
    ...(options.libp2pMetrics === undefined ? {} : { metrics: options.libp2pMetrics }),
  })
  const paths = new PathTracker(node)
  paths.start()
  paths.addEventListener('path', (evt) => {
    const { peer, previous, current } = evt.detail
    log.info('path changed', {
      peer,
      from: previous === undefined ? 'none' : describePath(previous, config.names),
      to: current === undefined ? 'none' : describePath(current, config.names),
    })
  })
  const upgrader = new DirectUpgrader(node, { tracker: paths, log: log.child('direct'), webrtc })
  upgrader.start()

  authorized.onChange((added, removed) => {
    observer.authChanged(added, removed, resolveIn(dir, config.security.authorized_keys_file))
    for (const id of removed) {
      // Gating does not touch open connections: a revoked peer is disconnected here.
      node.hangUp(peerIdFromString(id)).catch(() => {})
      log.info('authorization revoked, connection closed', { peer: id })
    }
  })

  const services = new ServiceRegistry(node, {
    log,
    isAuthorized: (peer) => !config.security.enable_connection_gating || authorized.has(peer),
    onConnection: (e) => {
      if (e.type === 'denied') {
        observer.serviceDenied(e.service, e.peer)
      } else if (e.type === 'opened') {
        observer.proxyOpened(e.service, 'inbound')
      } else if (e.type === 'closed') {
        observer.proxyClosed(e.service, 'inbound')
      }
    },
    // Seen from the peer using the service: what it sends comes in.
    onBytes: (service, direction, n) => observer.proxyBytes(service, direction, n),
  })
  if (options.exposeServices) {
    for (const [name, svc] of Object.entries(config.services)) {
      if (svc.enabled) {
        await services.expose({
          name,
          localAddress: svc.local_address,
          allowedPeers: svc.allowed_peers.map((p) => config.names[p] ?? p),
          source: 'config',
        })
      }
    }
  }

  for (const b of config.discovery.bootstrap_peers) {
    node.dial(peerIdFromString(b.split('/p2p/').pop() as string)).catch(() => {})
  }
  // A one-shot client needs no reservation: its dials to circuit addresses reach the relay themselves.
  const supervisor = new ReservationSupervisor(node, {
    relays: reserve ? relays : [],
    log: log.child('relays'),
  })
  supervisor.start()

  const resolve = (peer: string): string => {
    const id = config.names[peer] ?? peer
    peerIdFromString(id)
    return id
  }

  // The relays of the config in effect: a reload may change them.
  const reach = (peer: string, signal?: AbortSignal): Promise<Reached> =>
    reachPeer(node, resolve(peer), {
      relays: config.relay.addresses,
      ...(signal === undefined ? {} : { signal }),
    }).then(
      (reached) => {
        if (reached.via !== 'existing') {
          observer.pathDial(reached.path.type, true)
        }
        return reached
      },
      (err: unknown) => {
        observer.pathDial(undefined, false)
        throw err
      },
    )

  const isRelay = (peer: string): boolean => config.relay.addresses.some((a) => a.endsWith(`/p2p/${peer}`))
  const relayCountAtStart = new Set(relays.map((r) => r.split('/p2p/').pop())).size
  const serviceSpec = (c: NodeConfig, name: string) => {
    const svc = c.services[name]
    return svc === undefined || !svc.enabled
      ? undefined
      : {
          name,
          localAddress: svc.local_address,
          allowedPeers: svc.allowed_peers.map((p) => c.names[p] ?? p),
          source: 'config' as const,
        }
  }
  const applyConfig = async (next: NodeConfig): Promise<ConfigChanges> => {
    const applied: string[] = []
    const restartNeeded: string[] = RESTART_KEYS.filter((k) => !same(valueAt(config, k), valueAt(next, k)))
    const previous = config
    // The runtime's config object is shared (commands read rt.config): change it in place.
    if (!same(previous.names, next.names)) {
      applied.push('names')
    }
    if (options.exposeServices) {
      const offered = new Map(services.list().map((s) => [s.name, s]))
      for (const name of new Set([...Object.keys(previous.services), ...Object.keys(next.services)])) {
        const before = serviceSpec(previous, name)
        const after = serviceSpec(next, name)
        if (same(before, after)) {
          continue
        }
        if (offered.get(name)?.source === 'config') {
          await services.unexpose(name)
        }
        if (after !== undefined) {
          await services.expose(after)
        }
        applied.push(`services.${name}`)
      }
    }
    if (!same(previous.relay.addresses, next.relay.addresses)) {
      supervisor.setRelays(reserve ? next.relay.addresses : [])
      applied.push('relay.addresses')
      if (
        reserve &&
        new Set(next.relay.addresses.map((r) => r.split('/p2p/').pop())).size > relayCountAtStart
      ) {
        // One circuit listener per relay is made when the node starts (src/p2p/node.ts).
        restartNeeded.push(
          'relay.addresses (more relays than at start: reservations on the new ones after a restart)',
        )
      }
    }
    Object.assign(config, next)
    return { applied, restartNeeded }
  }

  const openService = async (
    peer: string,
    service: string,
    opts: { signal?: AbortSignal; attempts?: number } = {},
  ): Promise<{ stream: Stream; path: PathInfo }> => {
    const protocol = serviceProtocolId(service)
    return withRetry(
      async () => {
        const reached = await reach(peer, opts.signal)
        try {
          // A WebRTC stream has no backpressure: the service is framed with flow control there
          // (src/pipe/stream.ts); a peer without it is asked for the plain protocol.
          const protocols =
            classifyConnection(reached.connection).transport === 'webrtc'
              ? [flowControlledProtocol(service), protocol]
              : [protocol]
          const stream = await reached.connection.newStream(protocols, {
            ...SERVICE_DIAL_OPTIONS,
            ...(opts.signal === undefined ? {} : { signal: opts.signal }),
          })
          const path = classifyConnection(reached.connection)
          log.info('service stream opened', { peer, service, path: describePath(path, config.names) })
          return { stream, path }
        } catch (err) {
          if ((err as Error).name === 'UnsupportedProtocolError') {
            throw new ServiceRefusedError(`${peer} does not offer a service named ${service}`, {
              hint: `on ${peer}: \`peerup service add ${service} <host:port>\`, then restart its daemon`,
              cause: err,
            })
          }
          throw err
        }
      },
      {
        attempts: opts.attempts ?? 3,
        ...(opts.signal === undefined ? {} : { signal: opts.signal }),
        // A refusal will not change by retrying; a flaky relay path might.
        shouldRetry: (err: unknown) =>
          !(err instanceof ServiceRefusedError || err instanceof PeerRefusedError),
        onRetry: ({ attempt, delayMs, error }) =>
          log.warn('opening the stream failed, retrying', {
            peer,
            service,
            attempt,
            delayMs,
            error: error as Error,
          }),
      },
    )
  }

  return {
    node,
    config,
    dir,
    configFile: file,
    peerId,
    authorized,
    supervisor,
    paths,
    services,
    reach,
    openService,
    resolve,
    reloadAuthorized: () => authorized.reloadFromFile(),
    admitJoiners: () => {
      admitting++
      let done = false
      return () => {
        if (done) {
          return
        }
        done = true
        admitting--
        if (admitting === 0 && config.security.enable_connection_gating) {
          // Peers let in to pair that did not end up authorized have no business staying (our own
          // outbound connections go wherever we choose).
          for (const c of node.getConnections()) {
            if (
              c.direction === 'inbound' &&
              !authorized.has(c.remotePeer.toString()) &&
              !isRelay(c.remotePeer.toString())
            ) {
              c.close().catch(() => {})
            }
          }
        }
      }
    },
    applyConfig,
    stop: async () => {
      upgrader.stop()
      paths.stop()
      supervisor.stop()
      authorized.stop()
      // Sessions are reset first, so their clients see a reset rather than the connection teardown.
      await services.closeAll()
      await node.stop()
    },
  }
}
