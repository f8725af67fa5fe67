/**
 * The direct-path upgrader: when this node has reached a peer through a relay, it tries, in the
 * background, to get a direct connection as well — TCP to the peer's addresses on one of our own
 * networks (a LAN: no hairpin through the relay), else TCP punched through both NATs by a
 * simultaneous open arranged over the relayed connection (src/p2p/punch.ts,
 * docs/decisions/0007-direct-path-transport.md), else WebRTC, signalled over the relayed
 * connection, with ICE using the relays' STUN responders (docs/decisions/0002-webrtc-direct-path.md).
 * New streams then take the direct connection ({@link bestConnection}); streams already on the
 * relayed one keep running, and the relayed connection is closed once they are all done. A failed
 * attempt (symmetric NAT, UDP blocked) changes nothing for traffic: it is recorded on the
 * {@link PathTracker} and tried again later, with backoff.
 *
 * Only the side that dialled the relayed connection upgrades it: two attempts from both ends would
 * race each other, and the other side's gater may not accept us dialling back.
 *
 * @packageDocumentation
 */

import * as net from 'node:net'
import * as os from 'node:os'
import type { Connection, IdentifyResult, PeerId } from '@libp2p/interface'
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr'
import type { Logger } from '../log/index.ts'
import type { PeerupLibp2p } from './node.ts'
import { classifyConnection } from './path.ts'
import type { DirectTransport, PathTracker } from './paths.ts'
import { describe, PUNCH_PROTOCOL, type TcpPuncher } from './punch.ts'

/** The protocol @libp2p/webrtc signals on; a peer that does not offer it has no WebRTC transport. */
export const WEBRTC_SIGNALING_PROTOCOL = '/webrtc-signaling/0.0.1'

/** Bound of the TCP attempt: a LAN answers in milliseconds; a filtered address never does. */
export const DIRECT_TCP_TIMEOUT_MS = 3_000

/**
 * Bound of the TCP punch: three rounds of the exchange over the relay and a 1.5 s connect window
 * (src/p2p/punch.ts), and noise + yamux on the punched socket.
 */
export const DIRECT_PUNCH_TIMEOUT_MS = 10_000

/** Bound of WebRTC's signalling over the relay, until the peer's SDP answer has arrived. */
export const DIRECT_WEBRTC_SIGNAL_TIMEOUT_MS = 10_000

/**
 * Bound of the rest of the WebRTC attempt, counted from the peer's SDP answer: ICE (with STUN), DTLS
 * and SCTP; 0.1–1.1 s in the NAT lab, more on a loaded machine.
 */
export const DIRECT_WEBRTC_TIMEOUT_MS = 10_000

/**
 * First wait before trying again after a failure; doubles each time (5 s, 10 s, 20 s … 10 min). A
 * first attempt can fail for a passing reason (a loaded machine, a NAT mapping not yet made), so
 * the next one comes soon; a symmetric NAT costs a few ICE attempts before the waits grow long.
 */
export const UPGRADE_RETRY_BASE_MS = 5_000

/** Longest wait between two attempts with one peer. */
export const UPGRADE_RETRY_MAX_MS = 10 * 60_000

/** After a direct connection dropped while the relayed one lives on, wait this long before trying again. */
const REUPGRADE_DELAY_MS = 1_000

// Streams libp2p opens by itself on every connection; they do not keep a relayed connection in use.
const HOUSEKEEPING_PROTOCOLS = new Set(['/ipfs/id/1.0.0', '/ipfs/id/push/1.0.0'])

/** What a {@link DirectUpgrader} uses. */
export interface DirectUpgraderComponents {
  node: PeerupLibp2p
  /** Where attempts and their outcomes are recorded. */
  tracker: PathTracker
  log: Logger
  /** Punches TCP through NATs; without it, no punch is tried. */
  puncher?: TcpPuncher
}

interface PeerState {
  running: Promise<void> | undefined
  timer: NodeJS.Timeout | undefined
}

