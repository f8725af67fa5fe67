/**
 * A node assembled from a config directory: identity, authorized peers and gater, the libp2p
 * node, the reservation supervisor and (for the daemon) the exposed services. The daemon runs
 * one for its lifetime; `ping`, `proxy`, `ssh` without a daemon run a short-lived one.
 *
 * @packageDocumentation
 */

import type { PrivateKey, Stream } from '@libp2p/interface'
import { AuthorizedPeers } from '../auth/gater.ts'
import { loadIdentity, peerIdOf } from '../auth/identity.ts'
import { loadNodeConfig, resolveIn } from '../config/load.ts'
import { resolvePeer } from '../config/ops.ts'
import type { NodeConfig } from '../config/schema.ts'
import { type Env, readEnv } from '../env.ts'
import type { Logger } from '../log/index.ts'
import { NO_OBSERVER, type Observer } from '../metrics/observer.ts'
import type { ByteEnd } from '../pipe/end.ts'
import type { Tracked } from '../pipe/pipe.ts'
import { ProxiedConnections } from '../proxy/connections.ts'
import { SERVICE_DIAL_OPTIONS } from '../proxy/constants.ts'
import { ServiceRegistry } from '../proxy/registry.ts'
import { SessionService } from '../proxy/sessions.ts'
import { type Component, componentName, startAll, stopAll } from '../util/components.ts'
import { withRetry } from '../util/retry.ts'
import { BulkLinks } from './bulk.ts'
import { noSuchService, PeerRefusedError, ServiceRefusedError } from './errors.ts'
import { pingConnection, severConnection } from './liveness.ts'
import { createPeerupNode, iceServersFor, type PeerupLibp2p, type PeerupNodeOptions } from './node.ts'
import { classifyConnection, describePath, type PathInfo, pathOver } from './path.ts'
import { PathTracker } from './paths.ts'
import { TcpPuncher } from './punch.ts'
import { type Reached, reachPeer } from './reach.ts'
import { ReservationSupervisor } from './reservations.ts'
import {
  BootstrapDials,
  configService,
  JoinerAdmission,
  nodeGate,
  OfferedServices,
  PathLog,
  RevokedPeers,
  type RuntimeComponents,
} from './runtime-components.ts'
import { type Opened, plainServiceProtocols, SessionOpener } from './sessions.ts'
import { DirectUpgrader } from './upgrade.ts'
import { untilReachable } from './wait.ts'

export interface RuntimeOptions {
  configFile: string
  log: Logger
  /**
   * Offer the config's enabled services and hold reservations on the relays so peers can reach
   * this node (the daemon does; one-shot commands do not).
   */
  exposeServices: boolean
  /** Override the listen addresses (one-shot commands listen on nothing). */
  listen?: string[]
  /** Where metrics and audit events go (the daemon's); nothing by default. */
  observer?: Observer
  /** libp2p's metrics into the daemon's registry, when metrics are on. */
  libp2pMetrics?: PeerupNodeOptions['metrics']
  /** The environment (`PEERUP_SESSIONS`); the process environment by default. */
  env?: Env
}

/** A running node with everything around it. */
export type NodeRuntime = Omit<Runtime, 'start'>

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
  'ui',
] as const

function valueAt(config: NodeConfig, key: string): unknown {
  return key.split('.').reduce<unknown>((v, k) => (v as Record<string, unknown> | undefined)?.[k], config)
}

function same(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b)
}

/** How many relays `addresses` name (one relay may have an IPv4 and an IPv6 address). */
function relayCount(addresses: string[]): number {
  return new Set(addresses.map((r) => r.split('/p2p/').pop())).size
}

/** What a runtime is made from: what the config directory holds, and the node with its gate. */
type Parts = Pick<RuntimeComponents, 'config' | 'dir' | 'node' | 'authorized' | 'admission' | 'observer'> & {
  file: string
  privateKey: PrivateKey
  /** The node dials (and, when listening on `/webrtc`, accepts) WebRTC. */
  webrtc: boolean
}

