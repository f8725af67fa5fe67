/**
 * The small parts a node runtime (src/p2p/runtime.ts) is assembled from, beside the libp2p node,
 * the path tracker, the direct-path upgrader and the reservation supervisor: its gater with the
 * throttled log of refused strangers, the admission of joiners while an invite is open, and the
 * components that log path changes, hang up on revoked peers, offer the config's services and
 * dial the bootstrap peers.
 *
 * @packageDocumentation
 */

import { setTimeout as sleep } from 'node:timers/promises'
import type { ConnectionGater } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { type AuthorizedPeers, nodeGater } from '../auth/gater.ts'
import { resolveIn } from '../config/load.ts'
import type { NodeConfig } from '../config/schema.ts'
import type { Logger } from '../log/index.ts'
import type { Observer } from '../metrics/observer.ts'
import type { ServiceRegistry, ServiceSpec } from '../proxy/registry.ts'
import type { SessionService } from '../proxy/sessions.ts'
import type { Component } from '../util/components.ts'
import { PeerRefusedError } from './errors.ts'
import type { Members } from './members-only.ts'
import type { PeerupLibp2p } from './node.ts'
import { describePath } from './path.ts'
import type { PathChange, PathTracker } from './paths.ts'

/** A flood of strangers is refused by the thousand: one log line per this says how many. */
const STRANGER_LOG_INTERVAL_MS = 10_000

/** How long a revoked peer's RESETs may take to leave before its connections are closed. */
const RESET_BEFORE_HANGUP_MS = 1_000

/**
 * Whether unknown peers may connect over a relay: while at least one invite is open (the
 * daemon's `POST /v1/invite`), the joiner, whom nobody could have authorized yet, must get in.
 */
export class JoinerAdmission {
  #open = 0

  /** Whether an invite is open now. */
  get admitting(): boolean {
    return this.#open > 0
  }

  /**
   * Opens an admission. The returned function closes it and tells whether that closed the last
   * one; calling it again does nothing (and tells false).
   */
  open(): () => boolean {
    this.#open++
    let done = false
    return () => {
      if (done) {
        return false
      }
      done = true
      this.#open--
      return this.#open === 0
    }
  }
}

/** What the parts of a runtime use; each takes those it needs. */
export interface RuntimeComponents {
  node: PeerupLibp2p
  /** The config in effect: read at each use, since a reload changes it in place. */
  config: NodeConfig
  /** The config's directory, against which the authorized_keys file resolves. */
  dir: string
  authorized: AuthorizedPeers
  admission: JoinerAdmission
  observer: Observer
  log: Logger
  paths: PathTracker
  services: ServiceRegistry
  /** The sessions this node accepted: a revoked peer's are reset, so its side learns at once. */
  acceptedSessions: SessionService | undefined
  /** The sessions this node opened: those to a revoked peer are reset too, here and there. */
  openedSessions: { resetPeer(peer: string, err: Error): Promise<void> } | undefined
}

/**
 * The node's connection gater (authorized_keys, or everyone with gating off) and who counts as a
 * member for the DHT and the full identify (src/p2p/members-only.ts): authorized peers and this
 * node's relays and bootstrap peers. Refusals of strangers are counted in metrics and audited
 * one by one, but logged at most once per {@link STRANGER_LOG_INTERVAL_MS}.
 */
export function nodeGate(
  components: Pick<RuntimeComponents, 'authorized' | 'admission' | 'observer' | 'log' | 'config'>,
): { gater: ConnectionGater; members: Members } {
  const { authorized, admission, observer, log, config } = components
  let loggedAt = 0
  let notLogged = 0
  const logShed = (what: string, peer: string, reason: string): void => {
    notLogged++
    if (Date.now() - loggedAt >= STRANGER_LOG_INTERVAL_MS) {
      log.warn('unknown peers refused', { what, peer, reason, count: notLogged })
      loggedAt = Date.now()
      notLogged = 0
    }
  }
  const gater = nodeGater(authorized, {
    enabled: config.security.enable_connection_gating,
    admitRelayed: () => admission.admitting,
    onDecision: (peer, decision, where) => {
      observer.authDecision(peer, decision, where)
      log.debug('gater decision', { peer, decision, where })
      if (decision === 'deny') {
        log.warn('connection refused: peer not in authorized_keys', { peer, where })
      }
    },
    onShed: (what, peer, reason) => {
      observer.nodeRefusal(`${what}-handshake`, peer, reason)
      logShed(what, peer, reason)
    },
  })
  const members: Members = {
    isMember: (peer) =>
      !config.security.enable_connection_gating ||
      authorized.has(peer) ||
      config.relay.addresses.some((r) => r.endsWith(`/p2p/${peer}`)) ||
      config.discovery.bootstrap_peers.some((b) => b.endsWith(`/p2p/${peer}`)),
    onRefused: (peer, what) => {
      const reason =
        what === 'dht' ? 'the DHT is for members only' : 'strangers stay out of the routing table'
      observer.nodeRefusal(what, peer, reason)
      logShed(what, peer, reason)
    },
  }
  return { gater, members }
}