/**
 * Upgrades relayed connections to direct ones (see the module doc): a component whose `start()`
 * subscribes to identify and connection-close events and whose `stop()` unsubscribes, aborts the
 * attempts in flight and cancels the retries.
 */
export class DirectUpgrader {
  readonly #node: PeerupLibp2p
  readonly #tracker: PathTracker
  readonly #log: Logger
  readonly #webrtc: boolean
  readonly #puncher: TcpPuncher | undefined
  readonly #peers = new Map<string, PeerState>()
  readonly #idleWatch = new Set<string>()
  #controller = new AbortController()
  #running = false

  readonly #onIdentify = (evt: CustomEvent<IdentifyResult>): void => {
    const conn = evt.detail.connection
    if (isUpgradable(conn)) {
      this.upgrade(conn.remotePeer)
    }
  }

  readonly #onClose = (evt: CustomEvent<Connection>): void => {
    const conn = evt.detail
    if (!this.#running || !conn.direct) {
      return
    }
    // A direct connection went away (NAT mapping expired, network change) while we still reach
    // the peer through the relay: try again shortly.
    const peer = conn.remotePeer
    const relayedLeft = this.#node.getConnections(peer).some((c) => c.status === 'open' && isUpgradable(c))
    if (relayedLeft && !this.#hasDirect(peer)) {
      this.#schedule(peer.toString(), peer, REUPGRADE_DELAY_MS)
    }
  }

  /** `webrtc`: this node can dial WebRTC (its transport is configured). */
  constructor(components: DirectUpgraderComponents, init: { webrtc: boolean }) {
    this.#node = components.node
    this.#tracker = components.tracker
    this.#log = components.log
    this.#webrtc = init.webrtc
    this.#puncher = components.puncher
  }

  /** Starts upgrading the relayed connections this node dials from now on. */
  start(): void {
    if (this.#running) {
      return
    }
    this.#running = true
    this.#controller = new AbortController()
    this.#node.addEventListener('peer:identify', this.#onIdentify)
    this.#node.addEventListener('connection:close', this.#onClose)
  }

  /** Stops: attempts in flight are aborted, retries cancelled. */
  stop(): void {
    this.#running = false
    this.#controller.abort()
    this.#node.removeEventListener('peer:identify', this.#onIdentify)
    this.#node.removeEventListener('connection:close', this.#onClose)
    for (const state of this.#peers.values()) {
      clearTimeout(state.timer)
    }
    this.#peers.clear()
  }

  /**
   * Tries to upgrade now, unless an attempt is running or the peer is already direct. Returns the
   * running attempt (resolves when it is over, whatever the outcome).
   */
  upgrade(peer: PeerId): Promise<void> {
    const id = peer.toString()
    const state = this.#stateOf(id)
    if (!this.#running) {
      return Promise.resolve()
    }
    if (state.running !== undefined) {
      return state.running
    }
    clearTimeout(state.timer)
    state.timer = undefined
    state.running = this.#attempt(peer)
      .catch((err: unknown) =>
        this.#log.warn('direct path attempt crashed', { peer: id, error: err as Error }),
      )
      .finally(() => {
        state.running = undefined
      })
    return state.running
  }

  #stateOf(id: string): PeerState {
    let state = this.#peers.get(id)
    if (state === undefined) {
      state = { running: undefined, timer: undefined }
      this.#peers.set(id, state)
    }
    return state
  }

  #hasDirect(peer: PeerId): boolean {
    return this.#node.getConnections(peer).some((c) => c.status === 'open' && c.direct)
  }

  #schedule(id: string, peer: PeerId, delayMs: number): void {
    const state = this.#stateOf(id)
    clearTimeout(state.timer)
    state.timer = setTimeout(() => {
      state.timer = undefined
      this.upgrade(peer).catch(() => {})
    }, delayMs)
    // A pending retry must not keep a one-shot command alive.
    state.timer.unref()
  }

  async #attempt(peer: PeerId): Promise<void> {
    const id = peer.toString()
    if (this.#hasDirect(peer)) {
      this.#closeRelayedWhenIdle(peer)
      return
    }
    const relayed = this.#node
      .getConnections(peer)
      .filter((c) => c.status === 'open' && isUpgradable(c))
      .sort((a, b) => a.timeline.open - b.timeline.open)[0]
    if (relayed === undefined) {
      return
    }
    const known = await this.#node.peerStore.get(peer).catch(() => undefined)
    const addrs = known?.addresses.map((a) => a.multiaddr) ?? []
    const tcp = tcpAddresses(addrs, id)
    const webrtc =
      this.#webrtc &&
      (known?.protocols.includes(WEBRTC_SIGNALING_PROTOCOL) ?? false) &&
      addrs.some((a) => a.getComponents().some((c) => c.name === 'webrtc'))
        ? webrtcAddressVia(relayed, id)
        : undefined
    // A peer that has not told us (identify) it takes punch requests is an older peerup.
    const plan = attemptPlan({
      lanTcp: tcp.lan.length > 0,
      publicTcp: tcp.public.length > 0,
      punch: this.#puncher !== undefined && (known?.protocols.includes(PUNCH_PROTOCOL) ?? false),
      webrtc: webrtc !== undefined,
      webrtcHere: this.#webrtc,
    })
    if ('unavailable' in plan) {
      this.#tracker.upgradeUnavailable(id, plan.unavailable)
      this.#log.info('no direct path to try; staying on the relay', { peer: id, reason: plan.unavailable })
      return
    }

    this.#tracker.upgradeStarted(id)
    const started = performance.now()
    const errors: string[] = []
    // TCP first and alone: when the peer is on our LAN it answers at once and TCP carries far more
    // than a data channel; WebRTC would succeed on a LAN too. Concurrent dials to one peer would be
    // merged into one sequential job by libp2p's dial queue anyway.
    let conn: Connection | undefined
    let transport: DirectTransport = 'tcp'
    let method: DirectMethod = 'lan'
    // Then the peer's public addresses (a public IP, or a port forward it announces).
    for (const [m, target] of [
      ['lan', tcp.lan],
      ['public', tcp.public],
    ] as const) {
      if (conn !== undefined || !plan.methods.includes(m) || !this.#running) {
        continue
      }
      const signal = AbortSignal.any([this.#controller.signal, AbortSignal.timeout(DIRECT_TCP_TIMEOUT_MS)])
      const t0 = performance.now()
      try {
        conn = direct(await this.#node.dial(target, { signal }))
        method = m
      } catch (err) {
        // libp2p's dial queue also bounds each address (6 s): either timeout reads the same.
        const timedOut = signal.aborted || (err as Error)?.name === 'TimeoutError'
        errors.push(
          `${m === 'lan' ? 'tcp' : 'public tcp'}: ${timedOut ? noConnectionAfter('tcp', performance.now() - t0) : describe(err)}`,
        )
      }
    }
    // Then TCP punched through both NATs: when it works it carries what LAN TCP does (ADR 0007:
    // ~290 MB/s against WebRTC's ~34 MB/s); when either NAT is symmetric it fails within its
    // three 1.5 s rounds and WebRTC, which may still get through, is tried next.
    if (
      conn === undefined &&
      plan.methods.includes('punch') &&
      this.#puncher !== undefined &&
      this.#running
    ) {
      const signal = AbortSignal.any([this.#controller.signal, AbortSignal.timeout(DIRECT_PUNCH_TIMEOUT_MS)])
      const t0 = performance.now()
      try {
        conn = await this.#puncher.punch(relayed, signal)
        method = 'punch'
      } catch (err) {
        errors.push(
          `tcp punch: ${signal.aborted ? noConnectionAfter('tcp', performance.now() - t0) : ((err as Error)?.message ?? String(err))}`,
        )
      }
    }
    if (conn === undefined && plan.methods.includes('webrtc') && webrtc !== undefined && this.#running) {
      transport = 'webrtc'
      method = 'webrtc'
      try {
        conn = await this.#dialWebrtc(webrtc)
      } catch (err) {
        errors.push(`webrtc: ${(err as Error).message}`)
      }
    }
    if (!this.#running) {
      return
    }
    if (conn !== undefined) {
      const timeToDirectMs = Date.now() - relayed.timeline.open
      this.#tracker.upgradeSucceeded(id, transport, timeToDirectMs)
      this.#log.info('direct path up', {
        peer: id,
        transport,
        // How it was reached: `tcp` is both a LAN dial and a punch; the API keeps the wire
        // transport (src/api/schemas.ts), the log says which.
        method,
        address: classifyConnection(conn).remoteAddr,
        timeToDirectMs,
      })
      this.#closeRelayedWhenIdle(peer)
      return
    }
    const failures = (this.#tracker.get(id)?.upgrade.failures ?? 0) + 1
    const retryInMs = upgradeRetryMs(failures, UPGRADE_RETRY_BASE_MS, UPGRADE_RETRY_MAX_MS)
    const error = errors.join('; ')
    this.#tracker.upgradeFailed(id, error, performance.now() - started, retryInMs)
    this.#log.warn('direct path failed; traffic stays on the relay', { peer: id, error, retryInMs })
    this.#schedule(id, peer, retryInMs)
  }

  /**
   * Dials WebRTC through libp2p's transport manager, not `node.dial()`: the dial queue cuts every
   * address at 6 s (its `addressDialTimeout`), less than ICE can need on a loaded machine. The
   * signalling gets {@link DIRECT_WEBRTC_SIGNAL_TIMEOUT_MS} until the peer's SDP answer arrives;
   * ICE, DTLS and the data channel then get {@link DIRECT_WEBRTC_TIMEOUT_MS} from that answer, not
   * from when we asked. The connection is registered like any other (libp2p's upgrader announces
   * it). Rejects with the reason.
   */
  async #dialWebrtc(ma: Multiaddr): Promise<Connection> {
    const deadline = new AbortController()
    const t0 = performance.now()
    let answeredAt: number | undefined
    let timer = setTimeout(() => deadline.abort(), DIRECT_WEBRTC_SIGNAL_TIMEOUT_MS)
    // @libp2p/webrtc (private-to-private/initiate-connection.js) reports this once the answer is set.
    const onProgress = (evt: { type: string }): void => {
      if (evt.type === 'webrtc:read-ice-candidates' && answeredAt === undefined) {
        answeredAt = performance.now()
        clearTimeout(timer)
        timer = setTimeout(() => deadline.abort(), DIRECT_WEBRTC_TIMEOUT_MS)
      }
    }
    try {
      return direct(
        await this.#node.services.upgraderAccess.transportManager.dial(ma, {
          signal: AbortSignal.any([this.#controller.signal, deadline.signal]),
          onProgress,
        }),
      )
    } catch (err) {
      if (!deadline.signal.aborted) {
        throw new Error(describe(err))
      }
      throw new Error(
        answeredAt === undefined
          ? `no SDP answer from the peer after ${seconds(performance.now() - t0)}`
          : noConnectionAfter('webrtc', performance.now() - answeredAt, "the peer's SDP answer"),
      )
    } finally {
      clearTimeout(timer)
    }
  }

  /**
   * Closes the peer's relayed connections once no stream but libp2p's own runs on them: new
   * streams go direct, and an SSH session that started on the relay keeps it until it ends.
   */
  #closeRelayedWhenIdle(peer: PeerId): void {
    const id = peer.toString()
    if (this.#idleWatch.has(id)) {
      return
    }
    this.#idleWatch.add(id)
    const check = (): void => {
      if (!this.#running || !this.#hasDirect(peer)) {
        // No direct connection to fall back on: the relayed one is the path again.
        this.#idleWatch.delete(id)
        return
      }
      const relayed = this.#node.getConnections(peer).filter((c) => c.status === 'open' && !c.direct)
      let waiting = false
      for (const conn of relayed) {
        const busy = conn.streams.filter((s) => !HOUSEKEEPING_PROTOCOLS.has(s.protocol ?? ''))
        if (busy.length === 0) {
          this.#log.debug('closing the idle relayed connection', { peer: id })
          conn.close().catch((err: unknown) => conn.abort(err as Error))
          continue
        }
        waiting = true
        // Checked again when one of them ends; streams opened meanwhile go direct.
        busy[0]?.addEventListener('close', check, { once: true })
      }
      if (!waiting) {
        this.#idleWatch.delete(id)
      }
    }
    check()
  }
}