/** Starts a node from its config file: its parts are made, then started as the runtime's components. */
export async function startNodeRuntime(options: RuntimeOptions): Promise<NodeRuntime> {
  const { config, dir, file } = await loadNodeConfig(options.configFile)
  const privateKey = await loadIdentity(resolveIn(dir, config.identity.key_file))
  const log = options.log
  const observer = options.observer ?? NO_OBSERVER
  // Loaded when it starts, first of the components.
  const authorized = new AuthorizedPeers([], resolveIn(dir, config.security.authorized_keys_file))
  const admission = new JoinerAdmission()
  const { gater, members } = nodeGate({ authorized, admission, observer, log, config })
  const relays = config.relay.addresses
  // `/webrtc` in the config turns the direct path across NAT on, for dialling too: a one-shot
  // command listens on nothing but still upgrades the connection it makes.
  const webrtc = config.network.listen_addresses.some((a) => a.startsWith('/webrtc'))
  const node = await createPeerupNode({
    privateKey,
    listen: options.listen ?? config.network.listen_addresses,
    relayCount: options.exposeServices ? relayCount(relays) : 0,
    network: config.discovery.network,
    gater,
    members,
    ...(webrtc ? { webrtc: { iceServers: iceServersFor(relays, config.relay.stun_port) } } : {}),
    metrics: options.libp2pMetrics,
    liveness: {
      onDead: (connection, err) =>
        log.info('connection stopped answering; closed', {
          peer: connection.remotePeer.toString(),
          path: describePath(classifyConnection(connection), config.names),
          error: err,
        }),
    },
    start: false,
  })
  const runtime = new Runtime(options, {
    config,
    dir,
    file,
    privateKey,
    node,
    authorized,
    admission,
    observer,
    webrtc,
  })
  await runtime.start()
  return runtime
}

/**
 * The node runtime: its components in the order they start (authorized_keys, the libp2p node, the
 * services, the path tracker and its log, the direct-path upgrader, the hang-up of revoked peers,
 * the bootstrap dials, the reservation supervisor), and what the daemon and the commands ask of it.
 */
class Runtime implements Component {
  readonly node: PeerupLibp2p
  readonly config: NodeConfig
  readonly dir: string
  readonly configFile: string
  readonly peerId: string
  readonly authorized: AuthorizedPeers
  readonly supervisor: ReservationSupervisor
  /**
   * The path to every connected peer (DIRECT via tcp/webrtc or RELAYED via which relay), when it
   * changed, and how the upgrade to a direct path went: events and counters for the daemon API,
   * `status --watch` and metrics.
   */
  readonly paths: PathTracker
  /** The services this node offers (config ones when started with `exposeServices`, plus run-time ones). */
  readonly services: ServiceRegistry
  /** The sessions this node opened (they move to a direct path when one appears). */
  readonly sessions: SessionOpener
  /** Punches direct TCP connections over relayed ones (the direct-path upgrader uses it). */
  readonly puncher: TcpPuncher
  /** Gives sessions with a bulk transfer a TLS connection of their own. */
  readonly bulk: BulkLinks
  /** The sessions this node accepted for its services (absent on a node that offers none). */
  readonly acceptedSessions: SessionService | undefined
  /** Every proxied connection open now, the last ones that ended, and the bytes of all (`daemon connections`). */
  readonly connections = new ProxiedConnections()
  readonly #log: Logger
  readonly #observer: Observer
  readonly #admission: JoinerAdmission
  /** Whether services are offered and reservations held (a one-shot client needs none). */
  readonly #exposeServices: boolean
  /** What the node was started with: keys that need a restart compare against it. */
  readonly #atStart: NodeConfig
  readonly #components: Component[]

