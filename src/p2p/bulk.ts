/**
 * Bulk links (docs/decisions/0015-bulk-links.md): a session that carries a bulk transfer over a
 * direct TCP connection moves onto a TCP connection of its own with TLS 1.3 from node:tls, whose
 * record layer runs in OpenSSL, instead of noise + yamux, whose per-frame JavaScript caps the
 * direct path below one `ssh -L` (docs/decisions/0007-direct-path-transport.md: 492–507 MB/s for
 * node:tls against 288 for noise + yamux on the same punched path).
 *
 * Negotiated on `/peerup/bulk/1.0.0` over the direct libp2p connection to the peer, which noise
 * has authenticated: the opener sends a fresh 256-bit key and a nonce there, and the TLS handshake
 * on the new socket uses them as an external pre-shared key (TLS 1.3 `psk_dhe_ke`: an ephemeral
 * ECDHE share besides, so the key alone does not decrypt a recorded transfer). Whoever completes
 * the handshake knew the key, which only the authenticated peer was given: the link's peer is the
 * connection's, with no certificates.
 *
 * How the socket is had depends on how the libp2p connection was:
 * - `listen`: one side dialled the other (a LAN or public address): the acceptor listens on a
 *   fresh port for the opener, once.
 * - `punch`: the connection was punched (src/p2p/punch.ts), so neither side takes unsolicited
 *   connections: both connect from a fresh port to the other's at once, one round.
 *
 * Messages, length-prefixed JSON frames on the stream: opener → `{ mode, port?, nonce, key }`;
 * acceptor → `{ port, nonce }` or `{ error }`; then, to punch, opener → `{ go: true }`.
 * A bulk link that cannot be had leaves the session where it was.
 *
 * @packageDocumentation
 */

import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import * as net from 'node:net'
import type * as tls from 'node:tls'
import type { Connection, IdentifyResult, Stream } from '@libp2p/interface'
import { lpStream } from '@libp2p/utils'
import { z } from 'zod'
import { PeerupError } from '../errors.ts'
import type { Logger } from '../log/index.ts'
import { type Link, type StreamLinkOptions, socketLink } from '../pipe/link.ts'
import { resetSocket } from '../pipe/node.ts'
import type { Component } from '../util/components.ts'
import { SPLICE_PROTOCOL, SPLICE_TOKEN_BYTES } from './constants.ts'
import type { PeerupLibp2p } from './node.ts'
import { classifyConnection } from './path.ts'
import {
  decode,
  describe,
  encode,
  freePort,
  ipOf,
  PUNCH_RETRY_MS,
  PUNCH_WINDOW_MS,
  simultaneousOpen,
} from './punch.ts'

/**
 * node:tls, loaded with the first bulk link rather than at start (synchronously, so nothing else
 * runs between a socket and its TLS): an idle daemon does without it, 1.4 MB of memory
 * (docs/decisions/0018-daemon-idle-memory.md).
 */
function tlsModule(): typeof tls {
  return process.getBuiltinModule('node:tls')
}

/** The protocol id. */
export const BULK_PROTOCOL = '/peerup/bulk/1.0.0'

/**
 * Bytes a session moves (both ways together) before it is given a link of its own: past what an
 * interactive session or a small request ever carries, so those never cost a second connection.
 */
export const BULK_AFTER_BYTES = 8 * 1024 * 1024

/** Bound of the whole setup: exchange, connect and TLS handshake. */
export const BULK_SETUP_TIMEOUT_MS = 10_000

/** Bulk requests one connection may have under way at once, each way. */
const BULK_STREAMS = 8

/** Largest frame either side reads. */
const MAX_FRAME_BYTES = 512