/** Logs every change of the path to a peer, with the peer's name from `names:`. */
export class PathLog implements Component {
  readonly #components: Pick<RuntimeComponents, 'paths' | 'log' | 'config'>
  readonly #onPath = (evt: CustomEvent<PathChange>): void => {
    const { peer, previous, current } = evt.detail
    const names = this.#components.config.names
    this.#components.log.info('path changed', {
      peer,
      from: previous === undefined ? 'none' : describePath(previous, names),
      to: current === undefined ? 'none' : describePath(current, names),
    })
  }

  constructor(components: Pick<RuntimeComponents, 'paths' | 'log' | 'config'>) {
    this.#components = components
  }

  start(): void {
    this.#components.paths.addEventListener('path', this.#onPath)
  }

  stop(): void {
    this.#components.paths.removeEventListener('path', this.#onPath)
  }
}

/**
 * Audits every change of authorized_keys and hangs up on the peers it removed: gating does not
 * touch connections that are already open. A revoked peer's sessions are reset first: closing the
 * connection alone would leave them waiting for it to come back.
 */
export class RevokedPeers implements Component {
  readonly #components: RuntimeComponents
  #unsubscribe: (() => void) | undefined

  constructor(components: RuntimeComponents) {
    this.#components = components
  }

  start(): void {
    const { node, authorized, observer, log, config, dir, acceptedSessions, openedSessions } =
      this.#components
    this.#unsubscribe = authorized.onChange((added, removed) => {
      observer.authChanged(added, removed, resolveIn(dir, config.security.authorized_keys_file))
      for (const id of removed) {
        // The RESETs first (bounded): a connection closed under them would leave the peer's side
        // of its sessions to find out by trying to come back.
        // Both ways: a session this node opened to the peer would otherwise try to come back over
        // a connection the gater now refuses, its local end waiting out the grace period.
        const err = new PeerRefusedError('authorization revoked')
        const reset = Promise.all([acceptedSessions?.resetPeer(id, err), openedSessions?.resetPeer(id, err)])
        void Promise.race([reset, sleep(RESET_BEFORE_HANGUP_MS)])
          .then(() => node.hangUp(peerIdFromString(id)))
          .catch(() => {})
        log.info('authorization revoked, connection closed', { peer: id })
      }
    })
  }

  stop(): void {
    this.#unsubscribe?.()
    this.#unsubscribe = undefined
  }
}

/** The `services:` entry `name` of `config` as the registry takes it; undefined when absent or disabled. */
export function configService(config: NodeConfig, name: string): ServiceSpec | undefined {
  const svc = config.services[name]
  return svc === undefined || !svc.enabled
    ? undefined
    : {
        name,
        localAddress: svc.local_address,
        ports: svc.ports,
        allowedPeers: svc.allowed_peers.map((p) => config.names[p] ?? p),
        source: 'config',
      }
}

export interface OfferedServicesInit {
  /** Offer the config's enabled services (the daemon does; one-shot commands do not); default false. */
  exposeConfig?: boolean
}

/**
 * The services this node offers: the config's enabled ones are exposed at start (when asked
 * to); at stop every session of every service is reset, so that its client sees a reset rather
 * than the teardown of the connection when the node stops next (the node drops the handlers).
 */
export class OfferedServices implements Component {
  readonly #components: Pick<RuntimeComponents, 'services' | 'config'>
  readonly #exposeConfig: boolean

  constructor(components: Pick<RuntimeComponents, 'services' | 'config'>, init: OfferedServicesInit = {}) {
    this.#components = components
    this.#exposeConfig = init.exposeConfig ?? false
  }

  /** Exposes the config's enabled services, when asked to. */
  async start(): Promise<void> {
    if (!this.#exposeConfig) {
      return
    }
    const { services, config } = this.#components
    for (const name of Object.keys(config.services)) {
      const spec = configService(config, name)
      if (spec !== undefined) {
        await services.expose(spec)
      }
    }
  }

  async stop(): Promise<void> {
    await this.#components.services.closeAll()
  }
}

/**
 * Dials the config's bootstrap peers once, at start, without waiting for them; the connections
 * are the node's from then on, so `stop()` has nothing to undo.
 */
export class BootstrapDials implements Component {
  readonly #components: Pick<RuntimeComponents, 'node' | 'config'>

  constructor(components: Pick<RuntimeComponents, 'node' | 'config'>) {
    this.#components = components
  }

  start(): void {
    const { node, config } = this.#components
    for (const b of config.discovery.bootstrap_peers) {
      node.dial(peerIdFromString(b.split('/p2p/').pop() as string)).catch(() => {})
    }
  }

  stop(): void {}
}
