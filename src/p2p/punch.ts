/**
 * TCP hole punching: `/peerup/punch/1.0.0`, run over a relayed connection, turns it into a direct
 * TCP connection by a simultaneous open through both sides' NATs
 * (docs/decisions/0007-direct-path-transport.md: 20/20 through the lab's port-preserving routers,
 * 1–4 ms after the later side started; bench/experiments/punch.ts is the experiment).
 *
 * The exchange, on one stream opened by the side that dialled the relayed connection (the
 * upgrader's rule, src/p2p/upgrade.ts), each message one length-prefixed JSON frame:
 *
 * 1. initiator → responder `{ ip, port, nonce, lead }`: its public IP, the port it will punch from,
 *    and who sends the first SYN (`together`, `initiator` or `responder`);
 * 2. responder → initiator `{ ip, port, nonce }` (the nonce echoed), or `{ error }`;
 * 3. initiator → responder `{ go: true }`. Both sides start connecting from this moment: together
 *    (the initiator half its measured round trip over the relay after sending GO, the responder
 *    when GO arrives), or the follower {@link PUNCH_LEAD_MS} after the leader.
 *
 * A punch is up to three rounds, each from fresh ports: together, then the initiator first, then
 * the responder first (docs/decisions/0007-direct-path-transport.md, "Who sends first"). Behind
 * routers that drop unsolicited SYNs the first round connects. A router that answers them itself
 * (no DROP on its WAN input) refuses the SYN that arrives before its own side's has left, and on
 * kernels that keep the refused flow's conntrack entry that entry takes the port mapping its own
 * side needs: only a round in which that side sends first connects. Fresh ports each round leave
 * whatever an earlier round left in the NATs behind.
 *
 * In each round both sides `net.connect({ host: peerIp, port: peerPort, localPort })` from the port
 * they announced, again every {@link PUNCH_RETRY_MS} after a refusal, inside {@link PUNCH_WINDOW_MS}. The
 * connected socket is wrapped as a MultiaddrConnection — `outbound` on the initiator, `inbound` on
 * the responder, because yamux takes its client/server role from that (ADR 0007, "Roles") — and
 * handed to libp2p's own upgrader: noise (checked against the peer id learnt on the relayed
 * connection), yamux with YAMUX_OPTIONS, and the connection gater (src/auth/gater.ts) exactly as
 * for a connection its TCP listener accepted. The result is an ordinary TCP connection:
 * `classifyConnection()` (src/p2p/path.ts) reports it DIRECT over `tcp`.
 *
 * @packageDocumentation
 */

import { randomBytes } from 'node:crypto'
import * as net from 'node:net'
import type {
  ComponentLogger,
  Connection,
  IdentifyResult,
  MultiaddrConnection,
  PeerId,
  Stream,
  Upgrader,
} from '@libp2p/interface'
import { lpStream } from '@libp2p/utils'
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr'
import { z } from 'zod'
// @libp2p/tcp's own socket wrapper (with peerup's corked writes, patches/@libp2p+tcp+11.0.28.patch):
// its package exports only "." (package.json `exports`), so it is imported by file path, which the
// exports map does not govern (ADR 0007, "@libp2p/tcp 11.0.28"). Writing our own on
// AbstractMultiaddrConnection would copy it line for line.
import { toMultiaddrConnection } from '../../node_modules/@libp2p/tcp/dist/src/socket-to-conn.js'
import { PeerupError } from '../errors.ts'
import type { Logger } from '../log/index.ts'
import { sleep } from '../util/retry.ts'
import { pingConnection } from './liveness.ts'
import type { PeerupLibp2p } from './node.ts'
import { classifyConnection } from './path.ts'

/** The protocol id. */
export const PUNCH_PROTOCOL = '/peerup/punch/1.0.0'

/** How long both sides keep trying to connect in one round, from when each starts. */
export const PUNCH_WINDOW_MS = 1_500

/**
 * How long the follower waits after the leader starts (plus half the relay's round trip when the
 * initiator follows, to allow for the GO frame's way): long enough that the leader's SYN has left
 * its own router before the follower's arrives there, whatever the error of that estimate.
 */
export const PUNCH_LEAD_MS = 100