/** A way to a direct connection, in the order they are tried. */
export type DirectMethod = 'lan' | 'public' | 'punch' | 'webrtc'

/** What {@link attemptPlan} knows of a peer and of this node. */
export interface AttemptFacts {
  /** The peer has a plain TCP address on a network of ours. */
  lanTcp: boolean
  /** The peer has a plain TCP address on the public internet. */
  publicTcp: boolean
  /** This node punches and the peer takes punch requests. */
  punch: boolean
  /** Both sides have WebRTC: we can dial it, the peer listens for it. */
  webrtc: boolean
  /** This node can dial WebRTC at all (for the reason when nothing is left). */
  webrtcHere: boolean
}

/**
 * The methods to try with a peer, in order — TCP on a LAN (answers at once and carries the most),
 * TCP to its public address, the TCP punch (as fast as plain TCP where the NATs allow it), WebRTC
 * (gets through more NATs, carries far less) — or why there is nothing to try.
 */
export function attemptPlan(facts: AttemptFacts): { methods: DirectMethod[] } | { unavailable: string } {
  const methods = (['lan', 'public', 'punch', 'webrtc'] as const).filter((m) =>
    m === 'lan' ? facts.lanTcp : m === 'public' ? facts.publicTcp : facts[m],
  )
  if (methods.length > 0) {
    return { methods }
  }
  return {
    unavailable: facts.webrtcHere
      ? 'the peer listens for neither WebRTC (/webrtc in its network.listen_addresses) nor TCP on a network of ours or a public address, and takes no TCP punch'
      : 'WebRTC is off here (/webrtc is not in network.listen_addresses), the peer has no TCP address on a network of ours or a public one, and takes no TCP punch',
  }
}

