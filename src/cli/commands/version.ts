/**
 * `peerup version`: version, commit and build date.
 *
 * @packageDocumentation
 */

import type { Command } from 'commander'
import { buildInfo } from '../../version.ts'
import type { CliContext } from '../context.ts'
import { globalOpts, withCommonOptions } from '../options.ts'
import { emit } from '../output.ts'

/** Registers `version`. */
export function registerVersion(program: Command, ctx: CliContext): void {
  withCommonOptions(program.command('version').description('print version, commit and build date')).action(
    (_flags: object, cmd: Command) => {
      const opts = globalOpts(cmd)
      const info = buildInfo()
      emit(ctx, opts, { program: ctx.programName, ...info }, (i) =>
        [
          `${i.program} ${i.version}`,
          `commit   ${i.commit}`,
          `built    ${i.buildDate}`,
          `runtime  node ${i.node} ${i.platform}`,
        ].join('\n'),
      )
    },
  )
}
