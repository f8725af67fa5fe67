/**
 * `peerup ssh-config [--install] [--file F]`: the `Host` blocks that make plain `ssh home` (and
 * scp, rsync, git, editors' remote SSH) go through peerup — printed, or installed between marker
 * lines at the end of ~/.ssh/config (src/config/ssh-config.ts).
 *
 * @packageDocumentation
 */

import * as path from 'node:path'
import { installSshConfig, renderSshConfig } from '../../config/ssh-config.ts'
import { selfCommand } from '../../util/self.ts'
import type { CliContext, GlobalOptions } from '../context.ts'
import { loadNode } from '../load.ts'
import type { CliCommand } from '../options.ts'
import { emit } from '../output.ts'

/**
 * Whether ssh's ProxyCommand would find `file` with no `--config`: the user's own config
 * (`~/.config/peerup/config.yaml`) or the system's, and no PEERUP_HOME to put another first.
 * Then the blocks name no config, and keep working if the file moves there from elsewhere.
 */
function foundByDefault(ctx: CliContext, file: string): boolean {
  const own = path.join(ctx.env.configHome, 'peerup', 'config.yaml')
  return ctx.env.peerupHome === undefined && (file === own || file === '/etc/peerup/config.yaml')
}

export function registerSshConfig(program: CliCommand, ctx: CliContext): void {
  program
    .command('ssh-config')
    .description(
      'Host blocks for ~/.ssh/config so that plain ssh, scp, rsync and git reach peers by name (ssh home, ssh home.peerup)',
    )
    .option('--install', 'write them into the ssh config, between marker lines at its end (again: replaced)')
    .option('--file <path>', 'the ssh config to install into (default ~/.ssh/config)')
    .run(async (opts: GlobalOptions & { install?: boolean; file?: string }) => {
      const { config, file: configFile } = await loadNode(ctx, opts)
      const section = renderSshConfig({
        names: Object.keys(config.names),
        exe: selfCommand(),
        configFile: foundByDefault(ctx, configFile) ? undefined : configFile,
      })
      if (opts.install !== true) {
        emit(ctx, opts, { section }, (r) => r.section)
        return
      }
      const target = path.resolve(ctx.cwd, opts.file ?? path.join(ctx.env.home, '.ssh', 'config'))
      const result = await installSshConfig(target, section)
      emit(ctx, opts, result, (r) =>
        r.changed ? `installed the peerup section into ${r.file}` : `${r.file} is up to date`,
      )
    })
}
