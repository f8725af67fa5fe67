/**
 * The opening side of resumable sessions (docs/decisions/0006-sessions.md): every proxied
 * connection this node opens to a peer's service is a session. It survives its link — it is
 * attached again over whatever connection can be had — and it moves to a direct connection as
 * soon as one appears, so a transfer that began on a relay finishes direct. A peer that does not
 * speak the session protocol is served the plain stream of the service.
 *
 * @packageDocumentation
 */

import type { Connection, Stream } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import type { Logger } from '../log/index.ts'
import type { ByteEnd } from '../pipe/end.ts'
import { TransferInterruptedError } from '../pipe/errors.ts'
import { type Link, SESSION_PROTOCOL, streamLink } from '../pipe/link.ts'
import {
  handshake,
  newSessionId,
  Session,
  type SessionCounts,
  SessionRefusedError,
  SessionTally,
  sessionIdText,
} from '../pipe/session.ts'
import { flowControlledProtocol, serviceStreamEnd } from '../pipe/stream.ts'
import { SERVICE_DIAL_OPTIONS } from '../proxy/constants.ts'
import type { Component } from '../util/components.ts'
import { BULK_AFTER_BYTES, type BulkLinks } from './bulk.ts'
import { serviceProtocolId } from './constants.ts'
import { noSuchService, PeerRefusedError, ServiceRefusedError } from './errors.ts'
import { pingConnection, severConnection } from './liveness.ts'
import type { PeerupLibp2p } from './node.ts'
import { bestConnection, classifyConnection, describePath, type PathInfo } from './path.ts'
import type { PathChange, PathTracker } from './paths.ts'
import type { Reached } from './reach.ts'

/** How long one handshake may take before its connection is taken for dead. */
const HANDSHAKE_TIMEOUT_MS = 10_000

/**
 * Refusals in a row after which a session gives up on its peer: the peer's gater turns us away
 * (we were removed from its authorized_keys, which also hung up on us), so it will not take the
 * session back, and waiting out the grace period would only keep the local socket open. More
 * than one, so that a handshake that merely broke (read as a refusal) does not end a session.
 */
export const SESSION_REFUSALS_FINAL = 3

/**
 * The plain service protocols to offer over `path`: a WebRTC connection cannot pause a plain
 * stream, so a peer without sessions is asked for the framed one (src/pipe/stream.ts) there first.
 */
export function plainServiceProtocols(service: string, path: PathInfo): string[] {
  return [
    ...(path.transport === 'webrtc' ? [flowControlledProtocol(service)] : []),
    serviceProtocolId(service),
  ]
}

export interface SessionOpenerComponents {
  node: PeerupLibp2p
  paths: PathTracker
  log: Logger
  /** Reaches a peer (by id): a live connection, or a new one through the DHT or a relay. */
  reach: (peerId: string, signal?: AbortSignal) => Promise<Reached>
  /** Gives a session with a bulk transfer a link of its own (src/p2p/bulk.ts); none without. */
  bulk?: BulkLinks
}

export interface SessionOpenerInit {
  /** How long a session waits for a way back to its peer (config `proxy.resume_grace`). */
  graceMs: () => number
  /**
   * False: open plain service streams only, as with a peer without sessions (`PEERUP_SESSIONS=off`,
   * the benchmark's baseline for what resumability costs). Default true.
   */
  resumable?: boolean
}

/** A session (or, with a peer without sessions, a plain stream) and the path it took. */
export interface Opened {
  end: ByteEnd
  path: PathInfo
  /** Set when the end is a resumable session. */
  session?: Session
}

/** Where an end this node opened goes, and over what. */
export interface OpenedRoute {
  peerId: string
  service: string
  resumable: boolean
  /** The connection it runs over now; undefined while a session waits for its link. */
  connection: () => Connection | undefined
}

