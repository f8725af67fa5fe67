/**
 * Defaults of exposed services: how many streams a service takes, how its streams are opened,
 * how long its local address has to answer. The muxer settings the streams rely on are in
 * src/p2p/constants.ts.
 *
 * @packageDocumentation
 */

/**
 * The most proxied streams of one service on one connection, each way. libp2p's defaults (32 inbound,
 * 64 outbound) are per protocol per connection, and an inbound stream over the limit is reset by the
 * remote only *after* `newStream()` succeeded locally, which looks like a broken service.
 */
export const MAX_SERVICE_STREAMS = 1024

/**
 * Options the node must pass to `libp2p.handle(serviceProtocolId(name), handler, …)`. Relayed
 * ("limited") connections are refused: a limited relay circuit dies after 128 KiB (docs/relay-vps.md).
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

/** How long the service side waits for its local TCP service to accept. */
export const DEFAULT_LOCAL_DIAL_TIMEOUT_MS = 10_000
