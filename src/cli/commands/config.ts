/**
 * `peerup config validate|show`.
 *
 * @packageDocumentation
 */

import type { Command } from 'commander'
import { checkNodeFiles, effectiveNodeConfigYaml } from '../../config/check.ts'
import { PeerupError } from '../../errors.ts'
import type { CliContext } from '../context.ts'
import { loadNode, nodeConfigFile } from '../load.ts'
import { emit } from '../output.ts'
import { globalOpts, withCommonOptions } from '../program.ts'

/** Registers `config`. */
export function registerConfig(program: Command, ctx: CliContext): void {
  const config = program.command('config').description('check and show the node config')

  withCommonOptions(
    config
      .command('validate')
      .description('check config.yaml (and the identity and authorized_keys it names) and exit')
      .argument('[file]', 'a config file to check instead of the one in use'),
  ).action(async (file: string | undefined, _flags: object, cmd: Command) => {
    const opts = globalOpts(cmd)
    const target = await nodeConfigFile(ctx, file === undefined ? opts : { ...opts, config: file })
    const report = await checkNodeFiles(target)
    if (report.problems.length > 0) {
      for (const p of report.problems) {
        ctx.stderr.write(`${p}\n`)
      }
      throw new PeerupError(
        `${target}: ${report.problems.length} problem${report.problems.length === 1 ? '' : 's'}`,
        {
          hint: 'fix them and run `peerup config validate` again',
        },
      )
    }
    emit(
      ctx,
      opts,
      { file: target, valid: true, peerId: report.peerId },
      (r) => `${r.file}: OK (peer id ${r.peerId})`,
    )
  })

  withCommonOptions(
    config.command('show').description('print the config in effect, with every default filled in'),
  ).action(async (_flags: object, cmd: Command) => {
    const opts = globalOpts(cmd)
    const loaded = await loadNode(ctx, opts)
    emit(
      ctx,
      opts,
      { file: loaded.file, config: loaded.config },
      (r) => `# ${r.file}\n${effectiveNodeConfigYaml(r.config)}`,
    )
  })
}
