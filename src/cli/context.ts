/**
 * What a command may touch of the outside world. `main.ts` builds it from the real process;
 * tests build their own, so commands run in-process with captured output.
 *
 * @packageDocumentation
 */

import type { Readable, Writable } from 'node:stream'
import type { Env } from '../env.ts'

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

export interface GlobalOptions {
  config?: string
  /** `--network NAME`: which of the node's networks (docs/cli.md "Several networks"). */
  network?: string
  json?: boolean
}

/**
 * Runs a long-running command so that the first SIGINT/SIGTERM aborts `ctx.signal` (and `fn`
 * stops in order) instead of ending the process at once: main.ts aborts only a signal somebody
 * listens to, and `AbortSignal.any()` derived from it does not count as a listener.
 */
export async function graceful<T>(ctx: CliContext, fn: () => Promise<T>): Promise<T> {
  const hold = (): void => {}
  ctx.signal.addEventListener('abort', hold)
  try {
    return await fn()
  } finally {
    ctx.signal.removeEventListener('abort', hold)
  }
}
