/**
 * Protocol ids and defaults of the peerup network.
 *
 * @packageDocumentation
 */

/** The DHT protocol of a private network: never the public IPFS DHT (docs/decisions/0000-inherited.md). */
export function dhtProtocol(network: string): string {
  return network === '' ? '/peerup/kad/1.0.0' : `/peerup/${network}/kad/1.0.0`
}

/** The protocol a service is offered on. */
export function serviceProtocolId(service: string): string {
  return `/peerup/${service}/1.0.0`
}

/** The ping protocol peerup uses (libp2p's, so any libp2p node answers). */
export const PING_PROTOCOL = '/ipfs/ping/1.0.0'

/** Identify user agent prefix of nodes. */
export const NODE_AGENT = 'peerup'

/** Identify user agent prefix of relays. */
export const RELAY_AGENT = 'relay-server'

/** How often the reservation supervisor checks relays when nothing else wakes it. */
export const SUPERVISOR_TICK_MS = 5_000

/** First delay before the supervisor tries a relay again after a failed dial or a refused reservation. */
export const RESERVATION_RETRY_BASE_MS = 1_000

/**
 * Longest delay between two tries of a relay without a reservation: a node the operator has just
 * authorized, on a relay that could not tell it (src/p2p/relay-notify.ts), waits at most this.
 */
export const RESERVATION_RETRY_MAX_MS = 30_000

/** Fraction of each retry delay taken off at random, so that nodes refused together spread out. */
export const RESERVATION_RETRY_JITTER = 0.2

/** Timeout of one dial of a relay by the supervisor. */
export const RELAY_DIAL_TIMEOUT_MS = 10_000

/** Timeout of reaching a peer (DHT lookup raced against relay circuits). */
export const REACH_TIMEOUT_MS = 20_000

/** Peerstore tag that keeps relay connections open. */
export const RELAY_KEEP_ALIVE_TAG = 'keep-alive-peerup-relay'

/** The circuit relay v2 stop protocol: one outbound stop stream on the relay is one relayed circuit. */
export const RELAY_STOP_PROTOCOL = '/libp2p/circuit/relay/0.2.0/stop'

/** The circuit relay v2 hop protocol: a peer asks the relay for a reservation or a circuit on it. */
export const RELAY_HOP_PROTOCOL = '/libp2p/circuit/relay/0.2.0/hop'

const MiB = 1024 * 1024

/**
 * The largest receive window yamux grants one stream. A paused stream (slow TCP client) still receives
 * up to one window of data, which waits in the stream's read buffer; with yamux's default of 16 MiB
 * against a 4 MiB read buffer the stream is reset with `StreamBufferError` (docs/decisions/0005-data-plane.md).
 * 4 MiB costs nothing on low-RTT links; a single stream on a high-RTT link is capped near window/RTT
 * (4 MiB / 100 ms ≈ 40 MB/s), which is more than a relay delivers anyway.
 */
export const MAX_STREAM_WINDOW_BYTES = 4 * MiB

/**
 * How many received bytes a stream holds before it resets itself. Twice the window, not equal to
 * it: data that arrives before anyone listens (between protocol negotiation and the handler pausing
 * the stream, or before `dialProtocol()` returns) is acknowledged with window updates although nobody
 * has read it, so the buffer can briefly exceed one window. Once a bridge listens, at most one window
 * is buffered per stream.
 */
export const MAX_READ_BUFFER_BYTES = 2 * MAX_STREAM_WINDOW_BYTES

/**
 * Inbound streams a new connection may carry before libp2p attaches its stream listener. A client
 * opens its streams as soon as its side of the upgrade is done; the other side can still be finishing
 * its own, and yamux then aborts the *whole connection* with `MaxEarlyStreamsError` once more than
 * 10 (the default) streams wait. Eleven SSH sessions started together on a fresh connection, or a
 * loaded machine, are enough. Only authorized peers get this far (connection gating), and each early
 * stream holds at most the initial 256 KiB window.
 */
export const MAX_EARLY_STREAMS = 256

/** Options for `yamux()` with a stream window of `windowBytes` and a read buffer of twice that. */
function yamuxOptions(windowBytes: number) {
  return {
    maxEarlyStreams: MAX_EARLY_STREAMS,
    streamOptions: { maxStreamWindowSize: windowBytes, maxReadBufferLength: 2 * windowBytes },
  } as const
}

/**
 * Options for `yamux()` on every peerup node. yamux's own connection limits (1000 streams each way)
 * are already above what the proxy asks for.
 */
export const YAMUX_OPTIONS = yamuxOptions(MAX_STREAM_WINDOW_BYTES)

/**
 * The relay's stream window: 2 MiB rather than the nodes' 4 MiB. A relay holds up to a window per
 * direction per circuit while one side is slower than the other. Measured in the bench lab
 * (relaying 1 GiB through SSH, and 256 MiB relayed through `peerup daemon connect`): 4 MiB, peak
 * RSS 153 MB at 143 MB/s; 2 MiB, 151 MB at 116 MB/s; 1 MiB, 141 MB at 105 MB/s. The price of a
 * smaller window is also paid on long links: one relayed stream is capped near a window per
 * round trip of its first hop (2 MiB at 50 ms ≈ 40 MB/s).
 */
export const RELAY_STREAM_WINDOW_BYTES = 2 * 1024 * 1024

/** yamux settings of a relay (see {@link RELAY_STREAM_WINDOW_BYTES}). */
export const RELAY_YAMUX_OPTIONS = yamuxOptions(RELAY_STREAM_WINDOW_BYTES)

/** The protocol on which members ask a relay for a splice token (src/relay/splice.ts). */
export const SPLICE_PROTOCOL = '/peerup/splice/1.0.0'

/** Bytes of a splice token: what each connection to a relay's splice port sends first. */
export const SPLICE_TOKEN_BYTES = 32
