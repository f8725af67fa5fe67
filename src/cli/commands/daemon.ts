/**
 * `peerup daemon`: run the agent in the foreground (systemd runs this).
 *
 * @packageDocumentation
 */

import type { Command } from 'commander'
import { configureLogging, createLogger, type LogLevel } from '../../log/index.ts'
import type { CliContext } from '../context.ts'
import { loadDaemon } from '../lazy.ts'
import { loadNode } from '../load.ts'
import { globalOpts, withCommonOptions } from '../program.ts'

/** Registers `daemon`. */
export function registerDaemon(program: Command, ctx: CliContext): void {
  const daemon = program
    .command('daemon')
    .description('the long-running agent: reservations, services, (soon) the local API')
  withCommonOptions(
    daemon
      .command('start', { isDefault: true })
      .description('run the daemon in the foreground (what `peerup daemon` does)')
      .option('--log-level <level>', 'debug, info, warn, error (default: log.level in the config)'),
    { json: false },
  ).action(async (_flags: object, cmd: Command) => {
    const opts = globalOpts<{ logLevel?: string }>(cmd)
    const { file, config } = await loadNode(ctx, opts)
    configureLogging({
      level: (opts.logLevel as LogLevel | undefined) ?? config.log.level,
      format: ctx.stderr.isTTY === true ? 'text' : 'json',
    })
    const { runDaemon } = await loadDaemon()
    await runDaemon({ configFile: file, log: createLogger('daemon'), signal: ctx.signal })
  })
}
