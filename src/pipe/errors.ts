/**
 * Why a piped connection ended badly. A connection that fails is reset on both ends; these classes
 * say why, in logs, in audit lines and in `PipeResult.error`.
 *
 * @packageDocumentation
 */

import { PeerupError } from '../errors.ts'

/**
 * The remote end closed before the transfer was complete: the connection under a stream went away,
 * or it ended while the other side could still send. The other end is reset, never given a clean
 * end, so a truncated transfer is not mistaken for a complete one.
 */
export class TransferInterruptedError extends PeerupError {
  override name = 'TransferInterruptedError'
}

/** The local socket (or stdio) closed while the other side was still sending. */
export class LocalClosedError extends PeerupError {
  override name = 'LocalClosedError'
}

/** The far end of a framed connection sent a RESET: it failed on its side. */
export class RemoteResetError extends PeerupError {
  override name = 'RemoteResetError'
  readonly code = 'ECONNRESET'
}

/** A framed connection ended without a FIN or a RESET frame: cut, not finished. */
export class FramingCutError extends PeerupError {
  override name = 'FramingCutError'
  readonly code = 'ECONNRESET'
}

/** Bytes that are not frames (a peer speaking another protocol, or corruption). */
export class FrameError extends PeerupError {
  override name = 'FrameError'
}

/** A listener was closed while this connection was still being proxied. */
export class ListenerClosedError extends PeerupError {
  override name = 'ListenerClosedError'
}

/** A listener could not bind its address (in use, not local, no permission). */
export class ListenError extends PeerupError {
  override name = 'ListenError'
}

/** The far end of an accepted connection could not be opened, on any attempt. */
export class OpenError extends PeerupError {
  override name = 'OpenError'
}

/**
 * The far end of an accepted connection was not opened, and the client was told so in its own
 * protocol (a SOCKS reply, an HTTP status: src/daemon/gateway.ts). Its socket is ended after that
 * answer, not reset: a reset could drop the answer before the client reads it.
 */
export class ClientToldError extends PeerupError {
  override name = 'ClientToldError'
}