/** TLS 1.3 only: a PSK handshake with an ECDHE share, no certificates. */
const TLS_OPTIONS = { minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3' } as const

const hex = (bytes: number) => z.string().regex(new RegExp(`^[0-9a-f]{${2 * bytes}}$`))
const port = z.number().int().min(1).max(65_535)
const request = z.discriminatedUnion('mode', [
  z.strictObject({ mode: z.literal('listen'), nonce: hex(16), key: hex(32) }),
  z.strictObject({ mode: z.literal('punch'), port, nonce: hex(16), key: hex(32) }),
  z.strictObject({
    mode: z.literal('splice'),
    port,
    token: hex(SPLICE_TOKEN_BYTES),
    nonce: hex(16),
    key: hex(32),
  }),
])
const spliceAnswer = z.union([
  z.strictObject({ token: hex(SPLICE_TOKEN_BYTES), port }),
  z.strictObject({ error: z.string().min(1).max(200) }),
])

/** How a bulk link is had: see the module doc. */
type Route = { mode: 'listen' | 'punch'; ip: string } | { mode: 'splice'; ip: string; relay: Connection }

/** A splice the relay granted: its port, and the token both connections present there. */
interface Splice {
  port: number
  token: string
}
const answer = z.union([
  z.strictObject({ port, nonce: hex(16) }),
  z.strictObject({ error: z.string().min(1).max(200) }),
])
const go = z.strictObject({ go: z.literal(true) })

/** A bulk link that could not be had, with why. */
export class BulkLinkError extends PeerupError {
  override name = 'BulkLinkError'
}

export interface BulkLinksComponents {
  node: PeerupLibp2p
  log: Logger
  /** Whether `peer` may ask us for a bulk link (authorized_keys, or everyone with gating off). */
  allowed: (peer: string) => boolean
  /** Whether `connection` was punched (then neither side takes unsolicited connections). */
  punched: (connection: Connection) => boolean
  /**
   * Where a bulk link the peer asked for goes: the session service, which takes its first frame
   * as from any session stream of the peer at the other end of `connection`. Undefined on a node
   * that accepts no sessions: it refuses bulk requests.
   */
  accept?: (link: Link, connection: Connection) => void
}

/**
 * What a bulk link does when the session's bytes stall (no acknowledgement for a while): it gives
 * up, and the session comes back over the libp2p connection. A ping over that connection would
 * prove nothing about this socket, and severing it would cut everything else the connection
 * carries; a bulk link carries one session, so giving it up costs only its speed.
 */
const BULK_LINK_OPTIONS: StreamLinkOptions = {
  probe: () => Promise.reject(new BulkLinkError('the bulk link stalled: back to the libp2p connection')),
}

/** What a {@link BulkLinks} did, for tests and logs. */
export interface BulkCounts {
  /** Links set up, as opener or acceptor. */
  opened: number
  /** Setups that failed, as opener or acceptor. */
  failed: number
  /** Links open now. */
  live: number
}

/**
 * Sets up bulk links: a component whose `start()` handles {@link BULK_PROTOCOL} (the acceptor's
 * side) and whose `stop()` stops; {@link BulkLinks.open} is the opener's side.
 */
export class BulkLinks implements Component {
  readonly #components: BulkLinksComponents
  readonly #counts: BulkCounts = { opened: 0, failed: 0, live: 0 }
  /** The sockets of the links open now. */
  readonly #sockets = new Set<tls.TLSSocket>()
  /** Relays whose identify lists {@link SPLICE_PROTOCOL}. */
  readonly #spliceRelays = new Set<string>()
  readonly #onIdentify = (evt: CustomEvent<IdentifyResult>): void => {
    const { peerId, protocols } = evt.detail
    if (protocols.includes(SPLICE_PROTOCOL)) {
      this.#spliceRelays.add(peerId.toString())
    }
  }
  #controller = new AbortController()

  constructor(components: BulkLinksComponents) {
    this.#components = components
  }

  get counts(): BulkCounts {
    return { ...this.#counts }
  }

  async start(): Promise<void> {
    this.#controller = new AbortController()
    this.#components.node.addEventListener('peer:identify', this.#onIdentify)
    await this.#components.node.handle(
      BULK_PROTOCOL,
      (stream, connection) => void this.#respond(stream, connection),
      {
        maxInboundStreams: BULK_STREAMS,
        maxOutboundStreams: BULK_STREAMS,
        // Asked over a relayed connection for a splice (which is refused on any other way).
        runOnLimitedConnection: true,
      },
    )
  }

  async stop(): Promise<void> {
    this.#components.node.removeEventListener('peer:identify', this.#onIdentify)
    this.#controller.abort()
    await this.#components.node.unhandle(BULK_PROTOCOL)
    this.resetAll()
  }

  /** Resets every bulk link open now; their sessions come back over a libp2p connection. */
  resetAll(): void {
    for (const socket of this.#sockets) {
      resetSocket(socket)
    }
  }

  /**
   * Whether a session over `connection` can have a bulk link: a direct TCP connection, or one
   * relayed by a relay with a splice port that we are connected to directly.
   */
  canCarry(connection: Connection): boolean {
    return connection.status === 'open' && this.#route(connection) !== undefined
  }

  /** How a bulk link beside `connection` would be had, and where to. */
  #route(connection: Connection): Route | undefined {
    const path = classifyConnection(connection)
    if (path.type === 'DIRECT') {
      const ip = path.transport === 'tcp' ? ipOf(connection.remoteAddr) : undefined
      return ip === undefined
        ? undefined
        : { mode: this.#components.punched(connection) ? 'punch' : 'listen', ip }
    }
    const relay = path.relay
    if (relay === undefined || !this.#spliceRelays.has(relay)) {
      return undefined
    }
    const toRelay = this.#components.node
      .getConnections()
      .find(
        (c) =>
          c.remotePeer.toString() === relay && c.status === 'open' && classifyConnection(c).type === 'DIRECT',
      )
    const ip = toRelay === undefined ? undefined : ipOf(toRelay.remoteAddr)
    return toRelay === undefined || ip === undefined ? undefined : { mode: 'splice', ip, relay: toRelay }
  }

  /**
   * The opener's side: a bulk link to the peer at the other end of `connection` (see
   * {@link canCarry}). Rejects with a {@link BulkLinkError} saying why not.
   */
  async open(connection: Connection, signal?: AbortSignal): Promise<Link> {
    const all = this.#signal(signal)
    const peer = connection.remotePeer.toString()
    try {
      const route = this.#route(connection)
      if (route === undefined) {
        throw new BulkLinkError(`no bulk link beside ${connection.remoteAddr.toString()}`)
      }
      const key = randomBytes(32)
      const nonce = randomBytes(16).toString('hex')
      const family = net.isIPv6(route.ip) ? 'ipv6' : 'ipv4'
      const ownPort = route.mode === 'punch' ? await freePort(family) : undefined
      const splice = route.mode === 'splice' ? await spliceToken(route.relay, peer, all) : undefined
      const asked = {
        mode: route.mode,
        nonce,
        key: key.toString('hex'),
        ...(ownPort === undefined ? {} : { port: ownPort }),
        ...(splice === undefined ? {} : splice),
      }
      const stream = await connection
        .newStream(BULK_PROTOCOL, { signal: all, runOnLimitedConnection: true })
        .catch((err: unknown) => {
          throw new BulkLinkError(`the peer does not take ${BULK_PROTOCOL}: ${describe(err)}`)
        })
      let theirPort: number
      try {
        const lp = lpStream(stream, { maxDataLength: MAX_FRAME_BYTES })
        await lp.write(encode(asked), { signal: all })
        const reply = answer.safeParse(decodeFrame((await lp.read({ signal: all })).subarray()))
        if (!reply.success) {
          throw new BulkLinkError(
            `the peer's answer is malformed: ${reply.error.issues[0]?.message ?? 'invalid'}`,
          )
        }
        if ('error' in reply.data) {
          throw new BulkLinkError(`the peer cannot: ${reply.data.error}`)
        }
        if (reply.data.nonce !== nonce) {
          throw new BulkLinkError("the peer's answer is for another request (nonce differs)")
        }
        theirPort = reply.data.port
        if (route.mode === 'punch') {
          await lp.write(encode({ go: true }), { signal: all })
        }
        await stream.close({ signal: all }).catch(() => stream.abort(new Error('closed')))
      } catch (err) {
        stream.abort(err as Error)
        throw err
      }
      const socket =
        splice !== undefined
          ? await dialSplice(route.ip, splice, all)
          : ownPort === undefined
            ? await dial(route.ip, theirPort, all)
            : await simultaneousOpen({ ip: route.ip, port: theirPort }, ownPort, {
                windowMs: PUNCH_WINDOW_MS,
                retryMs: PUNCH_RETRY_MS,
                signal: all,
              })
      const secure = tlsModule().connect({
        ...TLS_OPTIONS,
        socket,
        // The peer is authenticated by the key, not by a certificate (there is none).
        checkServerIdentity: () => undefined,
        pskCallback: () => ({ psk: key, identity: nonce }),
      })
      const link = await this.#linked(secure, peer, all)
      this.#components.log.debug('bulk link opened', { peer, mode: route.mode })
      return link
    } catch (err) {
      this.#counts.failed++
      throw err instanceof BulkLinkError ? err : new BulkLinkError(describe(err), { cause: err })
    }
  }

  /** The acceptor's side of one bulk request. */
  async #respond(stream: Stream, connection: Connection): Promise<void> {
    const { log, accept } = this.#components
    const peer = connection.remotePeer.toString()
    const all = this.#signal()
    const lp = lpStream(stream, { maxDataLength: MAX_FRAME_BYTES })
    let server: net.Server | undefined
    try {
      const asked = request.safeParse(decodeFrame((await lp.read({ signal: all })).subarray()))
      if (!asked.success) {
        throw new BulkLinkError(`malformed bulk request: ${asked.error.issues[0]?.message ?? 'invalid'}`)
      }
      const want = asked.data
      const key = Buffer.from(want.key, 'hex')
      const route = this.#route(connection)
      let ownPort: number
      try {
        // Before anything is bound or connected: a peer we would not let in gets nothing.
        if (!this.#components.allowed(peer)) {
          throw new BulkLinkError('not authorized here: a bulk link is for peers in authorized_keys')
        }
        if (accept === undefined) {
          throw new BulkLinkError('this node accepts no sessions')
        }
        // A splice is asked on a relayed connection, the others on a direct one.
        if (route === undefined || (route.mode === 'splice') !== (want.mode === 'splice')) {
          throw new BulkLinkError(`asked for ${want.mode} on a connection that has no such way`)
        }
        if (want.mode === 'listen') {
          server = await listenOnce(net.isIPv6(route.ip) ? '::' : '0.0.0.0')
          ownPort = (server.address() as net.AddressInfo).port
        } else if (want.mode === 'punch') {
          ownPort = await freePort(net.isIPv6(route.ip) ? 'ipv6' : 'ipv4')
        } else {
          ownPort = want.port
        }
      } catch (err) {
        // Told to the opener, which logs why its session stays on its stream.
        await lp.write(encode({ error: describe(err).slice(0, 200) }), { signal: all }).catch(() => {})
        throw err
      }
      await lp.write(encode({ port: ownPort, nonce: want.nonce }), { signal: all })
      let socket: net.Socket
      if (want.mode === 'punch') {
        go.parse(decodeFrame((await lp.read({ signal: all })).subarray()))
        await stream.close({ signal: all }).catch(() => stream.abort(new Error('closed')))
        socket = await simultaneousOpen({ ip: route.ip, port: want.port }, ownPort, {
          windowMs: PUNCH_WINDOW_MS,
          retryMs: PUNCH_RETRY_MS,
          signal: all,
        })
      } else {
        void stream.close({ signal: all }).catch(() => stream.abort(new Error('closed')))
        socket =
          want.mode === 'splice'
            ? await dialSplice(route.ip, want, all)
            : await acceptFrom(server as net.Server, route.ip, all)
      }
      // Node's TLSSocket takes pskCallback on the server side too (node:tls `_init`), which its
      // types list only for tls.createServer().
      const serverOptions: tls.TLSSocketOptions & Pick<tls.TlsOptions, 'pskCallback'> = {
        ...TLS_OPTIONS,
        isServer: true,
        // Only the key sent for this nonce; anyone else's handshake fails.
        pskCallback: (_socket, identity) => (identity === want.nonce ? key : null),
      }
      const secure = new (tlsModule().TLSSocket)(socket, serverOptions)
      await once(secure, 'secure', { signal: all }).catch((err: unknown) => {
        resetSocket(secure)
        throw new BulkLinkError(`TLS handshake failed: ${describe(err)}`)
      })
      accept(this.#track(socketLink(secure, peer, BULK_LINK_OPTIONS), secure), connection)
      this.#counts.opened++
      log.debug('bulk link accepted', { peer, mode: want.mode })
    } catch (err) {
      this.#counts.failed++
      stream.abort(err as Error)
      log.info('bulk link not set up', { peer, error: err as Error })
    } finally {
      server?.close()
    }
  }

  /** Waits for the TLS handshake of `secure` and makes it a link. */
  async #linked(secure: tls.TLSSocket, peer: string, signal: AbortSignal): Promise<Link> {
    try {
      await once(secure, 'secureConnect', { signal })
    } catch (err) {
      resetSocket(secure)
      throw new BulkLinkError(`TLS handshake failed: ${describe(err)}`)
    }
    this.#counts.opened++
    this.#components.log.debug('bulk link opened', { peer })
    return this.#track(socketLink(secure, peer, BULK_LINK_OPTIONS), secure)
  }

  #track(link: Link, socket: tls.TLSSocket): Link {
    socket.setNoDelay(true)
    this.#counts.live++
    this.#sockets.add(socket)
    socket.once('close', () => {
      this.#counts.live--
      this.#sockets.delete(socket)
    })
    return link
  }

  #signal(signal?: AbortSignal): AbortSignal {
    const bounded = [this.#controller.signal, AbortSignal.timeout(BULK_SETUP_TIMEOUT_MS)]
    return AbortSignal.any(signal === undefined ? bounded : [signal, ...bounded])
  }
}

