/**
 * Errors of the TCP proxy. A proxied connection that fails is reset on both sides; these classes say
 * why, in logs, in the audit callback and in `BridgeResult.error`.
 *
 * @packageDocumentation
 */

import { PeerupError } from '../errors.ts'

/** Base class of the proxy's errors. */
export class ProxyError extends PeerupError {
  override name = 'ProxyError'
}

/** The local TCP service of an exposed service refused the connection or did not answer in time. */
export class LocalServiceUnavailableError extends ProxyError {
  override name = 'LocalServiceUnavailableError'
  /** The service name from the config. */
  readonly service: string
  /** The `host:port` that was dialled. */
  readonly localAddress: string

  constructor(service: string, localAddress: string, reason: string, options: { cause?: unknown } = {}) {
    super(`service ${service}: local address ${localAddress} ${reason}`, {
      hint: `check that the service listens on ${localAddress} on this machine`,
      cause: options.cause,
    })
    this.service = service
    this.localAddress = localAddress
  }
}

/** A peer asked for a service whose `allowed_peers` does not include it. */
export class PeerNotAllowedError extends ProxyError {
  override name = 'PeerNotAllowedError'
  /** The refused peer id. */
  readonly peer: string
  /** The service name. */
  readonly service: string

  constructor(service: string, peer: string) {
    super(`peer ${peer} is not allowed to use service ${service}`, {
      hint: `add the peer to allowed_peers of service ${service} if it should have access`,
    })
    this.peer = peer
    this.service = service
  }
}

/** Opening a stream for an accepted local connection failed on every attempt. */
export class StreamOpenError extends ProxyError {
  override name = 'StreamOpenError'
}

/**
 * The libp2p stream closed before the transfer was complete: the connection under it went away, or
 * the stream ended while the local side could still send. The local side is reset, never given a
 * clean end, so a truncated transfer is not mistaken for a complete one.
 */
export class TransferInterruptedError extends ProxyError {
  override name = 'TransferInterruptedError'
}

/** The local socket (or stdio) closed while the remote was still sending. */
export class LocalClosedError extends ProxyError {
  override name = 'LocalClosedError'
}

/** A proxy listener was closed while this connection was still being proxied. */
export class ListenerClosedError extends ProxyError {
  override name = 'ListenerClosedError'
}

/** A proxy listener could not bind its address (in use, not local, no permission). */
export class ListenError extends ProxyError {
  override name = 'ListenError'
}

/** The service handler was closed (daemon stopping, service removed); its sessions are reset. */
export class ServiceClosedError extends ProxyError {
  override name = 'ServiceClosedError'

  constructor(service: string) {
    super(`service ${service} was stopped`)
  }
}
