/**
 * The entry point: argv → CLI, and the ONLY place that turns errors into exit codes
 * (0 ok, 1 error, 2 usage error) and one-line messages.
 *
 * @packageDocumentation
 */

import { getEventListeners } from 'node:events'
import * as path from 'node:path'
import { CommanderError } from 'commander'
import type { CliContext } from './cli/context.ts'
import { buildProgram } from './cli/program.ts'
import { readEnv } from './env.ts'
import { ExitStatus, formatError, PeerupError, UsageError } from './errors.ts'

/** Exit codes peerup promises (docs/cli.md). */
export const EXIT = { ok: 0, error: 1, usage: 2 } as const

/** The name the executable answers to when it plays the relay. */
export const RELAY_PROGRAM_NAME = 'relay-server'

/**
 * Maps an invocation as `relay-server <args>` onto `peerup relay <args>`; `version` and
 * `--version` stay top-level so `relay-server version` reports the build.
 */
export function relayArgs(args: string[]): string[] {
  const first = args[0]
  if (first === undefined || first === 'version' || first === '--version') {
    return first === undefined ? ['relay', '--help'] : args
  }
  return ['relay', ...args]
}

/** Runs one command line in `ctx` and resolves to its exit code; never throws, never exits. */
export async function run(args: string[], ctx: CliContext): Promise<number> {
  const argv = ctx.programName === RELAY_PROGRAM_NAME ? relayArgs(args) : args
  const program = buildProgram(ctx)
  try {
    await program.parseAsync(argv, { from: 'user' })
    return EXIT.ok
  } catch (err) {
    return report(err, ctx)
  }
}

function report(err: unknown, ctx: CliContext): number {
  if (err instanceof ExitStatus) {
    return err.code
  }
  if (err instanceof CommanderError) {
    // Commander printed its own message already (help, version, or a usage error).
    return err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.exitCode === 0
      ? EXIT.ok
      : EXIT.usage
  }
  const name = ctx.programName
  if (err instanceof PeerupError) {
    ctx.stderr.write(`${name}: ${formatError(err)}\n`)
  } else {
    // Not one of ours: a bug or an unexpected system error. Still one line, and how to learn more.
    const message = err instanceof Error ? err.message : String(err)
    ctx.stderr.write(`${name}: ${message}${ctx.env.debug ? '' : ' (set PEERUP_DEBUG=1 for details)'}\n`)
  }
  if (ctx.env.debug && err instanceof Error) {
    ctx.stderr.write(`${err.stack ?? ''}\n`)
    let cause = err.cause
    while (cause instanceof Error) {
      ctx.stderr.write(`caused by: ${cause.stack ?? cause.message}\n`)
      cause = cause.cause
    }
  }
  return err instanceof UsageError ? EXIT.usage : EXIT.error
}

/** Runs the process's own command line and sets its exit code. */
export async function main(): Promise<void> {
  // A closed pipe (`peerup auth list | head -1`) is not an error worth a stack trace.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') {
      process.exit(EXIT.ok)
    }
  })
  // First SIGINT/SIGTERM: abort the command's signal so it stops in order (listeners, proxies,
  // libp2p). Second: exit at once, for a shutdown that hangs.
  const shutdown = new AbortController()
  let signals = 0
  const onSignal = (sig: NodeJS.Signals): void => {
    signals++
    // A command that is not listening for the shutdown (a prompt, a file edit) just ends, as
    // Ctrl+C normally does.
    if (signals === 1 && getEventListeners(shutdown.signal, 'abort').length > 0) {
      shutdown.abort(new Error(`received ${sig}`))
      return
    }
    if (signals > 1) {
      process.stderr.write(`peerup: second ${sig}, exiting now\n`)
    }
    process.exit(sig === 'SIGINT' ? 130 : 143)
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  const ctx: CliContext = {
    programName: path.basename(process.argv0) === RELAY_PROGRAM_NAME ? RELAY_PROGRAM_NAME : 'peerup',
    stdout: process.stdout,
    stderr: process.stderr,
    stdin: process.stdin,
    env: readEnv(),
    cwd: process.cwd(),
    signal: shutdown.signal,
  }
  const code = await run(process.argv.slice(2), ctx)
  // A command that ran a libp2p node leaves timers behind for about a second after stopping it
  // (libp2p's connection monitor and timers): exit once the output is flushed rather than wait for them.
  await new Promise<void>((resolve) => process.stdout.write('', () => resolve()))
  await new Promise<void>((resolve) => process.stderr.write('', () => resolve()))
  process.exit(code)
}
