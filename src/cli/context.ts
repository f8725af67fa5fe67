/**
 * What a command may touch of the outside world. `main.ts` builds it from the real process;
 * tests build their own, so commands run in-process with captured output.
 *
 * @packageDocumentation
 */

import type { Readable, Writable } from 'node:stream'
import type { Env } from '../env.ts'

/** The streams, environment and working directory a command runs with. */
export interface CliContext {
  /** The name the program was invoked as: `peerup`, or `relay-server` for the relay role. */
  programName: string
  stdout: Writable & { isTTY?: boolean }
  stderr: Writable & { isTTY?: boolean }
  stdin: Readable & { isTTY?: boolean }
  env: Env
  cwd: string
  /** Aborted on the first SIGINT/SIGTERM: long-running commands stop in order when it fires. */
  signal: AbortSignal
}

/** Options every command accepts. */
export interface GlobalOptions {
  config?: string
  json?: boolean
}