/** Connects to `host:port`; rejects on an error or when `signal` fires first. */
async function dial(host: string, port: number, signal: AbortSignal): Promise<net.Socket> {
  const socket = net.connect({ host, port, noDelay: true, keepAlive: true })
  try {
    await once(socket, 'connect', { signal })
    return socket
  } catch (err) {
    socket.destroy()
    throw new BulkLinkError(`connect to ${host}:${port} failed: ${describe(err)}`)
  }
}

/** A server listening on a fresh port of `host`, to take one connection. */
async function listenOnce(host: string): Promise<net.Server> {
  const server = net.createServer({ noDelay: true, keepAlive: true })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, host, resolve)
  })
  return server
}

/** The first connection `server` gets from `ip` (others are reset); rejects when `signal` fires. */
async function acceptFrom(server: net.Server, ip: string, signal: AbortSignal): Promise<net.Socket> {
  const { promise, resolve, reject } = Promise.withResolvers<net.Socket>()
  const onConnection = (socket: net.Socket): void => {
    if (socket.remoteAddress?.replace(/^::ffff:/, '') !== ip) {
      resetSocket(socket)
      return
    }
    resolve(socket)
  }
  const onAbort = (): void => reject(new BulkLinkError('the peer did not connect in time'))
  server.on('connection', onConnection)
  signal.addEventListener('abort', onAbort, { once: true })
  try {
    return await promise
  } finally {
    server.off('connection', onConnection)
    signal.removeEventListener('abort', onAbort)
  }
}