/** Who sends first, round by round (see the module doc). */
export const PUNCH_ROUNDS: readonly Lead[] = ['together', 'initiator', 'responder']

/** Whose SYN leaves first in a round. */
export type Lead = 'together' | 'initiator' | 'responder'

/** Wait after a refused (RST) or failed connect before the next one. */
export const PUNCH_RETRY_MS = 100

/** Bound of the exchange on the relayed stream (three small frames over the relay). */
export const PUNCH_EXCHANGE_TIMEOUT_MS = 10_000

/** Bound of noise + yamux on the punched socket. */
export const PUNCH_UPGRADE_TIMEOUT_MS = 10_000

/** Largest frame either side reads. */
const MAX_FRAME_BYTES = 256

/** Punch streams open at once on one connection, each way. */
const PUNCH_STREAMS = 2

/** Errors of `connect()` after which another try can work: the peer's SYN has not crossed ours yet. */
const RETRY_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EADDRINUSE', 'EHOSTUNREACH'])

const ip = z.string().refine((s) => net.isIP(s) !== 0, 'not an IP address')
const port = z.number().int().min(1).max(65_535)
const nonce = z.string().regex(/^[0-9a-f]{32}$/)
/** What each side announces: where its punch socket appears on the internet. */
const offer = z.strictObject({ ip, port, nonce })
/** The initiator's offer also says who leads; without `lead` both start together. */
const request = offer.extend({ lead: z.enum(['together', 'initiator', 'responder']).default('together') })
const answer = z.union([offer, z.strictObject({ error: z.string().min(1).max(200) })])
const go = z.strictObject({ go: z.literal(true) })

/** Where a side will punch from, as the peer must dial it. */
export interface PunchEndpoint {
  ip: string
  port: number
}

/** A punch that did not give a direct connection, with why. */
export class PunchError extends PeerupError {
  override name = 'PunchError'
}

/** A simultaneous open that did not connect within its window: another round may. */
export class SimultaneousOpenError extends PunchError {
  override name = 'SimultaneousOpenError'
}

/**
 * What a {@link TcpPuncher} uses; libp2p's upgrader (noise, yamux, gater) and logger (for the
 * MultiaddrConnection of a punched socket) it takes from the node's {@link upgraderAccess}.
 */
export interface TcpPuncherComponents {
  node: PeerupLibp2p
  log: Logger
  /**
   * Whether `peer` may ask us to punch: the responder connects to the address a request names, so
   * only peers this node would let in are answered (authorized_keys, or everyone with gating off).
   */
  allowed: (peer: string) => boolean
}

/** The components {@link upgraderAccess} hands out. */
interface UpgraderAccess {
  upgrader: Upgrader
  logger: ComponentLogger
  transportManager: TransportDialer
}

/** libp2p's transport manager, as far as peerup uses it: a dial that bypasses the dial queue. */
export interface TransportDialer {
  dial(
    ma: Multiaddr,
    options: { signal: AbortSignal; onProgress?: (evt: { type: string }) => void },
  ): Promise<Connection>
}

/**
 * A libp2p service that only hands out libp2p's upgrader, logger and transport manager, which
 * libp2p gives to service factories but not to users of the node (`node.components` is on the
 * class, not the `Libp2p` interface): the puncher needs the upgrader to turn its own socket into a
 * connection, the direct-path upgrader the transport manager to dial WebRTC on its own clock.
 */
export function upgraderAccess(): (components: UpgraderAccess) => UpgraderAccess {
  return (components) => ({
    get upgrader() {
      return components.upgrader
    },
    get logger() {
      return components.logger
    },
    get transportManager() {
      return components.transportManager
    },
  })
}

/**
 * Punches TCP over relayed connections: a component whose `start()` handles
 * {@link PUNCH_PROTOCOL} (the responder's side) and whose `stop()` stops; {@link punch} is the
 * initiator's side, which the direct-path upgrader calls.
 */
export class TcpPuncher {
  readonly #node: PeerupLibp2p
  readonly #upgrader: Upgrader
  readonly #logger: ComponentLogger
  readonly #log: Logger
  readonly #allowed: (peer: string) => boolean
  /** The connections punched here, as initiator or responder: a bulk link must punch too. */
  readonly #punched = new WeakSet<Connection>()
  /** Our IP as each relay saw it (identify's observed address), by relay peer id. */
  readonly #observed = new Map<string, string>()
  #controller = new AbortController()
  #running = false

