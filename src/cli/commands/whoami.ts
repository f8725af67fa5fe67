/**
 * `peerup whoami`: this node's peer id.
 *
 * @packageDocumentation
 */

import { loadIdentity, peerIdOf } from '../../auth/identity.ts'
import { resolveIn } from '../../config/load.ts'
import type { CliContext } from '../context.ts'
import { loadNode } from '../load.ts'
import type { CliCommand } from '../options.ts'
import { emit } from '../output.ts'

export function registerWhoami(program: CliCommand, ctx: CliContext): void {
  program
    .command('whoami')
    .description("print this node's peer id")
    .run(async (opts) => {
      const { dir, config } = await loadNode(ctx, opts)
      const peerId = peerIdOf(await loadIdentity(resolveIn(dir, config.identity.key_file)))
      emit(ctx, opts, { peerId }, (r) => r.peerId)
    })
}
