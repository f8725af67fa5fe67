/**
 * The error model shared by every domain. Each domain defines named subclasses in its own
 * `errors.ts`; `main.ts` is the only place that turns them into exit codes and one-line messages.
 *
 * @packageDocumentation
 */

/** Base class for every error peerup reports to a person: `message` says what failed and why, `hint` what to do. */
export class PeerupError extends Error {
  override name = 'PeerupError'
  /** One short sentence telling the user what to do next, or undefined when the message says it all. */
  readonly hint: string | undefined

  constructor(message: string, options: { hint?: string; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.hint = options.hint
  }
}

/** The command line itself was wrong (bad flag value, missing argument): exit code 2. */
export class UsageError extends PeerupError {
  override name = 'UsageError'
}

/** Something that was asked for does not exist (a service, a name, a peer in authorized_keys). */
export class NotFoundError extends PeerupError {
  override name = 'NotFoundError'
}

/** The change would conflict with what is already there (a duplicate, an existing file). */
export class ConflictError extends PeerupError {
  override name = 'ConflictError'
}

/** Renders an error as the single line a person sees: message, then the hint after an em dash. */
export function formatError(err: unknown): string {
  if (err instanceof PeerupError) {
    return err.hint === undefined ? err.message : `${err.message} — ${err.hint}`
  }
  return err instanceof Error ? err.message : String(err)
}

/**
 * Not a failure to report but an exit status to pass on, as `peerup ssh` does with ssh's: main
 * exits with `code` and prints nothing.
 */
export class ExitStatus extends Error {
  override name = 'ExitStatus'
  readonly code: number

  constructor(code: number) {
    super(`exit status ${code}`)
    this.code = code
  }
}
