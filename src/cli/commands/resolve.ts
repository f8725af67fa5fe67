/**
 * `peerup resolve <name>`: name → peer id.
 *
 * @packageDocumentation
 */

import type { Command } from 'commander'
import { resolvePeer } from '../../config/ops.ts'
import type { CliContext } from '../context.ts'
import { loadNode } from '../load.ts'
import { globalOpts, withCommonOptions } from '../options.ts'
import { emit } from '../output.ts'

/** Registers `resolve`. */
export function registerResolve(program: Command, ctx: CliContext): void {
  withCommonOptions(
    program
      .command('resolve')
      .description('print the peer id a name stands for')
      .argument('<name>', 'a name from names: or a peer id'),
  ).action(async (name: string, _flags: object, cmd: Command) => {
    const opts = globalOpts(cmd)
    const { config } = await loadNode(ctx, opts)
    emit(ctx, opts, resolvePeer(config, name), (r) => r.peerId)
  })
}
