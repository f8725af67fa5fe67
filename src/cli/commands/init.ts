/**
 * `peerup init`: identity, config and an empty authorized_keys for a new node.
 *
 * @packageDocumentation
 */

import { initNode } from '../../config/init.ts'
import { checkRelayAddress } from '../../config/ops.ts'
import { defaultNodeDir } from '../../config/paths.ts'
import { PeerupError } from '../../errors.ts'
import type { CliContext, GlobalOptions } from '../context.ts'
import { type CliCommand, collect } from '../options.ts'
import { emit, note } from '../output.ts'
import { canPrompt, Prompter } from '../prompt.ts'

interface InitFlags {
  dir?: string
  relay: string[]
  network?: string
  nonInteractive?: boolean
}

export function registerInit(program: CliCommand, ctx: CliContext): void {
  program
    .command('init')
    .description('create this node: identity, config and an empty authorized_keys (never overwrites)')
    .option('--dir <dir>', 'directory to create the node in (default: $PEERUP_HOME or ~/.config/peerup)')
    .option(
      '--relay <multiaddr>',
      'a relay to use, as printed by `peerup relay info` (repeatable)',
      collect,
      [],
    )
    .option('--network <name>', 'private network name (default: none)')
    .option('--non-interactive', 'never prompt; take everything from flags')
    .run(async (opts: GlobalOptions & InitFlags) => {
      let relays = opts.relay
      let network = opts.network ?? ''
      if (canPrompt(ctx, opts.nonInteractive)) {
        using prompter = new Prompter(ctx)
        if (relays.length === 0) {
          relays = await askRelays(ctx, prompter)
        }
        if (opts.network === undefined) {
          network = await prompter.ask('Private network name (empty for the default)', '')
        }
      }
      const result = await initNode({ dir: opts.dir ?? defaultNodeDir(ctx.env, ctx.cwd), relays, network })
      if (relays.length === 0) {
        note(
          ctx,
          'warning: no relay configured; peers behind other NATs cannot reach this node until you run `peerup relay add <address>`',
        )
      }
      emit(ctx, opts, result, (r) =>
        [
          `Initialised ${r.dir}`,
          `  peer id         ${r.peerId}${r.createdIdentity ? '' : ' (existing identity kept)'}`,
          `  config          ${r.configFile}`,
          `  identity        ${r.identityFile}`,
          `  authorized_keys ${r.authorizedKeysFile}`,
          '',
          'Next: `peerup service add ssh localhost:22`, then `peerup daemon`; pair with `peerup invite`.',
        ].join('\n'),
      )
    })
}

async function askRelays(ctx: CliContext, prompter: Prompter): Promise<string[]> {
  const relays: string[] = []
  for (;;) {
    const answer = await prompter.ask(
      relays.length === 0
        ? 'Relay address (from `peerup relay info`; empty to skip)'
        : 'Another relay (empty when done)',
    )
    if (answer === '') {
      return relays
    }
    try {
      relays.push(checkRelayAddress(answer))
    } catch (err) {
      note(ctx, err instanceof PeerupError ? err.message : String(err))
    }
  }
}
