/**
 * Named errors of the config domain.
 *
 * @packageDocumentation
 */

import { PeerupError } from '../errors.ts'

/** One problem in a config file, located by line and key path. */
export interface ConfigProblem {
  line: number | undefined
  /** Dotted key path, like `services.ssh.local_address`; empty for the whole document. */
  key: string
  message: string
}

/** A config file is invalid; `message` is the first problem as `file:line: key: what`, `problems` all of them. */
export class ConfigError extends PeerupError {
  override name = 'ConfigError'
  readonly file: string
  readonly problems: ConfigProblem[]

  constructor(file: string, problems: ConfigProblem[], options: { hint?: string; cause?: unknown } = {}) {
    const first = problems[0]
    super(first === undefined ? `${file}: invalid config` : formatProblem(file, first), options)
    this.file = file
    this.problems = problems
  }
}

/** No config file was found where peerup looks for one. */
export class ConfigNotFoundError extends PeerupError {
  override name = 'ConfigNotFoundError'
}

/** The config was written by a newer peerup. */
export class ConfigVersionError extends ConfigError {
  override name = 'ConfigVersionError'
}

/** Renders a problem the way compilers do, so editors can jump to it: `file:line: key: message`. */
export function formatProblem(file: string, problem: ConfigProblem): string {
  const where = problem.line === undefined ? file : `${file}:${problem.line}`
  return problem.key === '' ? `${where}: ${problem.message}` : `${where}: ${problem.key}: ${problem.message}`
}
