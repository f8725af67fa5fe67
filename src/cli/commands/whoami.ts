/**
 * `peerup whoami`: this node's peer id.
 *
 * @packageDocumentation
 */

import type { Command } from 'commander'
import { loadIdentity, peerIdOf } from '../../auth/identity.ts'
import { resolveIn } from '../../config/load.ts'
import type { CliContext } from '../context.ts'
import { loadNode } from '../load.ts'
import { globalOpts, withCommonOptions } from '../options.ts'
import { emit } from '../output.ts'

/** Registers `whoami`. */
export function registerWhoami(program: Command, ctx: CliContext): void {
  withCommonOptions(program.command('whoami').description("print this node's peer id")).action(
    async (_flags: object, cmd: Command) => {
      const opts = globalOpts(cmd)
      const { dir, config } = await loadNode(ctx, opts)
      const peerId = peerIdOf(await loadIdentity(resolveIn(dir, config.identity.key_file)))
      emit(ctx, opts, { peerId }, (r) => r.peerId)
    },
  )
}
