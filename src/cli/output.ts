/**
 * The output contract: results on stdout (JSON with `--json`, text otherwise), progress and
 * warnings on stderr.
 *
 * @packageDocumentation
 */

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

/** Writes a progress line or a warning to stderr. */
export function note(ctx: CliContext, message: string): void {
  ctx.stderr.write(`${message}\n`)
}

/** Lays out rows as aligned columns (the last column is not padded). */
export function table(rows: string[][]): string {
  const widths: number[] = []
  for (const row of rows) {
    row.forEach((cell, i) => {
      widths[i] = Math.max(widths[i] ?? 0, cell.length)
    })
  }
  return rows
    .map((row) =>
      row
        .map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i] ?? 0)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n')
}