  readonly #onIdentify = (evt: CustomEvent<IdentifyResult>): void => {
    const { connection, observedAddr } = evt.detail
    const seen = observedAddr === undefined ? undefined : ipOf(observedAddr)
    if (seen !== undefined && connection.direct && connection.limits === undefined) {
      this.#observed.set(connection.remotePeer.toString(), seen)
    }
  }

  constructor(components: TcpPuncherComponents) {
    this.#node = components.node
    this.#upgrader = components.node.services.upgraderAccess.upgrader
    this.#logger = components.node.services.upgraderAccess.logger
    this.#log = components.log
    this.#allowed = components.allowed
  }

  async start(): Promise<void> {
    if (this.#running) {
      return
    }
    this.#controller = new AbortController()
    this.#node.addEventListener('peer:identify', this.#onIdentify)
    await this.#node.handle(PUNCH_PROTOCOL, (stream, connection) => this.#respond(stream, connection), {
      // It is asked for on the relayed connection, which is limited (circuit relay v2).
      runOnLimitedConnection: true,
      maxInboundStreams: PUNCH_STREAMS,
      maxOutboundStreams: PUNCH_STREAMS,
    })
    this.#running = true
  }

  /** Whether `connection` was punched by this node (as initiator or responder). */
  punched(connection: Connection): boolean {
    return this.#punched.has(connection)
  }

  async stop(): Promise<void> {
    this.#running = false
    this.#controller.abort()
    this.#node.removeEventListener('peer:identify', this.#onIdentify)
    await this.#node.unhandle(PUNCH_PROTOCOL)
  }

  /**
   * The initiator's side: punches a direct TCP connection to the peer at the other end of
   * `relayed` and returns it upgraded, trying each of {@link PUNCH_ROUNDS} in turn from fresh
   * ports. Rejects with a {@link PunchError} saying why not, round by round.
   */
  async punch(relayed: Connection, signal: AbortSignal): Promise<Connection> {
    if (!this.#running) {
      throw new PunchError('the puncher is stopped')
    }
    const all = AbortSignal.any([signal, this.#controller.signal])
    const failures: string[] = []
    for (const lead of PUNCH_ROUNDS) {
      try {
        const conn = await this.#round(relayed, lead, all)
        this.#punched.add(conn)
        this.#log.info('tcp punched', { peer: relayed.remotePeer.toString(), lead, failed: failures })
        return conn
      } catch (err) {
        all.throwIfAborted()
        // Only a failed simultaneous open is worth another round; a refusal or a broken exchange
        // would be the same again.
        if (!(err instanceof SimultaneousOpenError)) {
          throw err
        }
        failures.push(`${lead === 'together' ? 'together' : `${lead} first`}: ${err.message}`)
      }
    }
    throw new PunchError(
      `${failures.join('; ')} (a NAT that maps each connection to a new port, or answers with resets, defeats the punch)`,
    )
  }

  /** One round of {@link punch}: the exchange, the simultaneous open with `lead` first, the upgrade. */
  async #round(relayed: Connection, lead: Lead, all: AbortSignal): Promise<Connection> {
    const peer = relayed.remotePeer
    const own = await this.#endpoint(relayed, all)
    const stream = await relayed
      .newStream(PUNCH_PROTOCOL, { runOnLimitedConnection: true, signal: all })
      .catch((err: unknown) => {
        throw new PunchError(`the peer does not take ${PUNCH_PROTOCOL}: ${describe(err)}`)
      })
    let theirs: PunchEndpoint
    let rttMs: number
    try {
      const exchange = AbortSignal.any([all, AbortSignal.timeout(PUNCH_EXCHANGE_TIMEOUT_MS)])
      const lp = lpStream(stream, { maxDataLength: MAX_FRAME_BYTES })
      const n = randomBytes(16).toString('hex')
      const t0 = performance.now()
      await lp.write(encode({ ...own, nonce: n, lead }), { signal: exchange })
      const reply = answer.safeParse(decode((await lp.read({ signal: exchange })).subarray()))
      // Includes the responder's own preparation (a free port, perhaps an identify round trip):
      // an over-estimate, so a following initiator starts a little late, which costs nothing.
      rttMs = performance.now() - t0
      if (!reply.success) {
        throw new PunchError(`the peer's answer is malformed: ${reply.error.issues[0]?.message ?? 'invalid'}`)
      }
      if ('error' in reply.data) {
        throw new PunchError(`the peer cannot punch: ${reply.data.error}`)
      }
      if (reply.data.nonce !== n) {
        throw new PunchError("the peer's answer is for another request (nonce differs)")
      }
      theirs = { ip: reply.data.ip, port: reply.data.port }
      await lp.write(encode({ go: true }), { signal: exchange })
      await stream.close({ signal: exchange }).catch(() => stream.abort(new Error('closed')))
    } catch (err) {
      stream.abort(err as Error)
      throw err instanceof PunchError
        ? err
        : new PunchError(`exchange over the relay failed: ${describe(err)}`)
    }
    await sleep(roundStartMs(lead, 'initiator', rttMs, PUNCH_LEAD_MS), all)
    const socket = await simultaneousOpen(theirs, own.port, {
      windowMs: PUNCH_WINDOW_MS,
      retryMs: PUNCH_RETRY_MS,
      signal: all,
    })
    const conn = await this.#upgrade(socket, 'outbound', theirs, peer, all)
    // Our side of the upgrade can finish before the responder's: multistream-select lets the
    // dialler assume the muxer, so a responder whose gater refuses us after the noise handshake
    // (src/auth/gater.ts) shows only as a connection that dies. One ping proves it carries streams.
    try {
      await pingConnection(conn, AbortSignal.any([all, AbortSignal.timeout(PUNCH_UPGRADE_TIMEOUT_MS)]))
    } catch (err) {
      conn.abort(err as Error)
      throw new PunchError(
        `the punched TCP connection failed its upgrade: the peer closed it (its gater refused us?): ${describe(err)}`,
      )
    }
    return conn
  }

  /** The responder's side of one punch stream. */
  async #respond(stream: Stream, connection: Connection): Promise<void> {
    const peer = connection.remotePeer
    const signal = AbortSignal.any([this.#controller.signal, AbortSignal.timeout(PUNCH_EXCHANGE_TIMEOUT_MS)])
    const lp = lpStream(stream, { maxDataLength: MAX_FRAME_BYTES })
    let theirs: PunchEndpoint
    let own: PunchEndpoint
    let lead: Lead
    try {
      const asked = request.safeParse(decode((await lp.read({ signal })).subarray()))
      if (!asked.success) {
        throw new PunchError(`malformed punch request: ${asked.error.issues[0]?.message ?? 'invalid'}`)
      }
      theirs = { ip: asked.data.ip, port: asked.data.port }
      lead = asked.data.lead
      try {
        if (connection.direct) {
          throw new PunchError('asked on a direct connection: there is nothing to punch')
        }
        // Before any connect: a peer we would not let in must not make us send SYNs anywhere.
        if (!this.#allowed(peer.toString())) {
          throw new PunchError('not authorized here: a punch is for peers in authorized_keys')
        }
        own = await this.#endpoint(connection, signal)
      } catch (err) {
        // Told to the initiator, so that its upgrader records the reason.
        await lp.write(encode({ error: describe(err).slice(0, 200) }), { signal }).catch(() => {})
        throw err
      }
      await lp.write(encode({ ...own, nonce: asked.data.nonce }), { signal })
      go.parse(decode((await lp.read({ signal })).subarray()))
      await stream.close({ signal }).catch(() => stream.abort(new Error('closed')))
    } catch (err) {
      stream.abort(err as Error)
      this.#log.info('punch request not followed', { peer: peer.toString(), error: err as Error })
      return
    }
    try {
      await sleep(roundStartMs(lead, 'responder', 0, PUNCH_LEAD_MS), this.#controller.signal)
      const socket = await simultaneousOpen(theirs, own.port, {
        windowMs: PUNCH_WINDOW_MS,
        retryMs: PUNCH_RETRY_MS,
        signal: this.#controller.signal,
      })
      this.#punched.add(await this.#upgrade(socket, 'inbound', theirs, peer, this.#controller.signal))
      this.#log.debug('punched connection up', { peer: peer.toString() })
    } catch (err) {
      this.#log.info('punch failed', { peer: peer.toString(), error: err as Error })
    }
  }

  /**
   * Where our punch socket will appear: a fresh local port of its own, and our public IP as the
   * relay carrying `relayed` saw it.
   *
   * The IP is identify's observed address on our direct connection to that relay: the relay
   * reports every peer's remote address in identify (src/p2p/members-only.ts sends it to
   * strangers too), so it is there on every node that holds a reservation or dialled a circuit,
   * with no protocol of our own. `node.getMultiaddrs()` is no substitute: libp2p lists an observed
   * address only once AutoNAT confirmed it, which peerup does not run. The port is the local
   * port: the punch works through port-preserving NATs only (ADR 0007), and for those the public
   * port is the local one; a NAT that changes it defeats the punch either way.
   */
  async #endpoint(relayed: Connection, signal: AbortSignal): Promise<PunchEndpoint> {
    const relay = classifyConnection(relayed).relay
    if (relay === undefined) {
      throw new PunchError(`not a relayed connection: ${relayed.remoteAddr.toString()}`)
    }
    let seen = this.#observed.get(relay)
    if (seen === undefined) {
      // Not seen yet (identify ran before this component started): ask the relay again.
      const toRelay = this.#node
        .getConnections()
        .find((c) => c.remotePeer.toString() === relay && c.status === 'open' && c.direct)
      if (toRelay === undefined) {
        throw new PunchError(`no direct connection to the relay ${relay} to learn our public address from`)
      }
      const result = await this.#node.services.identify
        .identify(toRelay, { signal })
        .catch((err: unknown) => {
          throw new PunchError(`identify with the relay failed: ${describe(err)}`)
        })
      seen = result.observedAddr === undefined ? undefined : ipOf(result.observedAddr)
      if (seen === undefined) {
        throw new PunchError(`the relay ${relay} did not report our address`)
      }
      this.#observed.set(relay, seen)
    }
    return { ip: seen, port: await freePort(net.isIPv6(seen) ? 'ipv6' : 'ipv4') }
  }

  /** Wraps a punched socket and upgrades it (noise, yamux, gater) to a libp2p connection. */
  async #upgrade(
    socket: net.Socket,
    direction: 'inbound' | 'outbound',
    remote: PunchEndpoint,
    peer: PeerId,
    signal: AbortSignal,
  ): Promise<Connection> {
    const family = net.isIPv6(remote.ip) ? 'ip6' : 'ip4'
    // With the peer id in it, the upgrader checks the noise handshake against the peer we asked
    // on the relayed connection, on both sides.
    const remoteAddr = multiaddr(`/${family}/${remote.ip}/tcp/${remote.port}/p2p/${peer.toString()}`)
    let maConn: MultiaddrConnection
    try {
      maConn = toMultiaddrConnection({
        socket,
        direction,
        remoteAddr,
        log: this.#logger.forComponent('peerup:punch:connection'),
      })
    } catch (err) {
      socket.destroy()
      throw new PunchError(`the punched socket closed at once: ${describe(err)}`)
    }
    const upgrade = AbortSignal.any([signal, AbortSignal.timeout(PUNCH_UPGRADE_TIMEOUT_MS)])
    try {
      if (direction === 'outbound') {
        return await this.#upgrader.upgradeOutbound(maConn, { signal: upgrade })
      }
      // upgradeInbound applies what libp2p's TCP listener would (src/auth/gater.ts's
      // denyInboundConnection and denyInboundEncryptedConnection, the inbound limits) and returns
      // nothing: the connection is the one it announced.
      await this.#upgrader.upgradeInbound(maConn, { signal: upgrade })
      const conn = this.#node
        .getConnections(peer)
        .find((c) => c.status === 'open' && c.remoteAddr.equals(remoteAddr))
      if (conn === undefined) {
        throw new Error('the upgraded connection closed at once')
      }
      return conn
    } catch (err) {
      maConn.abort(err as Error)
      throw new PunchError(`the punched TCP connection failed its upgrade: ${describe(err)}`)
    }
  }
}

