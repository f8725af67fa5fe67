/**
 * `peerup resolve <name>`: name → peer id.
 *
 * @packageDocumentation
 */

import { resolvePeer } from '../../config/ops.ts'
import type { CliContext } from '../context.ts'
import { loadNode } from '../load.ts'
import { type CliCommand, takeNetwork } from '../options.ts'
import { emit } from '../output.ts'

export function registerResolve(program: CliCommand, ctx: CliContext): void {
  program
    .command('resolve')
    .description('print the peer id a name stands for')
    .argument('<name>', 'a name from names: or a peer id (name@network: in that network)')
    .run(async (opts, ref: string) => {
      const name = takeNetwork(opts, ref)
      const { config } = await loadNode(ctx, opts)
      emit(ctx, opts, resolvePeer(config, name), (r) => r.peerId)
    })
}