/**
 * The wait before the next attempt after `failures` failed ones in a row: `baseMs` doubled each
 * time, at most `maxMs` (5 s, 10 s, 20 s … 10 min by default).
 */
export function upgradeRetryMs(failures: number, baseMs: number, maxMs: number): number {
  return Math.min(baseMs * 2 ** Math.max(0, failures - 1), maxMs)
}

/** The reason recorded for an attempt that ran out of time, `elapsedMs` after `since` (or its start). */
export function noConnectionAfter(transport: DirectTransport, elapsedMs: number, since?: string): string {
  const after =
    since === undefined
      ? `no connection after ${seconds(elapsedMs)}`
      : `no connection ${seconds(elapsedMs)} after ${since}`
  return transport === 'webrtc'
    ? `${after} (ICE found no working UDP path: symmetric NAT or UDP blocked?)`
    : after
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`
}

/** The connection when it is direct; a dial that came back relayed is a failure here. */
function direct(conn: Connection): Connection {
  if (!conn.direct) {
    throw new Error('the dial returned a relayed connection')
  }
  return conn
}

/** A relayed connection this node dialled: the kind it upgrades. */
function isUpgradable(conn: Connection): boolean {
  return conn.status === 'open' && !conn.direct && conn.direction === 'outbound'
}

/** `<relay>/p2p-circuit/webrtc/p2p/<peer>`, through the relay that carries `relayed`. */
export function webrtcAddressVia(relayed: Connection, peer: string): Multiaddr | undefined {
  const components = relayed.remoteAddr.getComponents()
  const circuit = components.findIndex((c) => c.name === 'p2p-circuit')
  if (circuit < 0) {
    return undefined
  }
  const head = multiaddr(components.slice(0, circuit + 1))
  return head.encapsulate(`/webrtc/p2p/${peer}`)
}

/**
 * Addresses that are not on the public internet: private (RFC 1918, unique local), shared
 * (CGNAT, 100.64.0.0/10), loopback, link-local and unspecified. What a NATed peer announces.
 */
const NOT_PUBLIC = (() => {
  const list = new net.BlockList()
  for (const [address, prefix] of [
    ['10.0.0.0', 8],
    ['172.16.0.0', 12],
    ['192.168.0.0', 16],
    ['100.64.0.0', 10],
    ['127.0.0.0', 8],
    ['169.254.0.0', 16],
    ['0.0.0.0', 8],
    ['fc00::', 7],
    ['fe80::', 10],
    ['::1', 128],
    ['::', 128],
  ] as const) {
    list.addSubnet(address, prefix, net.isIPv6(address) ? 'ipv6' : 'ipv4')
  }
  return list
})()

/**
 * The peer's plain TCP addresses worth a direct dial: `lan`, those on a network one of our
 * interfaces is on (its loopback ones only when the peer is on this very machine: it has no other
 * address, or one that is ours); `public`, those on the public internet (a peer with a public
 * address or a port forward it announces). Other private addresses are other sites' networks:
 * dialling them would only wait for a timeout.
 */
export function tcpAddresses(
  addrs: Multiaddr[],
  peer: string,
  interfaces = os.networkInterfaces(),
): { lan: Multiaddr[]; public: Multiaddr[] } {
  const local = new net.BlockList()
  const own = new Set<string>()
  for (const list of Object.values(interfaces)) {
    for (const i of list ?? []) {
      const [address, prefix] = (i.cidr ?? '').split('/')
      if (address !== undefined && prefix !== undefined && !address.startsWith('fe80')) {
        local.addSubnet(address, Number(prefix), i.family === 'IPv6' ? 'ipv6' : 'ipv4')
        own.add(address)
      }
    }
  }
  const tcp: Array<{ ma: Multiaddr; ip: string; family: 'ipv4' | 'ipv6'; loopback: boolean }> = []
  for (const ma of addrs) {
    const components = ma.getComponents()
    const ip = components[0]
    const plainTcp =
      components[1]?.name === 'tcp' &&
      components.every((c, i) => i < 2 || c.name === 'p2p') &&
      (ip?.name === 'ip4' || ip?.name === 'ip6')
    if (!plainTcp || ip?.value === undefined) {
      continue
    }
    const loopback = ip.value === '::1' || ip.value.startsWith('127.')
    tcp.push({ ma, ip: ip.value, family: ip.name === 'ip6' ? 'ipv6' : 'ipv4', loopback })
  }
  const others = tcp.filter((a) => !a.loopback)
  const sameMachine = others.length === 0 || others.some((a) => own.has(a.ip))
  const lan = new Map<string, Multiaddr>()
  const pub = new Map<string, Multiaddr>()
  for (const a of tcp) {
    const withPeer = a.ma.getComponents().some((c) => c.name === 'p2p')
      ? a.ma
      : a.ma.encapsulate(`/p2p/${peer}`)
    if (local.check(a.ip, a.family) && (!a.loopback || sameMachine)) {
      lan.set(withPeer.toString(), withPeer)
    } else if (!a.loopback && !NOT_PUBLIC.check(a.ip, a.family)) {
      pub.set(withPeer.toString(), withPeer)
    }
  }
  return { lan: [...lan.values()], public: [...pub.values()] }
}
