/**
 * Named errors of the network layer, each worded for the person at the keyboard.
 *
 * @packageDocumentation
 */

import { PeerupError } from '../errors.ts'

/** The peer could not be reached by any path. */
export class PeerUnreachableError extends PeerupError {
  override name = 'PeerUnreachableError'
}

/** The peer closed the connection during the handshake: its gater refused us. */
export class PeerRefusedError extends PeerupError {
  override name = 'PeerRefusedError'
}

/** The relay refused to connect us (we are not authorized there, or the peer has no reservation). */
export class RelayRefusedError extends PeerupError {
  override name = 'RelayRefusedError'
}

/** The peer does not offer the service asked for, or refused it to us. */
export class ServiceRefusedError extends PeerupError {
  override name = 'ServiceRefusedError'
}

/** The peer offers no service of that name (or, asked `port:<n>`, none on that port). */
export function noSuchService(peer: string, service: string, cause: unknown): ServiceRefusedError {
  const port = /^port:(\d+)$/.exec(service)?.[1]
  if (port !== undefined) {
    return new ServiceRefusedError(`${peer} offers no service on port ${port}`, {
      hint: `on ${peer}: a service whose local_address has port ${port}, or with ${port} in its ports:`,
      cause,
    })
  }
  return new ServiceRefusedError(`${peer} does not offer a service named ${service}`, {
    hint: `on ${peer}: \`peerup service add ${service} <host:port>\`, then restart its daemon`,
    cause,
  })
}

/** `ping --until-direct`: the path did not become direct (the upgrade failed, or the wait ran out). */
export class NoDirectPathError extends PeerupError {
  override name = 'NoDirectPathError'
}