/** Opens sessions, and moves them to a better path when one appears. */
export class SessionOpener implements Component {
  readonly #components: SessionOpenerComponents
  readonly #init: SessionOpenerInit
  /** The live sessions, by peer id. */
  readonly #live = new Map<string, Set<Session>>()
  /** The connection each link runs over. */
  readonly #connectionOf = new WeakMap<Link, Connection>()
  /** Sessions that reached {@link BULK_AFTER_BYTES}: they get a bulk link wherever they run. */
  readonly #bulky = new WeakSet<Session>()
  /** Sessions whose bulk link is being set up. */
  readonly #bulking = new WeakSet<Session>()
  /** The bulk links this opener made. */
  readonly #bulkLinks = new WeakSet<Link>()
  /** Where each end this opener opened goes (`daemon connections` shows it). */
  readonly #routes = new WeakMap<ByteEnd, OpenedRoute>()
  readonly #tally = new SessionTally()
  /** A direct path appeared: the sessions on a relayed connection move to it. */
  readonly #onPath = (evt: CustomEvent<PathChange>): void => {
    if (evt.detail.current?.type === 'DIRECT') {
      this.#moveToDirect(evt.detail.peer)
    }
  }

  constructor(components: SessionOpenerComponents, init: SessionOpenerInit) {
    this.#components = components
    this.#init = init
  }

  start(): void {
    this.#components.paths.addEventListener('path', this.#onPath)
  }

  /**
   * Ends the sessions it opened with a reset, as the session service does with those it accepted:
   * with the node stopped (a daemon's network removed, docs/cli.md "Several networks") nothing
   * could attach them again, and their local sockets would wait out the grace period for nothing.
   */
  stop(): void {
    this.#components.paths.removeEventListener('path', this.#onPath)
    for (const session of [...this.#live.values()].flatMap((set) => [...set])) {
      session.reset(new TransferInterruptedError('the node is stopping'))
    }
  }

  /**
   * Resets every session this node opened to `peer` (its authorization was revoked): its side
   * gets a RESET, the local end the error. Resolves once the RESETs have left.
   */
  async resetPeer(peer: string, err: Error): Promise<void> {
    const live = [...(this.#live.get(peer) ?? [])]
    await Promise.all(live.map((session) => session.cut(err)))
  }

  /** Sessions this node opened that are not over. */
  get size(): number {
    return [...this.#live.values()].reduce((n, set) => n + set.size, 0)
  }

  /** What the sessions this node opened are doing, and did. */
  counts(): SessionCounts {
    return this.#tally.counts([...this.#live.values()].flatMap((set) => [...set]))
  }

  /** The path the session's link takes now; undefined while it has no link. */
  pathOf(session: Session): PathInfo | undefined {
    const link = session.link
    const connection = link === undefined ? undefined : this.#connectionOf.get(link)
    return connection === undefined ? undefined : classifyConnection(connection)
  }

  /** Where `end` goes, when this opener opened it. */
  routeOf(end: ByteEnd): OpenedRoute | undefined {
    return this.#routes.get(end)
  }

  /** Opens a session to `service` on `peerId` over `reached`'s connection. */
  async open(peerId: string, service: string, reached: Reached, signal?: AbortSignal): Promise<Opened> {
    const connection = reached.connection
    const path = classifyConnection(connection)
    const fallback = plainServiceProtocols(service, path)
    const offer = this.#init.resumable === false ? fallback : [SESSION_PROTOCOL, ...fallback]
    const stream = await connection.newStream(offer, {
      ...SERVICE_DIAL_OPTIONS,
      ...(signal === undefined ? {} : { signal }),
    })
    if (stream.protocol !== SESSION_PROTOCOL) {
      const end = serviceStreamEnd(stream)
      this.#routes.set(end, { peerId, service, resumable: false, connection: () => connection })
      return { end, path }
    }
    const id = newSessionId()
    const link = this.#link(stream, connection)
    let theirs: number
    try {
      theirs = await handshake(link, { id, resume: false, received: 0, service }, this.#timeout(signal))
    } catch (err) {
      if (err instanceof SessionRefusedError) {
        throw /no service (named|on port)/.test(err.message)
          ? noSuchService(peerId, service, err)
          : new ServiceRefusedError(err.message, {
              hint: `on ${peerId}: check allowed_peers of service ${service} and that the service runs`,
              cause: err,
            })
      }
      throw err
    }
    const session = this.#session(peerId, service, id)
    this.#routes.set(session, {
      peerId,
      service,
      resumable: true,
      connection: () => (session.link === undefined ? undefined : this.#connectionOf.get(session.link)),
    })
    session.attach(link, theirs)
    if (path.type !== 'DIRECT') {
      // A direct connection may have come while the handshake ran, its 'path' event before this.
      this.#moveToDirect(peerId)
    }
    return { end: session, path, session }
  }

  #session(peerId: string, service: string, id: Uint8Array): Session {
    const { log } = this.#components
    const live = this.#live.get(peerId) ?? new Set<Session>()
    this.#live.set(peerId, live)
    const session = new Session({
      id,
      name: `${service} ${sessionIdText(id).slice(0, 8)} to ${peerId}`,
      role: 'opener',
      graceMs: this.#init.graceMs(),
      reconnect: this.#reconnector(peerId),
      probe: (link, signal) => link.probe?.(signal) ?? Promise.resolve(),
      log: log.child('session'),
      ...(this.#components.bulk === undefined
        ? {}
        : { volume: { bytes: BULK_AFTER_BYTES, reached: () => this.#wantsBulk(session) } }),
      ...this.#tally.watch({
        onLink: (attached, err) =>
          log.info(attached ? 'session attached' : 'session lost its link', {
            session: session.name,
            ...(err === undefined ? {} : { error: err }),
          }),
        onDone: () => {
          live.delete(session)
          if (live.size === 0) {
            this.#live.delete(peerId)
          }
        },
      }),
    })
    live.add(session)
    return session
  }

  /**
   * The session's way back to `peerId`: {@link SessionOpener.#reconnect}, except that the peer
   * refusing us {@link SESSION_REFUSALS_FINAL} times in a row ends the session (a
   * {@link SessionRefusedError}) instead of being tried again until the grace period ends.
   */
  #reconnector(peerId: string): (signal: AbortSignal) => Promise<Link> {
    let refusals = 0
    return async (signal) => {
      try {
        const link = await this.#reconnect(peerId, signal)
        refusals = 0
        return link
      } catch (err) {
        refusals = err instanceof PeerRefusedError ? refusals + 1 : 0
        if (refusals >= SESSION_REFUSALS_FINAL) {
          throw new SessionRefusedError((err as PeerRefusedError).message, { cause: err })
        }
        throw err
      }
    }
  }

  /** A new link to the peer's session endpoint, over the best connection there is (or a new one). */
  async #reconnect(peerId: string, signal: AbortSignal): Promise<Link> {
    const reached = await this.#components.reach(peerId, this.#timeout(signal))
    return this.#linkOver(reached.connection, this.#timeout(signal))
  }

  /** A new link over `connection` to the peer's session endpoint. */
  async #linkOver(connection: Connection, signal: AbortSignal): Promise<Link> {
    const stream = await connection.newStream(SESSION_PROTOCOL, { ...SERVICE_DIAL_OPTIONS, signal })
    return this.#link(stream, connection)
  }

  #link(stream: Stream, connection: Connection): Link {
    const link = streamLink(stream, connection.remotePeer.toString(), {
      probe: (signal) => pingConnection(connection, signal).then(() => {}),
      sever: (err) => severConnection(this.#components.node, connection, err),
    })
    this.#connectionOf.set(link, connection)
    return link
  }

  #timeout(signal?: AbortSignal): AbortSignal {
    const timeout = AbortSignal.timeout(HANDSHAKE_TIMEOUT_MS)
    return signal === undefined ? timeout : AbortSignal.any([signal, timeout])
  }

  /** Moves the peer's sessions that run over a relayed connection to its direct one, if it has one. */
  #moveToDirect(peer: string): void {
    const live = this.#live.get(peer)
    if (live === undefined) {
      return
    }
    const { node, log } = this.#components
    const direct = bestConnection(node.getConnections(peerIdFromString(peer)))
    if (direct === undefined || classifyConnection(direct).type !== 'DIRECT') {
      return
    }
    for (const session of live) {
      const link = session.link
      const current = link === undefined ? undefined : this.#connectionOf.get(link)
      if (!session.attached || current === undefined || classifyConnection(current).type === 'DIRECT') {
        continue
      }
      void this.#move(session, direct).catch((err: unknown) =>
        log.info('session stays on its path', { session: session.name, error: err as Error }),
      )
    }
  }

  async #move(session: Session, connection: Connection): Promise<void> {
    await session.moveTo(await this.#linkOver(connection, this.#timeout()), this.#timeout())
    this.#tally.moved++
    this.#components.log.info('session moved to a direct path', { session: session.name })
    if (this.#bulky.has(session)) {
      await this.#toBulk(session)
    }
  }

  /** The session carries a bulk transfer: it gets a link of its own (now, and after a move). */
  #wantsBulk(session: Session): void {
    this.#bulky.add(session)
    void this.#toBulk(session)
  }

  /**
   * Moves the session onto a bulk link beside the connection its stream runs over (direct TCP, or
   * a relay that splices), if there is one.
   */
  async #toBulk(session: Session): Promise<void> {
    const { bulk, log } = this.#components
    const link = session.link
    const connection = link === undefined ? undefined : this.#connectionOf.get(link)
    if (
      bulk === undefined ||
      !session.attached ||
      this.#bulking.has(session) ||
      (link !== undefined && this.#bulkLinks.has(link)) ||
      connection === undefined ||
      !bulk.canCarry(connection)
    ) {
      return
    }
    this.#bulking.add(session)
    try {
      const bulkLink = await bulk.open(connection)
      this.#connectionOf.set(bulkLink, connection)
      this.#bulkLinks.add(bulkLink)
      await session.moveTo(bulkLink, this.#timeout())
      log.info('session moved to a bulk link', {
        session: session.name,
        path: describePath(classifyConnection(connection)),
      })
    } catch (err) {
      log.info('session stays on its stream', { session: session.name, error: err as Error })
    } finally {
      this.#bulking.delete(session)
    }
  }
}