  constructor(options: RuntimeOptions, parts: Parts) {
    const { config, dir, node, authorized, observer } = parts
    const log = options.log
    this.node = node
    this.config = config
    this.dir = dir
    this.configFile = parts.file
    this.peerId = peerIdOf(parts.privateKey)
    this.authorized = authorized
    this.#log = log
    this.#observer = observer
    this.#admission = parts.admission
    this.#exposeServices = options.exposeServices
    this.#atStart = structuredClone(config)
    this.services = new ServiceRegistry(node, {
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
      track: ({ service, peer, route }) =>
        this.connections.open({
          side: 'inbound',
          peerId: peer,
          service: service.name,
          local: service.localAddress,
          resumable: route.resumable,
          path: pathOver(route.connection),
        }),
    })
    this.paths = new PathTracker({ node })
    // A one-shot client needs no reservation: its dials to circuit addresses reach the relay themselves.
    this.supervisor = new ReservationSupervisor(
      { node, log: log.child('relays') },
      { relays: this.#exposeServices ? config.relay.addresses : [] },
    )
    const graceMs = (): number => config.proxy.resume_grace
    const env = options.env ?? readEnv()
    const allowed = (peer: string): boolean =>
      !config.security.enable_connection_gating || authorized.has(peer)
    this.acceptedSessions = options.exposeServices
      ? new SessionService(
          { node, services: this.services, log },
          {
            graceMs,
            probe: (connection, signal) => pingConnection(connection, signal).then(() => {}),
            sever: (connection, err) => severConnection(node, connection, err),
          },
        )
      : undefined
    // Handles punch requests on relayed connections and punches for the upgrader (src/p2p/punch.ts).
    this.puncher = new TcpPuncher({ node, log: log.child('punch'), allowed })
    const acceptedSessions = this.acceptedSessions
    // Bulk transfers on direct TCP get a TLS connection of their own (src/p2p/bulk.ts).
    this.bulk = new BulkLinks({
      node,
      log: log.child('bulk'),
      allowed,
      punched: (connection) => this.puncher.punched(connection),
      ...(acceptedSessions === undefined
        ? {}
        : { accept: (link, connection) => acceptedSessions.acceptLink(link, connection) }),
    })
    this.sessions = new SessionOpener(
      {
        node,
        paths: this.paths,
        log,
        reach: (peerId, signal) => this.reach(peerId, signal),
        ...(env.bulk ? { bulk: this.bulk } : {}),
      },
      { graceMs, resumable: env.sessions },
    )
    const components: RuntimeComponents = {
      node,
      config,
      dir,
      authorized,
      admission: parts.admission,
      observer,
      log,
      paths: this.paths,
      services: this.services,
      acceptedSessions: this.acceptedSessions,
      openedSessions: this.sessions,
    }
    // Stopped in reverse: the services' sessions are reset just before the node stops.
    this.#components = [
      // Stops last: its rate sampler runs while connections do.
      this.connections,
      authorized,
      node,
      new OfferedServices(components, { exposeConfig: options.exposeServices }),
      ...(this.acceptedSessions === undefined ? [] : [this.acceptedSessions]),
      this.paths,
      this.sessions,
      new PathLog(components),
      this.puncher,
      this.bulk,
      new DirectUpgrader(
        {
          node,
          tracker: this.paths,
          log: log.child('direct'),
          ...(env.punch ? { puncher: this.puncher } : {}),
        },
        { webrtc: parts.webrtc },
      ),
      new RevokedPeers(components),
      new BootstrapDials(components),
      this.supervisor,
    ]
  }

