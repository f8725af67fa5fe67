/**
 * Defaults of the TCP proxy: stream muxer settings, protocol handler options, timeouts and retry
 * delays. The node wiring in `src/p2p/` uses {@link YAMUX_OPTIONS} and {@link SERVICE_HANDLE_OPTIONS}
 * so that a proxied stream behaves the way the tests in `test/integration/proxy/` check.
 *
 * @packageDocumentation
 */

const MiB = 1024 * 1024

/**
 * The largest receive window yamux grants one stream. A paused stream (slow TCP client) still receives
 * up to one window of data, which waits in the stream's read buffer; with yamux's default of 16 MiB
 * against a 4 MiB read buffer the stream is reset with `StreamBufferError` (PITFALLS "Streams").
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

/**
 * Options for `yamux()` on every peerup node. yamux's own connection limits (1000 streams each way)
 * are already above what the proxy asks for.
 */
export const YAMUX_OPTIONS = {
  maxEarlyStreams: MAX_EARLY_STREAMS,
  streamOptions: {
    maxStreamWindowSize: MAX_STREAM_WINDOW_BYTES,
    maxReadBufferLength: MAX_READ_BUFFER_BYTES,
  },
} as const

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
export const RELAY_YAMUX_OPTIONS = {
  maxEarlyStreams: MAX_EARLY_STREAMS,
  streamOptions: {
    maxStreamWindowSize: RELAY_STREAM_WINDOW_BYTES,
    maxReadBufferLength: 2 * RELAY_STREAM_WINDOW_BYTES,
  },
} as const

/**
 * The most proxied streams of one service on one connection, each way. libp2p's defaults (32 inbound,
 * 64 outbound) are per protocol per connection, and an inbound stream over the limit is reset by the
 * remote only *after* `newStream()` succeeded locally, which looks like a broken service.
 */
export const MAX_SERVICE_STREAMS = 1024

/**
 * Options the node must pass to `libp2p.handle(serviceProtocolId(name), handler, …)`. Relayed
 * ("limited") connections are refused: a limited relay circuit dies after 128 KiB (SPEC §4).
 */
export const SERVICE_HANDLE_OPTIONS = {
  maxInboundStreams: MAX_SERVICE_STREAMS,
  maxOutboundStreams: MAX_SERVICE_STREAMS,
  runOnLimitedConnection: false,
} as const

/**
 * Options to pass to `dialProtocol()` / `newStream()` when opening a service stream. The outbound
 * limit from `handle()` only applies on a node that itself handles the protocol; a client that
 * merely dials falls back to 64 streams per protocol per connection, so it must say so here.
 */
export const SERVICE_DIAL_OPTIONS = {
  maxOutboundStreams: MAX_SERVICE_STREAMS,
  runOnLimitedConnection: false,
} as const

/** How long the service side waits for its local TCP service to accept (SPEC §4). */
export const DEFAULT_LOCAL_DIAL_TIMEOUT_MS = 10_000
