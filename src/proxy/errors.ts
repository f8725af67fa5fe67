/**
 * Errors of exposed services: who may use one, and what happens when its local address does not
 * answer. How a connection itself fails is in src/pipe/errors.ts.
 *
 * @packageDocumentation
 */

import { PeerupError } from '../errors.ts'

export class ProxyError extends PeerupError {
  override name = 'ProxyError'
}

/** The local TCP service of an exposed service refused the connection or did not answer in time. */
export class LocalServiceUnavailableError extends ProxyError {
  override name = 'LocalServiceUnavailableError'

  constructor(service: string, localAddress: string, reason: string, options: { cause?: unknown } = {}) {
    super(`service ${service}: local address ${localAddress} ${reason}`, {
      hint: `check that the service listens on ${localAddress} on this machine`,
      cause: options.cause,
    })
  }
}

/** A peer asked for a service whose `allowed_peers` does not include it. */
export class PeerNotAllowedError extends ProxyError {
  override name = 'PeerNotAllowedError'

  constructor(service: string, peer: string) {
    super(`peer ${peer} is not allowed to use service ${service}`, {
      hint: `add the peer to allowed_peers of service ${service} if it should have access`,
    })
  }
}

/** The service handler was closed (daemon stopping, service removed); its sessions are reset. */
export class ServiceClosedError extends ProxyError {
  override name = 'ServiceClosedError'

  constructor(service: string) {
    super(`service ${service} was stopped`)
  }
}
