/**
 * `peerup relay …`: the relays this node uses (`add|remove|list`), and the relay role
 * (`setup`, `config validate`).
 *
 * @packageDocumentation
 */

import type { Command } from 'commander'
import { initRelay } from '../../config/init.ts'
import { addRelay, listRelays, removeRelay } from '../../config/ops.ts'
import type { CliContext } from '../context.ts'
import { loadNode, loadRelay, nodeConfigFile } from '../load.ts'
import { emit, table } from '../output.ts'
import { globalOpts, withCommonOptions } from '../program.ts'

/** Registers `relay`. */
export function registerRelay(program: Command, ctx: CliContext): void {
  const relay = program.command('relay').description('the relays this node uses, and running a relay')

  withCommonOptions(
    relay
      .command('add')
      .description('use another relay')
      .argument('<multiaddr>', 'the address `peerup relay info` prints on the relay'),
  ).action(async (address: string, _flags: object, cmd: Command) => {
    const opts = globalOpts(cmd)
    const info = await addRelay(await nodeConfigFile(ctx, opts), address)
    emit(ctx, opts, info, (r) => `added relay ${r.address}`)
  })

  withCommonOptions(
    relay
      .command('remove')
      .description('stop using a relay (by address, or by peer id for all its addresses)')
      .argument('<multiaddr-or-peer-id>')
      .option('--force', 'allow removing the last relay'),
  ).action(async (target: string, _flags: object, cmd: Command) => {
    const opts = globalOpts<{ force?: boolean }>(cmd)
    const removed = await removeRelay(await nodeConfigFile(ctx, opts), target, opts.force === true)
    emit(ctx, opts, { removed }, (r) => r.removed.map((x) => `removed relay ${x.address}`).join('\n'))
  })

  withCommonOptions(relay.command('list').description('list the relays this node uses')).action(
    async (_flags: object, cmd: Command) => {
      const opts = globalOpts(cmd)
      const { config } = await loadNode(ctx, opts)
      emit(ctx, opts, listRelays(config), (list) =>
        list.length === 0
          ? 'no relays (add one with `peerup relay add <multiaddr>`)'
          : table([['PEER ID', 'ADDRESS'], ...list.map((r) => [r.peerId, r.address])]),
      )
    },
  )

  withCommonOptions(
    relay
      .command('setup')
      .description('create relay-server.yaml, the relay key and an empty relay_authorized_keys')
      .option('--dir <dir>', 'directory to write them to', '.')
      .option('--non-interactive', 'never prompt (setup asks nothing today; accepted for scripts)'),
  ).action(async (_flags: object, cmd: Command) => {
    const opts = globalOpts<{ dir: string }>(cmd)
    const result = await initRelay(opts.dir.startsWith('/') ? opts.dir : `${ctx.cwd}/${opts.dir}`)
    emit(ctx, opts, result, (r) =>
      [
        `Relay set up in ${r.dir}`,
        `  peer id                ${r.peerId}${r.createdIdentity ? '' : ' (existing key kept)'}`,
        `  config                 ${r.configFile}`,
        `  relay_authorized_keys  ${r.authorizedKeysFile}`,
        '',
        'Next: `peerup relay serve`, then give `peerup relay info` addresses to `peerup init --relay`.',
      ].join('\n'),
    )
  })

  const config = relay.command('config').description("check the relay's config")
  withCommonOptions(
    config
      .command('validate')
      .description('check relay-server.yaml and exit')
      .argument('[file]', 'file to check instead of the one in use'),
  ).action(async (file: string | undefined, _flags: object, cmd: Command) => {
    const opts = globalOpts(cmd)
    const loaded = await loadRelay(ctx, file === undefined ? opts : { ...opts, config: file })
    emit(ctx, opts, { file: loaded.file, valid: true }, (r) => `${r.file}: OK`)
  })
}
