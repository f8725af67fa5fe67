/**
 * The output contract: results on stdout (JSON with `--json`, text otherwise), progress and
 * warnings on stderr.
 *
 * @packageDocumentation
 */

import { configureLogging, type LogLevel } from '../log/index.ts'
import type { CliContext, GlobalOptions } from './context.ts'

/** Prints a command's result: `data` as JSON with `--json`, else the text `human` renders. */
export function emit<T>(ctx: CliContext, opts: GlobalOptions, data: T, human: (data: T) => string): void {
  if (opts.json === true) {
    ctx.stdout.write(`${JSON.stringify(data, null, 2)}\n`)
    return
  }
  const text = human(data)
  if (text !== '') {
    ctx.stdout.write(text.endsWith('\n') ? text : `${text}\n`)
  }
}

export function note(ctx: CliContext, message: string): void {
  ctx.stderr.write(`${message}\n`)
}

/** Log lines go to stderr at `level` (`--log-level`), else `fallback`: text on a terminal, JSON lines otherwise. */
export function logToStderr(ctx: CliContext, level: string | undefined, fallback: LogLevel): void {
  configureLogging({
    level: (level as LogLevel | undefined) ?? fallback,
    format: ctx.stderr.isTTY === true ? 'text' : 'json',
  })
}

export { listTable } from '../api/text.ts'
