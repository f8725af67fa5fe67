/**
 * The options every command takes, and how a command reads them with its parents'. Apart from
 * program.ts so that the commands, which program.ts registers, need not import it back.
 *
 * @packageDocumentation
 */

import { Command, Option } from 'commander'
import { splitNetworkRef } from '../api/names.ts'
import { selectNetwork } from '../config/networks.ts'
import { UsageError } from '../errors.ts'
import type { GlobalOptions } from './context.ts'

/**
 * A peer of the command line with its `@network` taken off (`home@work`: peer `home` in network
 * `work`, docs/cli.md "Several networks"), the network put in `opts.network`; a different
 * `--network` beside it is a usage error.
 */
export function takeNetwork(opts: GlobalOptions, peer: string): string {
  if (splitNetworkRef(peer).network === undefined) {
    return peer
  }
  const selected = selectNetwork({ peer, flag: opts.network })
  opts.network = selected.network
  return selected.peer as string
}

/** The program's commands: each subcommand is one too, so every command has {@link CliCommand.run}. */
export class CliCommand extends Command {
  override createCommand(name?: string): CliCommand {
    return new CliCommand(name)
  }

  /**
   * Adds the options every command takes, so they work after the subcommand too (`peerup status
   * --json`), which positional option parsing needs for `peerup ssh` pass-through; then makes `fn`
   * the action. `fn` receives the options merged with its parents' (`--config` may come before
   * the noun), then the positional arguments.
   */
  run<O extends GlobalOptions, A extends unknown[]>(
    fn: (opts: O, ...args: A) => void | Promise<void>,
    options: { json?: boolean } = { json: true },
  ): this {
    this.addOption(new Option('--config <file>', 'config file to use').hideHelp())
    if (!this.options.some((o) => o.long === '--network')) {
      this.addOption(new Option('--network <name>', 'which of the node’s networks').hideHelp())
    }
    if (options.json !== false) {
      this.option('--json', 'print the result as JSON')
    }
    // Commander calls an action with the arguments, then the command's own options, then the command.
    return this.action((...args: unknown[]) => {
      const cmd = args.at(-1) as Command
      const opts = cmd.optsWithGlobals() as O & { peer?: unknown }
      const positional = args.slice(0, -2)
      // `name@network` wherever a peer is taken: a `<peer>` argument or `--peer`.
      cmd.registeredArguments.forEach((a, i) => {
        if (a.name() === 'peer' && typeof positional[i] === 'string') {
          positional[i] = takeNetwork(opts, positional[i])
        }
      })
      if (typeof opts.peer === 'string') {
        opts.peer = takeNetwork(opts, opts.peer)
      }
      return fn(opts, ...(positional as A))
    })
  }
}

/**
 * The number `--<name> <value>` stands for, read by `parse` (a duration, a count); a usage error
 * with `hint` unless it reads as one from `min` to `max`.
 */
export function numberFlag(
  name: string,
  value: string,
  hint: string,
  parse: (text: string) => number | undefined,
  min = 0,
  max = Number.POSITIVE_INFINITY,
): number {
  const n = parse(value)
  if (n === undefined || n < min || n > max) {
    throw new UsageError(`invalid --${name} ${JSON.stringify(value)}`, { hint })
  }
  return n
}

/** A whole number, for {@link numberFlag}. */
export function wholeNumber(text: string): number | undefined {
  const n = Number(text)
  return Number.isInteger(n) ? n : undefined
}

/** Collects the values of an option given more than once (`--relay a --relay b`). */
export const collect = (value: string, previous: string[]): string[] => [...previous, value]
