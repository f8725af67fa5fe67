/**
 * `peerup demo`: a relay and two nodes on loopback, one reaching the other's service.
 *
 * @packageDocumentation
 */

import { type CliContext, graceful } from '../context.ts'
import { loadDemo } from '../lazy.ts'
import type { CliCommand } from '../options.ts'

export function registerDemo(program: CliCommand, ctx: CliContext): void {
  program
    .command('demo')
    .description(
      'run a relay and two nodes on this machine and show one reaching the other (nothing left behind)',
    )
    .action(async () => {
      const { runDemo } = await loadDemo()
      await graceful(ctx, () => runDemo((line) => ctx.stdout.write(`${line}\n`), { signal: ctx.signal }))
    })
}