  async start(): Promise<void> {
    await startAll(this.#components, this.#stopFailed)
  }

  async stop(): Promise<void> {
    await stopAll(this.#components, this.#stopFailed)
  }

  readonly #stopFailed = (err: unknown, component: Component): void => {
    this.#log.warn('stopping a part of the node failed', {
      component: componentName(component),
      error: err as Error,
    })
  }

  /**
   * A record, in {@link Runtime.connections}, of an outbound connection whose far end `far` this
   * node opened (`openSession`), joined on this machine to `local` (a listener's address, `stdio`)
   * and accepted by `proxy`, when a proxy did; undefined for an end it did not open.
   */
  trackOutbound(far: ByteEnd, local: string, proxy?: string): Tracked | undefined {
    const route = this.sessions.routeOf(far)
    return route === undefined
      ? undefined
      : this.connections.open({
          side: 'outbound',
          peerId: route.peerId,
          service: route.service,
          local,
          proxy,
          resumable: route.resumable,
          path: pathOver(route.connection),
        })
  }

  /**
   * Resolves a name from `names:` (or a peer id) to a peer id, by the names in effect now; an
   * unknown name is a NotFoundError that lists the known ones.
   */
  resolve(peer: string): string {
    return resolvePeer(this.config, peer).peerId
  }

  /**
   * Reaches a peer (name or id) and reports the path: a live connection, else the relays raced
   * against a DHT lookup (only the relays with `useDht: false`).
   */
  reach(peer: string, signal?: AbortSignal, options: { useDht?: boolean } = {}): Promise<Reached> {
    // The relays of the config in effect: a reload may change them.
    return reachPeer(this.node, this.resolve(peer), {
      relays: this.config.relay.addresses,
      signal,
      useDht: options.useDht,
    }).then(
      (reached) => {
        if (reached.via !== 'existing') {
          this.#observer.pathDial(reached.path.type, true)
        }
        return reached
      },
      (err: unknown) => {
        this.#observer.pathDial(undefined, false)
        throw err
      },
    )
  }

  /**
   * Opens a resumable session to a peer's service (a plain stream with a peer that has no
   * sessions), reaching it first; retried with backoff on transient failures. With `waitMs`, it
   * waits that long for a peer that cannot be reached yet (src/p2p/wait.ts) instead of giving up
   * after `attempts`.
   */
  openSession(
    peer: string,
    service: string,
    opts: { signal?: AbortSignal | undefined; attempts?: number; waitMs?: number | undefined } = {},
  ): Promise<Opened> {
    if (opts.waitMs !== undefined) {
      // A lookup in the DHT takes seconds (5 s in the NAT lab) to find a peer or give up, and a
      // peer coming back (after its restart, or the relay's) is first seen on a relay: while
      // waiting, the tries ask the relays only, but for the third and every tenth, which also ask
      // the DHT (a peer no relay of ours carries).
      const useDht = (n: number): boolean =>
        n === 3 || n % 10 === 0 || this.config.relay.addresses.length === 0
      return untilReachable((signal, n) => this.#openSessionOnce(peer, service, signal, useDht(n)), {
        node: this.node,
        peer,
        // The peer id `peer` stands for now, or undefined when it does not resolve.
        peerId: () => {
          try {
            return this.resolve(peer)
          } catch {
            return undefined
          }
        },
        waitMs: opts.waitMs,
        signal: opts.signal,
        onRetry: ({ attempt, delayMs, error }) => {
          const fields = { peer, service, attempt, delayMs, waitMs: opts.waitMs, error: error as Error }
          // Once per connection at info (this connection waits), then at debug.
          this.#log[attempt === 1 ? 'info' : 'debug']('peer not reachable yet, waiting', fields)
        },
      })
    }
    return this.#retried('opening the session failed, retrying', peer, service, opts, () =>
      this.#openSessionOnce(peer, service, opts.signal),
    )
  }

  /** `open` retried with backoff on transient failures, each retry logged as `message`. */
  #retried<T>(
    message: string,
    peer: string,
    service: string,
    opts: { signal?: AbortSignal | undefined; attempts?: number },
    open: () => Promise<T>,
  ): Promise<T> {
    return withRetry(open, {
      attempts: opts.attempts ?? 3,
      signal: opts.signal,
      // A refusal will not change by retrying; a flaky relay path might.
      shouldRetry: (err: unknown) => !(err instanceof ServiceRefusedError || err instanceof PeerRefusedError),
      onRetry: ({ attempt, delayMs, error }) =>
        this.#log.warn(message, {
          peer,
          service,
          attempt,
          delayMs,
          error: error as Error,
        }),
    })
  }

  async #openSessionOnce(
    peer: string,
    service: string,
    signal: AbortSignal | undefined,
    useDht = true,
  ): Promise<Opened> {
    const reached = await this.reach(peer, signal, { useDht })
    const opened = await this.sessions.open(this.resolve(peer), service, reached, signal)
    this.#log.info('service session opened', {
      peer,
      service,
      path: describePath(opened.path, this.config.names),
      resumable: opened.session !== undefined,
    })
    return opened
  }

  /** Opens a plain stream to a peer's service, reaching it first; retried with backoff on transient failures. */
  openService(
    peer: string,
    service: string,
    opts: { signal?: AbortSignal; attempts?: number } = {},
  ): Promise<{ stream: Stream; path: PathInfo }> {
    return this.#retried('opening the stream failed, retrying', peer, service, opts, () =>
      this.#openServiceOnce(peer, service, opts.signal),
    )
  }

  async #openServiceOnce(
    peer: string,
    service: string,
    signal: AbortSignal | undefined,
  ): Promise<{ stream: Stream; path: PathInfo }> {
    const reached = await this.reach(peer, signal)
    const path = classifyConnection(reached.connection)
    try {
      const stream = await reached.connection.newStream(plainServiceProtocols(service, path), {
        ...SERVICE_DIAL_OPTIONS,
        ...(signal === undefined ? {} : { signal }),
      })
      this.#log.info('service stream opened', { peer, service, path: describePath(path, this.config.names) })
      return { stream, path }
    } catch (err) {
      if ((err as Error).name === 'UnsupportedProtocolError') {
        throw noSuchService(peer, service, err)
      }
      throw err
    }
  }

  /** Re-reads authorized_keys and closes connections of peers that lost authorization. */
  reloadAuthorized(): Promise<{ added: string[]; removed: string[] }> {
    return this.authorized.reloadFromFile()
  }

  /**
   * Lets peers not in authorized_keys connect over a relay (limited connections: no services)
   * until the returned function is called: the joiner of an open invite.
   */
  admitJoiners(): () => void {
    const close = this.#admission.open()
    return () => {
      if (close()) {
        this.#closeStrangers()
      }
    }
  }

  /**
   * Once the last invite closed: peers let in to pair that did not end up authorized have no
   * business staying (our own outbound connections go wherever we choose).
   */
  #closeStrangers(): void {
    if (!this.config.security.enable_connection_gating) {
      return
    }
    const isRelay = (peer: string): boolean =>
      this.config.relay.addresses.some((a) => a.endsWith(`/p2p/${peer}`))
    for (const c of this.node.getConnections()) {
      const peer = c.remotePeer.toString()
      if (c.direction === 'inbound' && !this.authorized.has(peer) && !isRelay(peer)) {
        c.close().catch(() => {})
      }
    }
  }

  /**
   * Applies a changed config without a restart where that can be done: names, services (with
   * `exposeServices`), relays. Reports what took effect and what needs a restart.
   */
  async applyConfig(next: NodeConfig): Promise<ConfigChanges> {
    const config = this.config
    const applied: string[] = []
    // Against what runs, not what the file said last: a change undone needs no restart.
    const restartNeeded: string[] = RESTART_KEYS.filter(
      (k) => !same(valueAt(this.#atStart, k), valueAt(next, k)),
    )
    if (!same(config.names, next.names)) {
      applied.push('names')
    }
    if (this.#exposeServices) {
      applied.push(...(await this.#applyServices(config, next)))
    }
    if (!same(config.relay.addresses, next.relay.addresses)) {
      this.supervisor.setRelays(this.#exposeServices ? next.relay.addresses : [])
      applied.push('relay.addresses')
      if (
        this.#exposeServices &&
        relayCount(next.relay.addresses) > relayCount(this.#atStart.relay.addresses)
      ) {
        // One circuit listener per relay is made when the node starts (src/p2p/node.ts).
        restartNeeded.push(
          'relay.addresses (more relays than at start: reservations on the new ones after a restart)',
        )
      }
    }
    // The runtime's config object is shared (commands read rt.config): change it in place.
    Object.assign(config, next)
    return { applied, restartNeeded }
  }

  /** Re-offers the config services that changed from `previous` to `next`; returns their keys. */
  async #applyServices(previous: NodeConfig, next: NodeConfig): Promise<string[]> {
    const applied: string[] = []
    const offered = new Map(this.services.list().map((s) => [s.name, s]))
    for (const name of new Set([...Object.keys(previous.services), ...Object.keys(next.services)])) {
      const before = configService(previous, name)
      const after = configService(next, name)
      if (same(before, after)) {
        continue
      }
      if (offered.get(name)?.source === 'config') {
        await this.services.unexpose(name)
      }
      if (after !== undefined) {
        await this.services.expose(after)
      }
      applied.push(`services.${name}`)
    }
    return applied
  }
}
