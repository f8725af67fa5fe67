/**
 * The splicing relay (docs/decisions/0016-splicing-relay.md): two members that talk through this
 * relay may move a bulk transfer onto two plain TCP connections to it, which it joins byte for byte
 * without parsing or decrypting anything — the peers run TLS end to end over the pair
 * (src/p2p/bulk.ts, `splice` mode). Circuit relay v2 stays for everything else.
 *
 * 1. A member asks for a token on `/peerup/splice/1.0.0`, over its own (noise-authenticated)
 *    connection to the relay: `{ peer }` → `{ token, port }` or `{ error }`. The relay answers only
 *    a member, for a peer that is a member too and connected to it now.
 * 2. Both peers connect to the splice port and send the 32-byte token first. The relay joins the
 *    two connections that presented the same token; a token is good for one pair, for
 *    {@link SPLICE_TOKEN_TTL_MS}; a connection without a known token is reset.
 *
 * The relay sees only TLS records. A token is a capability for one pair of connections, sent only
 * over noise-encrypted connections (to the relay, and end to end between the peers); whoever
 * presents a stolen one is joined to a peer whose TLS handshake then fails (it does not know the
 * key), and the legitimate session stays where it was.
 *
 * @packageDocumentation
 */

import { randomBytes } from 'node:crypto'
import * as net from 'node:net'
import * as v8 from 'node:v8'
import * as vm from 'node:vm'
import type { Connection, Stream } from '@libp2p/interface'
import { lpStream } from '@libp2p/utils'
import { z } from 'zod'
import type { Logger } from '../log/index.ts'
import { SPLICE_PROTOCOL, SPLICE_TOKEN_BYTES } from '../p2p/constants.ts'
import type { PeerupLibp2p } from '../p2p/node.ts'
import { decode, describe, encode } from '../p2p/punch.ts'
import { resetSocket, socketEnd } from '../pipe/node.ts'
import { pipe } from '../pipe/pipe.ts'
import { formatHostPort, parseHostPort } from '../util/address.ts'
import type { Component } from '../util/components.ts'
import { RelayStartError } from './errors.ts'

/** How long a token waits for its two connections. */
export const SPLICE_TOKEN_TTL_MS = 10_000

/** Splices (pending or joined) one member may have at once. */
export const MAX_SPLICES_PER_PEER = 64

/** Splices (pending or joined) of everyone together. */
export const MAX_SPLICES = 1024

/** Largest frame of the token exchange. */
const MAX_FRAME_BYTES = 256

/**
 * Bytes spliced between two young-generation collections the relay asks for (4 MiB: relaying 1 GiB
 * twice, the peak was 134.1/134.9 MB, against 139.6/159.0 MB every 16 MiB and 197.7/199.9 MB
 * without; bench `--only relay-memory`). Every socket read
 * allocates a fresh 64 KiB buffer; V8 collects them only when its young generation fills with the
 * small objects that hold them (thousands of reads) or when external memory has grown by tens of
 * MB, so at 250 MB/s the relay's RSS climbed ~75 MB above idle (docs/benchmarks.md). A scavenge of
 * the 2 MB young generation takes well under a millisecond.
 */
const COLLECT_EVERY_BYTES = 4 * 1024 * 1024

const request = z.strictObject({ peer: z.string().min(1).max(128) })

export interface SpliceServerComponents {
  node: PeerupLibp2p
  log: Logger
  /** Whether `peer` is a member (relay_authorized_keys, or everyone with gating off). */
  member: (peer: string) => boolean
  /** Counts bytes moved (both directions), as the relay's relayed-bytes counter. */
  onBytes?: (n: number) => void
}

export interface SpliceServerInit {
  /** `host:port` to listen on; port 0 picks a free one (tests). */
  listenAddress: string
}

