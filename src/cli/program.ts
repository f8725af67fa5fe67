/**
 * The command tree. Each noun lives in `commands/<noun>.ts` and registers itself here; commands
 * parse, call one domain function and render, nothing more.
 *
 * @packageDocumentation
 */

import type { Command } from 'commander'
import { buildInfo } from '../version.ts'
import { registerAuth } from './commands/auth.ts'
import { registerCompletion } from './commands/completion.ts'
import { registerConfig } from './commands/config.ts'
import { registerDaemon } from './commands/daemon.ts'
import { registerDebug } from './commands/debug.ts'
import { registerDemo } from './commands/demo.ts'
import { registerDoctor } from './commands/doctor.ts'
import { registerInit } from './commands/init.ts'
import { registerInvite } from './commands/invite.ts'
import { registerJoin } from './commands/join.ts'
import { registerNet } from './commands/net.ts'
import { registerNetwork } from './commands/network.ts'
import { registerRelay } from './commands/relay.ts'
import { registerResolve } from './commands/resolve.ts'
import { registerService } from './commands/service.ts'
import { registerSshConfig } from './commands/ssh-config.ts'
import { registerStatus } from './commands/status.ts'
import { registerUi } from './commands/ui.ts'
import { registerVerify } from './commands/verify.ts'
import { registerVersion } from './commands/version.ts'
import { registerWhoami } from './commands/whoami.ts'
import type { CliContext } from './context.ts'
import { CliCommand } from './options.ts'

export function buildProgram(ctx: CliContext): Command {
  const program = new CliCommand(ctx.programName)
  const info = buildInfo()
  program
    .description(
      'Reach TCP services (SSH first) on machines behind NAT through your own private libp2p mesh.',
    )
    .option(
      '--config <file>',
      'config file (default: $PEERUP_HOME/config.yaml, ./peerup.yaml, ~/.config/peerup/config.yaml, /etc/peerup/config.yaml)',
    )
    .option(
      '--network <name>',
      "which of the node's networks a command is about (default: the one `peerup network use` chose, else the main one)",
    )
    .option('--json', 'print results as JSON')
    .version(
      `${ctx.programName} ${info.version} (commit ${info.commit}, built ${info.buildDate}, node ${info.node})`,
      '--version',
      'print the version and exit',
    )
    .helpOption('-h, --help', 'show help')
    .enablePositionalOptions()
    .showSuggestionAfterError(true)
    .exitOverride()
    .configureOutput({
      writeOut: (s) => ctx.stdout.write(s),
      writeErr: (s) => ctx.stderr.write(s),
      outputError: (s, write) =>
        write(
          `${ctx.programName}: ${s.replace(/^error: /, '').trimEnd()} (see \`${ctx.programName} --help\`)\n`,
        ),
    })
  program.configureHelp({ sortSubcommands: false, showGlobalOptions: true })

  registerInit(program, ctx)
  registerWhoami(program, ctx)
  registerVersion(program, ctx)
  registerStatus(program, ctx)
  registerConfig(program, ctx)
  registerAuth(program, ctx)
  registerService(program, ctx)
  registerRelay(program, ctx)
  registerInvite(program, ctx)
  registerJoin(program, ctx)
  registerVerify(program, ctx)
  registerNetwork(program, ctx)
  registerNet(program, ctx)
  registerSshConfig(program, ctx)
  registerDaemon(program, ctx)
  registerUi(program, ctx)
  registerResolve(program, ctx)
  registerDoctor(program, ctx)
  registerDebug(program, ctx)
  registerDemo(program, ctx)
  registerCompletion(program, ctx)

  // Subcommands inherit the exit override and the output routing.
  const inherit = (cmd: Command): void => {
    for (const sub of cmd.commands) {
      sub.exitOverride().configureOutput(program.configureOutput())
      sub.showSuggestionAfterError(true)
      inherit(sub)
    }
  }
  inherit(program)
  return program
}
