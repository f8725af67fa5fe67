/**
 * `peerup ui`: a one-time login link to the running daemon's web dashboard (docs/ui.md). The
 * link is the result (stdout); it works once, within a minute.
 *
 * @packageDocumentation
 */

import type { CliContext } from '../context.ts'
import { daemonClient, nodeConfigFile } from '../load.ts'
import type { CliCommand } from '../options.ts'
import { emit, note } from '../output.ts'

export function registerUi(program: CliCommand, ctx: CliContext): void {
  program
    .command('ui')
    .description("print a one-time login link to the daemon's web dashboard (ui.listen_address)")
    .run(async (opts) => {
      const client = daemonClient(ctx, await nodeConfigFile(ctx, opts))
      const login = await client.call('uiLogin', {}, ctx.signal)
      if (opts.json !== true) {
        note(ctx, 'open this link in a browser on this machine; it works once, within a minute:')
      }
      emit(ctx, opts, login, (r) => r.url)
    })
}
