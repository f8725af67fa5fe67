/**
 * `peerup version`: version, commit and build date.
 *
 * @packageDocumentation
 */

import { buildInfo } from '../../version.ts'
import type { CliContext } from '../context.ts'
import type { CliCommand } from '../options.ts'
import { emit } from '../output.ts'

export function registerVersion(program: CliCommand, ctx: CliContext): void {
  program
    .command('version')
    .description('print version, commit and build date')
    .run((opts) => {
      const info = buildInfo()
      emit(ctx, opts, { program: ctx.programName, ...info }, (i) =>
        [
          `${i.program} ${i.version}`,
          `commit   ${i.commit}`,
          `built    ${i.buildDate}`,
          `runtime  node ${i.node} ${i.platform}`,
        ].join('\n'),
      )
    })
}