/**
 * When a side starts connecting in a round, in ms after it sent GO (the initiator) or received it
 * (the responder). GO reaches the responder about half the relay's round trip (`rttMs`, as the
 * initiator measured it) after it left; the follower starts `leadMs` after the leader.
 */
export function roundStartMs(
  lead: Lead,
  role: 'initiator' | 'responder',
  rttMs: number,
  leadMs: number,
): number {
  if (role === 'responder') {
    return lead === 'initiator' ? leadMs : 0
  }
  return lead === 'initiator' ? 0 : lead === 'together' ? rttMs / 2 : rttMs / 2 + leadMs
}

/**
 * A free local TCP port, learnt by listening on port 0 of the wildcard address and closing again.
 * Never the libp2p listen port (a dial from it fails with EADDRINUSE, ADR 0007 check 4), and
 * chosen before connecting because the peer must know it in advance: a port the kernel picks at
 * connect time would be another one each try.
 */
export async function freePort(family: 'ipv4' | 'ipv6' = 'ipv4'): Promise<number> {
  const server = net.createServer()
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, family === 'ipv6' ? '::' : '0.0.0.0', resolve)
  })
  const { port } = server.address() as net.AddressInfo
  await new Promise((resolve) => server.close(resolve))
  return port
}

/**
 * Connects from `localPort` to `remote` again and again (every `retryMs` after a refusal) until one
 * try connects or `windowMs` is over. In a simultaneous open the first SYN dies at the peer's NAT
 * (or is refused) until the peer's own SYN has opened that NAT's mapping; the try in flight then
 * completes. One try at a time: two sockets cannot hold the same local port and peer.
 */
