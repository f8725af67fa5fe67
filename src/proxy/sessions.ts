/**
 * The accepting side of resumable sessions (docs/decisions/0006-sessions.md): one handler of
 * `/peerup/session/1.0.0` for every service. A new session names its service in its first frame
 * and is checked and dialled like a plain stream of that service (src/proxy/service.ts); a session
 * that comes back names its id, and is taken up again only from the peer that opened it.
 *
 * @packageDocumentation
 */

import type { Connection, Libp2p, Stream } from '@libp2p/interface'
import type { Logger } from '../log/index.ts'
import { TransferInterruptedError } from '../pipe/errors.ts'
import { type Attach, attachFrame } from '../pipe/frames.ts'
import { type Link, SESSION_PROTOCOL, sendReset, streamLink } from '../pipe/link.ts'
import {
  DEFAULT_RESUME_GRACE_MS,
  Session,
  type SessionCounts,
  SessionTally,
  sessionIdText,
} from '../pipe/session.ts'
import type { Component } from '../util/components.ts'
import { SERVICE_HANDLE_OPTIONS } from './constants.ts'
import type { ServiceRegistry } from './registry.ts'

/** Sessions one peer may hold at once (live or waiting to be taken up again). */
export const MAX_SESSIONS_PER_PEER = 1024

export interface SessionServiceComponents {
  node: Libp2p
  services: ServiceRegistry
  log: Logger
}

export interface SessionServiceInit {
  /** How long a session waits for its opener to come back (config `proxy.resume_grace`). */
  graceMs?: () => number
  /** Whether a connection still answers (a ping); links over one that does not are severed. */
  probe?: (connection: Connection, signal: AbortSignal) => Promise<void>
  /** Aborts a connection that stopped answering; by default, only that connection. */
  sever?: (connection: Connection, err: Error) => void
}

/** The handler of the session protocol, and the sessions it accepted. */
export class SessionService implements Component {
  readonly #components: SessionServiceComponents
  readonly #init: SessionServiceInit
  readonly #sessions = new Map<string, { session: Session; peer: string }>()
  readonly #tally = new SessionTally()
  /** The connection each link runs over, for the path a session's bytes take. */
  readonly #connectionOf = new WeakMap<Link, Connection>()

  constructor(components: SessionServiceComponents, init: SessionServiceInit = {}) {
    this.#components = components
    this.#init = init
  }

  /** Sessions held now (live, or waiting to be taken up again). */
  get size(): number {
    return this.#sessions.size
  }

  /** What the sessions this node accepted are doing, and did (it never moves one: `moved` is 0). */
  counts(): SessionCounts {
    return this.#tally.counts([...this.#sessions.values()].map((e) => e.session))
  }

  async start(): Promise<void> {
    await this.#components.node.handle(
      SESSION_PROTOCOL,
      (stream, connection) => this.#accept(stream, connection),
      SERVICE_HANDLE_OPTIONS,
    )
  }

  async stop(): Promise<void> {
    await this.#components.node.unhandle(SESSION_PROTOCOL)
    for (const { session } of [...this.#sessions.values()]) {
      session.reset(new TransferInterruptedError('the node is stopping'))
    }
    this.#sessions.clear()
  }

  /**
   * Resets every session of `peer` (its authorization was revoked): its side learns at once.
   * Resolves once the RESETs have left, so that hanging up on the peer after it does not lose them.
   */
  async resetPeer(peer: string, err: Error): Promise<void> {
    const theirs = [...this.#sessions.values()].filter((e) => e.peer === peer)
    await Promise.all(theirs.map(({ session }) => session.cut(err)))
  }

  #accept(stream: Stream, connection: Connection): void {
    // Its probe pings the connection; severing it aborts the connection.
    const probe = this.#init.probe
    const link = streamLink(stream, connection.remotePeer.toString(), {
      sever: (err) =>
        this.#init.sever === undefined ? connection.abort(err) : this.#init.sever(connection, err),
      ...(probe === undefined ? {} : { probe: (signal: AbortSignal) => probe(connection, signal) }),
    })
    this.acceptLink(link, connection)
  }

  /**
   * Takes a link from the peer at the other end of `connection` (a session stream over it, or a
   * bulk link negotiated over it, src/p2p/bulk.ts): its first frame opens a session or brings one
   * back.
   */
  acceptLink(link: Link, connection: Connection): void {
    this.#connectionOf.set(link, connection)
    link.listen({
      frame: (frame) => {
        link.hold()
        if (frame.type !== 'attach') {
          this.#refuse(link, 'a session begins with ATTACH')
        } else if (frame.resume) {
          this.#resume(link, frame)
        } else {
          void this.#open(link, frame)
        }
      },
      drain: () => {},
      gone: () => {},
    })
  }

  #refuse(link: Link, reason: string): void {
    void sendReset(link, new TransferInterruptedError(reason))
  }

  /** A session comes back: only from the peer that opened it (anyone else learns nothing). */
  #resume(link: Link, attach: Attach): void {
    const entry = this.#sessions.get(sessionIdText(attach.id))
    if (entry === undefined || entry.peer !== link.peer) {
      this.#refuse(link, 'unknown session')
      return
    }
    entry.session.resumeOn(link, attach.received)
  }

  async #open(link: Link, attach: Attach): Promise<void> {
    const { log } = this.#components
    const id = sessionIdText(attach.id)
    let found: ReturnType<ServiceRegistry['find']>
    try {
      found = this.#components.services.find(attach.service, link.peer)
    } catch (err) {
      this.#refuse(link, (err as Error).message)
      return
    }
    const { handler } = found
    if (this.#sessions.has(id)) {
      this.#refuse(link, 'a session with this id exists')
      return
    }
    const held = [...this.#sessions.values()].filter((e) => e.peer === link.peer).length
    if (held >= MAX_SESSIONS_PER_PEER) {
      this.#refuse(link, `too many sessions from ${link.peer}`)
      return
    }
    const gone = new AbortController()
    // Held until the session takes over; a peer that goes meanwhile stops the dial.
    link.listen({ frame: () => {}, drain: () => {}, gone: () => gone.abort() }, true)
    let socket: Awaited<ReturnType<typeof handler.accept>>
    try {
      socket = await handler.accept(link.peer, gone.signal, found.port)
    } catch (err) {
      this.#refuse(link, (err as Error).message)
      return
    }
    const session = new Session({
      id: attach.id,
      name: `${attach.service} ${id.slice(0, 8)} from ${link.peer}`,
      role: 'acceptor',
      graceMs: this.#init.graceMs?.() ?? DEFAULT_RESUME_GRACE_MS,
      probe: (l, signal) => l.probe?.(signal) ?? Promise.resolve(),
      log: log.child('session'),
      ...this.#tally.watch({ onDone: () => this.#sessions.delete(id) }),
    })
    this.#sessions.set(id, { session, peer: link.peer })
    link.send(attachFrame({ id: attach.id, resume: false, received: 0, service: '' }))
    session.attach(link, attach.received)
    await handler.run(link.peer, socket, session, {
      connection: () => (session.link === undefined ? undefined : this.#connectionOf.get(session.link)),
      resumable: true,
    })
  }
}
