/**
 * The options every command takes, and how a command reads them with its parents'. Apart from
 * program.ts so that the commands, which program.ts registers, need not import it back.
 *
 * @packageDocumentation
 */

import { type Command, Option } from 'commander'
import type { GlobalOptions } from './context.ts'

/**
 * Adds the options every command takes, so they work after the subcommand too
 * (`peerup status --json`), which positional option parsing needs for `peerup ssh` pass-through.
 */
export function withCommonOptions(cmd: Command, options: { json?: boolean } = { json: true }): Command {
  cmd.addOption(new Option('--config <file>', 'config file to use').hideHelp())
  if (options.json !== false) {
    cmd.option('--json', 'print the result as JSON')
  }
  return cmd
}

/** The options of a command merged with its parents' (`--config` may come before the noun). */
export function globalOpts<T extends object = object>(cmd: Command): GlobalOptions & T {
  return cmd.optsWithGlobals() as GlobalOptions & T
}