export async function simultaneousOpen(
  remote: PunchEndpoint,
  localPort: number,
  options: { windowMs: number; retryMs: number; signal: AbortSignal },
): Promise<net.Socket> {
  const window = AbortSignal.any([options.signal, AbortSignal.timeout(options.windowMs)])
  let tries = 0
  let last = 'none'
  while (!window.aborted) {
    tries++
    const socket = net.connect({
      host: remote.ip,
      port: remote.port,
      localPort,
      noDelay: true,
      keepAlive: true,
    })
    let onAbort = (): void => {}
    const outcome = await new Promise<'connected' | 'aborted' | NodeJS.ErrnoException>((resolve) => {
      onAbort = () => resolve('aborted')
      window.addEventListener('abort', onAbort, { once: true })
      socket.once('connect', () => resolve('connected'))
      socket.once('error', (err) => resolve(err))
    })
    window.removeEventListener('abort', onAbort)
    if (outcome === 'connected') {
      socket.removeAllListeners('error')
      return socket
    }
    socket.destroy()
    if (outcome === 'aborted') {
      break
    }
    last = outcome.code ?? outcome.message
    if (!RETRY_CODES.has(outcome.code ?? '')) {
      throw new SimultaneousOpenError(
        `connect to ${remote.ip}:${remote.port} from port ${localPort} failed: ${last}`,
      )
    }
    await sleep(options.retryMs, window).catch(() => {})
  }
  options.signal.throwIfAborted()
  throw new SimultaneousOpenError(
    `no TCP connection to ${remote.ip}:${remote.port} from port ${localPort} within ${options.windowMs} ms (${tries} tries, last error: ${last})`,
  )
}

/** The IP of an `/ip4/…` or `/ip6/…` address. */
export function ipOf(addr: Multiaddr): string | undefined {
  const first = addr.getComponents()[0]
  return (first?.name === 'ip4' || first?.name === 'ip6') && first.value !== undefined
    ? first.value
    : undefined
}

/** A small JSON message as one frame (the punch's and the bulk link's exchanges). */
export function encode(message: object): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(message))
}

/** A frame {@link encode} made; `notJson` is thrown when it is not one. */
export function decode(
  bytes: Uint8Array,
  notJson: () => Error = () => new PunchError('a punch frame is not JSON'),
): unknown {
  try {
    return JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes))
  } catch {
    throw notJson()
  }
}

/** `Name: message` of an error, of each of an AggregateError's (a dial's, one per address). */
export function describe(err: unknown): string {
  if (err instanceof AggregateError) {
    return err.errors.map(describe).join(', ')
  }
  const e = err as Error
  return `${e?.name ?? 'Error'}: ${e?.message ?? String(err)}`
}