/** Asks the relay at the other end of `toRelay` for a splice with `peer`. */
async function spliceToken(toRelay: Connection, peer: string, signal: AbortSignal): Promise<Splice> {
  const stream = await toRelay.newStream(SPLICE_PROTOCOL, { signal }).catch((err: unknown) => {
    throw new BulkLinkError(`the relay does not splice: ${describe(err)}`)
  })
  try {
    const lp = lpStream(stream, { maxDataLength: MAX_FRAME_BYTES })
    await lp.write(encode({ peer }), { signal })
    const reply = spliceAnswer.safeParse(decodeFrame((await lp.read({ signal })).subarray()))
    await stream.close({ signal }).catch(() => stream.abort(new Error('closed')))
    if (!reply.success) {
      throw new BulkLinkError("the relay's splice answer is malformed")
    }
    if ('error' in reply.data) {
      throw new BulkLinkError(`the relay will not splice: ${reply.data.error}`)
    }
    return reply.data
  } catch (err) {
    stream.abort(err as Error)
    throw err
  }
}

/** Connects to the relay's splice port and presents the token: what follows is the peer's. */
async function dialSplice(relayIp: string, splice: Splice, signal: AbortSignal): Promise<net.Socket> {
  const socket = await dial(relayIp, splice.port, signal)
  socket.write(Buffer.from(splice.token, 'hex'))
  return socket
}

function decodeFrame(bytes: Uint8Array): unknown {
  return decode(bytes, () => new BulkLinkError('a bulk frame is not JSON'))
}