interface Pending {
  /** Who asked for it (counted against {@link MAX_SPLICES_PER_PEER}). */
  owner: string
  /** The first connection that presented it, waiting for the second. */
  first: net.Socket | undefined
  timer: NodeJS.Timeout
}

/** The token protocol and the splice port: a start/stop component of the relay. */
export class SpliceServer implements Component {
  readonly #components: SpliceServerComponents
  readonly #init: SpliceServerInit
  readonly #pending = new Map<string, Pending>()
  /** Splices per member: pending and joined. */
  readonly #perPeer = new Map<string, number>()
  readonly #joined = new Set<net.Socket>()
  #server: net.Server | undefined
  #port = 0
  /** Pairs joined since the start. */
  spliced = 0
  /** Bytes moved since the last collection asked for. */
  #sinceCollect = 0
  readonly #collect = youngCollector()

  constructor(components: SpliceServerComponents, init: SpliceServerInit) {
    this.#components = components
    this.#init = init
  }

  /** The port it listens on (after start). */
  get port(): number {
    return this.#port
  }

  async start(): Promise<void> {
    const { host, port } = parseHostPort(this.#init.listenAddress)
    const server = net.createServer({ allowHalfOpen: true, noDelay: true, pauseOnConnect: true }, (socket) =>
      this.#onSocket(socket),
    )
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject)
        server.listen(port, host, () => {
          server.off('error', reject)
          resolve()
        })
      })
    } catch (err) {
      throw new RelayStartError(
        `cannot listen for splices on tcp ${this.#init.listenAddress}: ${(err as Error).message}`,
        {
          hint: 'pick another splice.listen_address in relay-server.yaml, or set splice.enabled: false (members then relay bulk transfers over circuits, slower)',
          cause: err,
        },
      )
    }
    this.#server = server
    this.#port = (server.address() as net.AddressInfo).port
    await this.#components.node.handle(
      SPLICE_PROTOCOL,
      (stream, connection) => this.#token(stream, connection),
      {
        maxInboundStreams: 8,
        maxOutboundStreams: 1,
      },
    )
    this.#components.log.info('splice port listening', { listen: formatHostPort(host, this.#port) })
  }

  async stop(): Promise<void> {
    await this.#components.node.unhandle(SPLICE_PROTOCOL)
    for (const [token, p] of this.#pending) {
      this.#forget(token, p)
      if (p.first !== undefined) {
        resetSocket(p.first)
      }
    }
    for (const socket of this.#joined) {
      resetSocket(socket)
    }
    const server = this.#server
    this.#server = undefined
    if (server !== undefined) {
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }

  /** A member asks for a token to splice with `peer`. */
  async #token(stream: Stream, connection: Connection): Promise<void> {
    const { member, node, log } = this.#components
    const owner = connection.remotePeer.toString()
    const signal = AbortSignal.timeout(SPLICE_TOKEN_TTL_MS)
    const lp = lpStream(stream, { maxDataLength: MAX_FRAME_BYTES })
    try {
      const asked = request.safeParse(
        decode((await lp.read({ signal })).subarray(), () => new Error('a splice frame is not JSON')),
      )
      let answer: object
      if (!asked.success) {
        answer = { error: 'malformed splice request' }
      } else if (!member(owner)) {
        answer = { error: 'not a member of this relay (relay_authorized_keys)' }
      } else if (!member(asked.data.peer)) {
        answer = { error: 'the peer is not a member of this relay' }
      } else if (!node.getConnections().some((c) => c.remotePeer.toString() === asked.data.peer)) {
        answer = { error: 'the peer is not connected to this relay' }
      } else if (
        (this.#perPeer.get(owner) ?? 0) >= MAX_SPLICES_PER_PEER ||
        this.#pendingAndJoined() >= MAX_SPLICES
      ) {
        answer = { error: 'too many splices' }
      } else {
        answer = { token: this.#issue(owner), port: this.#port }
      }
      await lp.write(encode(answer), { signal })
      await stream.close({ signal }).catch(() => stream.abort(new Error('closed')))
    } catch (err) {
      stream.abort(err as Error)
      log.debug('splice token request failed', { peer: owner, error: describe(err) })
    }
  }

  #pendingAndJoined(): number {
    return this.#pending.size + this.#joined.size / 2
  }

  /** A new token, owned by `owner`, forgotten unless both connections come in time. */
  #issue(owner: string): string {
    const token = randomBytes(SPLICE_TOKEN_BYTES).toString('hex')
    const entry: Pending = {
      owner,
      first: undefined,
      timer: setTimeout(() => {
        this.#forget(token, entry)
        if (entry.first !== undefined) {
          resetSocket(entry.first)
        }
      }, SPLICE_TOKEN_TTL_MS),
    }
    entry.timer.unref()
    this.#pending.set(token, entry)
    this.#count(owner, 1)
    return token
  }

  #forget(token: string, entry: Pending): void {
    clearTimeout(entry.timer)
    if (this.#pending.get(token) === entry) {
      this.#pending.delete(token)
      this.#count(entry.owner, -1)
    }
  }

  #count(owner: string, delta: number): void {
    const n = (this.#perPeer.get(owner) ?? 0) + delta
    if (n <= 0) {
      this.#perPeer.delete(owner)
    } else {
      this.#perPeer.set(owner, n)
    }
  }

  /** A connection to the splice port: its token first, within the token's lifetime. */
  #onSocket(socket: net.Socket): void {
    socket.on('error', () => {})
    const timer = setTimeout(() => resetSocket(socket), SPLICE_TOKEN_TTL_MS)
    timer.unref()
    const onReadable = (): void => {
      const head = socket.read(SPLICE_TOKEN_BYTES) as Buffer | null
      if (head === null) {
        return
      }
      socket.off('readable', onReadable)
      clearTimeout(timer)
      this.#presented(socket, head.toString('hex'))
    }
    socket.on('readable', onReadable)
    socket.once('end', () => {
      if (socket.listenerCount('readable') > 0) {
        resetSocket(socket)
      }
    })
  }

  #presented(socket: net.Socket, token: string): void {
    const entry = this.#pending.get(token)
    if (entry === undefined) {
      // Forged, used up or expired: nothing is joined to it.
      this.#components.log.debug('splice connection with an unknown token reset', {
        from: `${socket.remoteAddress}:${socket.remotePort}`,
      })
      resetSocket(socket)
      return
    }
    if (entry.first === undefined || entry.first.destroyed) {
      entry.first = socket
      return
    }
    const first = entry.first
    this.#forget(token, entry)
    this.#join(entry.owner, first, socket)
  }

  /** Moves bytes between the two connections until both directions are done or either fails. */
  #join(owner: string, a: net.Socket, b: net.Socket): void {
    this.spliced++
    this.#count(owner, 1)
    this.#joined.add(a)
    this.#joined.add(b)
    const onBytes = this.#components.onBytes
    const counted = (_direction: unknown, n: number): void => {
      onBytes?.(n)
      this.#sinceCollect += n
      if (this.#sinceCollect >= COLLECT_EVERY_BYTES) {
        this.#sinceCollect = 0
        this.#collect?.()
      }
    }
    void pipe(socketEnd(a), socketEnd(b), { onBytes: counted }).then(() => {
      this.#joined.delete(a)
      this.#joined.delete(b)
      this.#count(owner, -1)
    })
  }
}

/**
 * A young-generation collection on demand (V8's `gc({ type: 'minor' })`), made available at run
 * time as test/helpers/libp2p-pair.ts does; undefined where the engine refuses.
 */
function youngCollector(): (() => void) | undefined {
  try {
    v8.setFlagsFromString('--expose-gc')
    const gc = vm.runInNewContext('gc') as (options: { type: 'minor' }) => void
    return () => gc({ type: 'minor' })
  } catch {
    return undefined
  }
}
