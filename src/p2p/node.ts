/**
 * `createPeerupNode()`: the libp2p node of a peerup machine, assembled with the settings that
 * PITFALLS.md showed a TCP proxy needs: a yamux window no larger than a stream's read buffer, a
 * connection monitor that does not abort busy connections, a private DHT that keeps private
 * addresses, and relay reservations that are listened for rather than configured statically.
 *
 * @packageDocumentation
 */

import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { circuitRelayTransport } from '@libp2p/circuit-relay-v2'
import { identify } from '@libp2p/identify'
import type { ConnectionGater, Libp2p, PrivateKey, ServiceMap } from '@libp2p/interface'
import { FaultTolerance } from '@libp2p/interface'
import { type KadDHT, kadDHT, passthroughMapper } from '@libp2p/kad-dht'
import { type Ping, ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import type { webRTC } from '@libp2p/webrtc'
import { createLibp2p, type Libp2pOptions } from 'libp2p'
import { multiaddrTarget } from '../util/multiaddr.ts'
import { VERSION } from '../version.ts'
import {
  dhtProtocol,
  MAX_EARLY_STREAMS,
  MAX_READ_BUFFER_BYTES,
  NODE_AGENT,
  YAMUX_OPTIONS,
} from './constants.ts'
import { type LivenessInit, type LivenessMonitor, liveness } from './liveness.ts'
import { type Members, membersOnlyIdentify, membersOnlyKadDHT } from './members-only.ts'
import { noiseCrypto } from './noise-crypto.ts'
import { upgraderAccess } from './punch.ts'

/** Inbound handshakes under way at once on a node (libp2p's default is 10). */
const NODE_MAX_PENDING_CONNECTIONS = 64

/** Concurrent ping streams allowed per connection, each way. */
const PING_STREAMS = 16

/** The services every peerup node (and relay) runs. */
export interface BaseServices extends ServiceMap {
  identify: ReturnType<ReturnType<typeof identify>>
  ping: Ping
  dht: KadDHT
  liveness: LivenessMonitor
  upgraderAccess: ReturnType<ReturnType<typeof upgraderAccess>>
}

/** A running peerup libp2p node. */
export type PeerupLibp2p<S extends ServiceMap = BaseServices> = Libp2p<S>

/** What every peerup libp2p node, a node's or a relay's, is made of. */
interface CommonOptions {
  privateKey: PrivateKey
  /** Multiaddrs to listen on (config `network.listen_addresses`). */
  listen: string[]
  /** Private network name: the DHT protocol is `/peerup[/<network>]/kad/1.0.0`. */
  network: string
  gater: ConnectionGater
  /**
   * Who may use the DHT and see the full identify record: relay_authorized_keys on a relay,
   * authorized_keys plus the relays (and bootstrap peers) on a node. Undefined: everyone.
   */
  members?: Members
  /** How dead connections are found (src/p2p/liveness.ts); its defaults otherwise. */
  liveness?: LivenessInit
}

/** What a node is made of. */
export interface PeerupNodeOptions extends CommonOptions {
  /** How many relays reservations should be held on: one `/p2p-circuit` listener each. */
  relayCount: number
  /**
   * The direct path across NAT (WebRTC, signalled through a relay), with the STUN servers ICE may
   * ask: only ever the configured relays' own ({@link iceServersFor}). Undefined: no WebRTC at all,
   * neither dialling nor accepting, and `/webrtc` listen addresses are ignored.
   */
  webrtc?: { iceServers: string[] }
  /** libp2p's metrics (`@libp2p/prometheus-metrics` into our own registry), when metrics are on. */
  metrics?: Libp2pOptions['metrics']
  /**
   * Start the node before returning it (default true). False leaves it to the caller, which then
   * starts it as one component among others (src/util/components.ts).
   */
  start?: boolean
}

/**
 * The libp2p settings shared by nodes and relays: transports, encryption, muxing, connection
 * manager and monitor, identify, ping and the private DHT.
 */
export function baseLibp2pOptions(
  options: CommonOptions & {
    /** Identify user agent: `<name>/<version>`. */
    agent: string
    /** Run the DHT in server mode (relays do; nodes behind NAT are clients). */
    dhtServer: boolean
    transports?: Libp2pOptions['transports']
    /** Connections open at once; libp2p's default (300) is a node's, far too few for a relay. */
    maxConnections?: number
    /** Inbound connections in their handshake at once, everyone together (libp2p's default: 10). */
    maxPendingConnections?: number
    /**
     * New inbound connections per second from one IP that libp2p accepts (default 100). A relay
     * passes `Infinity` and limits them in its gater instead, where a refusal is audited and a
     * member's connection is given back (src/relay/gater.ts).
     */
    inboundConnectionsPerSecondPerIp?: number
    /** How long an inbound connection may take to authenticate (libp2p's default: 10 s). */
    handshakeTimeoutMs?: number
    /** yamux settings; the nodes' {@link YAMUX_OPTIONS} by default (a relay passes its own). */
    yamux?: typeof YAMUX_OPTIONS
  },
): Libp2pOptions<BaseServices> {
  const members = options.members
  const dht = {
    protocol: dhtProtocol(options.network),
    clientMode: !options.dhtServer,
    // Private and CGNAT addresses are how LAN peers find each other; the default mapper drops them.
    peerInfoMapper: passthroughMapper,
  }
  return {
    privateKey: options.privateKey,
    nodeInfo: { name: options.agent.split('/')[0] ?? NODE_AGENT, version: VERSION, userAgent: options.agent },
    addresses: { listen: options.listen },
    transports: [tcp(), ...(options.transports ?? [])],
    connectionEncrypters: [noise({ crypto: noiseCrypto })],
    streamMuxers: [yamux(options.yamux ?? YAMUX_OPTIONS)],
    connectionGater: options.gater,
    connectionManager: {
      // Many peers behind one NAT, or every node of a test on 127.0.0.1, share an address: the
      // default of 5 inbound connections per second per host refuses them.
      inboundConnectionThreshold: options.inboundConnectionsPerSecondPerIp ?? 100,
      // Undefined is libp2p's default for each (it reads them with `??`).
      maxConnections: options.maxConnections,
      maxIncomingPendingConnections: options.maxPendingConnections,
      inboundUpgradeTimeout: options.handshakeTimeoutMs,
    },
    // libp2p's monitor aborts a connection on the first failed ping of any kind (a busy peer, a
    // ping stream refused); src/p2p/liveness.ts pings instead and aborts only the silent ones.
    connectionMonitor: { enabled: false },
    // A listen address that cannot be bound (an IPv6 wildcard on a host without IPv6) must not stop
    // the node: it runs on the addresses that work.
    transportManager: { faultTolerance: FaultTolerance.NO_FATAL },
    services: {
      // With `members`, strangers get a reduced identify and no DHT (src/p2p/members-only.ts).
      identify:
        members === undefined
          ? identify()
          : membersOnlyIdentify({}, members, options.agent.split('/')[0] ?? NODE_AGENT),
      // libp2p's ping allows one outbound (and two inbound) ping streams per connection; the
      // connection monitor's own ping then makes `peerup ping` fail with "Too many outbound
      // protocol streams", and so would two pings through one daemon at once.
      ping: ping({ maxOutboundStreams: PING_STREAMS, maxInboundStreams: PING_STREAMS }),
      dht: members === undefined ? kadDHT(dht) : membersOnlyKadDHT(dht, members),
      liveness: liveness(options.liveness),
      // libp2p's upgrader, for the TCP puncher to upgrade the sockets it connects (src/p2p/punch.ts).
      upgraderAccess: upgraderAccess(),
    },
  }
}

/** Creates a node and, unless `start` is false, starts it. */
export async function createPeerupNode(options: PeerupNodeOptions): Promise<PeerupLibp2p> {
  // Reservations are listened for on plain /p2p-circuit (one listener per relay wanted) while the
  // reservation supervisor keeps the relays connected: static `<relay>/p2p-circuit` listen
  // addresses are never re-made after a relay restarts (libp2p issue 3601) and make start-up
  // fail while a relay is down.
  const webrtc = options.webrtc
  const init = baseLibp2pOptions({
    ...options,
    listen: [
      ...options.listen.filter((a) => webrtc !== undefined || !a.startsWith('/webrtc')),
      ...Array.from({ length: Math.max(options.relayCount, 0) }, () => '/p2p-circuit'),
    ],
    agent: `${NODE_AGENT}/${VERSION}`,
    dhtServer: false,
    // The gater bounds strangers' share of these (src/auth/gater.ts); what is left must be
    // plenty for authorized peers reconnecting all at once.
    maxPendingConnections: NODE_MAX_PENDING_CONNECTIONS,
    transports: [
      circuitRelayTransport(),
      ...(webrtc === undefined ? [] : [await webrtcTransport(webrtc.iceServers)]),
    ],
  })
  // libp2p reads an undefined `metrics` as none.
  return createLibp2p({ ...init, start: options.start ?? true, metrics: options.metrics })
}

/** The largest data-channel message a stream sends (see {@link webrtcTransport}). */
export const WEBRTC_MESSAGE_BYTES = 64 * 1024

/**
 * The WebRTC transport with ICE pointed at `iceServers` only. @libp2p/webrtc 6 falls back to four
 * public STUN servers (Google, Twilio, Cloudflare, Mozilla) when `iceServers` is missing
 * (`getRtcConfiguration()`), so it is always given, even empty; a fresh object per connection
 * because the library writes into it.
 */
export async function webrtcTransport(iceServers: string[]): Promise<ReturnType<typeof webRTC>> {
  // Loaded only when used: a relay, and a node without `/webrtc`, never load node-datachannel
  // (its addon and libdatachannel cost ~10 MB of RSS).
  const { webRTC } = await import('@libp2p/webrtc')
  return webRTC({
    rtcConfiguration: () => rtcConfigurationFor(iceServers),
    // As for yamux (src/p2p/constants.ts): several SSH sessions opened at once on a new
    // connection must not be refused as "early" streams.
    maxEarlyStreams: MAX_EARLY_STREAMS,
    // Passed through to each stream. WebRTC streams apply no read backpressure (sendPause() is a
    // no-op in @libp2p/webrtc 6): a paused stream buffers what arrives, and is reset past this.
    // 64 KiB messages instead of the library's 16 KiB: every message is one synchronous native
    // call, the sender's main cost (66 % of its time in the benchmark's profile). Measured in
    // process: 48 → 57 MB/s; 256 KiB was slower again (50 MB/s). libdatachannel takes up to 256 KiB.
    dataChannel: {
      maxReadBufferLength: MAX_READ_BUFFER_BYTES,
      maxMessageSize: WEBRTC_MESSAGE_BYTES,
    } as NonNullable<Parameters<typeof webRTC>[0]>['dataChannel'],
  })
}

/** The RTCPeerConnection configuration for `iceServers`: a new object each time (see {@link webrtcTransport}). */
export function rtcConfigurationFor(iceServers: string[]): { iceServers: Array<{ urls: string[] }> } {
  return { iceServers: iceServers.map((url) => ({ urls: [url] })) }
}

/**
 * The STUN servers of a node: each configured relay's host on `port` (the relay's STUN responder,
 * `stun.listen_address` in relay-server.yaml), never a third party. Port 0 means none.
 */
export function iceServersFor(relays: string[], port: number): string[] {
  if (port === 0) {
    return []
  }
  const out = new Set<string>()
  for (const relay of relays) {
    const target = multiaddrTarget(relay)
    if (target !== undefined) {
      out.add(target.family === 6 ? `stun:[${target.host}]:${port}` : `stun:${target.host}:${port}`)
    }
  }
  return [...out]
}
