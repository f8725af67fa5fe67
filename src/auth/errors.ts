/**
 * Errors of the auth domain: what can be wrong with an authorized_keys file, and with a change
 * asked of it. Each names the file, line or peer involved so a person can fix it directly.
 *
 * @packageDocumentation
 */

import { ConflictError, NotFoundError, PeerupError, UsageError } from '../errors.ts'

/**
 * A line of an authorized_keys file is wrong. The message reads like a compiler's,
 * `authorized_keys:7: …`, so editors and people can jump to the line.
 */
export class AuthorizedKeysError extends PeerupError {
  override name = 'AuthorizedKeysError'
  /** The file as it was named to the parser (a path, or `authorized_keys` for text given directly). */
  readonly file: string
  /** The 1-based line number of the bad line. */
  readonly line: number
  /** What is wrong, without the `file:line:` prefix (for output that shows the location separately). */
  readonly problem: string

  constructor(file: string, line: number, problem: string, options: { hint?: string; cause?: unknown } = {}) {
    super(`${file}:${line}: ${problem}`, options)
    this.file = file
    this.line = line
    this.problem = problem
  }
}

/** The authorized_keys file does not exist and the caller did not ask for an empty one. */
export class AuthorizedKeysMissingError extends NotFoundError {
  override name = 'AuthorizedKeysMissingError'

  constructor(file: string, options: { cause?: unknown } = {}) {
    super(`${file} does not exist`, {
      hint: 'create it with `peerup init`, or authorize a first peer with `peerup auth add <peer-id>`',
      cause: options.cause,
    })
  }
}

/** A peer was added that the file already lists. */
export class DuplicatePeerError extends ConflictError {
  override name = 'DuplicatePeerError'
  /** The canonical id of the peer. */
  readonly peerId: string
  /** The line that already lists it. */
  readonly line: number

  constructor(file: string, peerId: string, line: number) {
    super(`${peerId} is already in ${file} (line ${line})`, {
      hint: `remove it first with \`peerup auth remove ${peerId}\`, or edit line ${line}`,
    })
    this.peerId = peerId
    this.line = line
  }
}

/** A change names a peer the file does not list. */
export class PeerNotFoundError extends NotFoundError {
  override name = 'PeerNotFoundError'
  /** The canonical id of the peer. */
  readonly peerId: string

  constructor(file: string, peerId: string) {
    super(`${peerId} is not in ${file}`, { hint: 'see the authorized peers with `peerup auth list`' })
    this.peerId = peerId
  }
}

/** A string given as a peer id (on the command line, or by code) is not one; the message names it. */
export class InvalidPeerIdError extends UsageError {
  override name = 'InvalidPeerIdError'
}

/** An attribute given for an entry (on the command line, or by code) is unknown or has a bad value. */
export class InvalidAttributeError extends UsageError {
  override name = 'InvalidAttributeError'
}

/** The file changed on disk between being read and being rewritten, so the rewrite was abandoned. */
export class AuthorizedKeysChangedError extends ConflictError {
  override name = 'AuthorizedKeysChangedError'

  constructor(file: string) {
    super(`${file} changed while it was being updated; nothing was written`, {
      hint: 'run the command again',
    })
  }
}
