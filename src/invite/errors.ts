/**
 * Named errors of pairing, each worded for the person holding the code. None of them ever
 * carries the code or its token: messages end up in terminals, logs and bug reports.
 *
 * @packageDocumentation
 */

import { PeerupError, UsageError } from '../errors.ts'

/** The text is not a pairing code at all (wrong length, characters outside the alphabet). */
export class MalformedCodeError extends UsageError {
  override name = 'MalformedCodeError'
}

/** The checksum does not match: a character was mistyped, dropped or added. */
export class CodeTypoError extends UsageError {
  override name = 'CodeTypoError'
}

/** The code was made by a newer peerup whose code format this build does not know. */
export class CodeVersionError extends PeerupError {
  override name = 'CodeVersionError'
}

/** The code's expiry has passed (by this machine's clock, or by the inviter's). */
export class CodeExpiredError extends PeerupError {
  override name = 'CodeExpiredError'
}

/** The code was used already, burned after too many wrong proofs, or revoked. */
export class CodeUsedError extends PeerupError {
  override name = 'CodeUsedError'
}

/**
 * The other side has no such code: it belongs to an earlier or another invite (or another relay's
 * group). Nothing was counted against any code.
 */
export class UnknownCodeError extends PeerupError {
  override name = 'UnknownCodeError'
}

/** The other side did not prove knowledge of the token (or we did not, to it). */
export class PairingProofError extends PeerupError {
  override name = 'PairingProofError'
}

/** The pairing exchange broke off: a malformed or oversized message, a timeout, a closed stream. */
export class PairingProtocolError extends PeerupError {
  override name = 'PairingProtocolError'
}

/** The inviter is not reachable or no longer waiting for a join. */
export class InviterUnreachableError extends PeerupError {
  override name = 'InviterUnreachableError'
}

/** `peerup invite` cannot run here (a daemon holds this identity's reservations, no relay, …). */
export class InviteUnavailableError extends PeerupError {
  override name = 'InviteUnavailableError'
}
