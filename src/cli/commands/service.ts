/**
 * `peerup service add|remove|list|enable|disable`: the local TCP services offered to peers.
 *
 * @packageDocumentation
 */

import {
  addService,
  listServices,
  removeService,
  type ServiceInfo,
  setServiceEnabled,
} from '../../config/ops.ts'
import type { CliContext, GlobalOptions } from '../context.ts'
import { loadNode, nodeConfigFile } from '../load.ts'
import { type CliCommand, collect } from '../options.ts'
import { emit, listTable } from '../output.ts'

function describeService(s: ServiceInfo): string {
  const who = s.allowedPeers.length === 0 ? 'all authorized peers' : s.allowedPeers.join(', ')
  return `${s.name} → ${s.localAddress} (${s.enabled ? 'enabled' : 'disabled'}; ${who})`
}

type AddFlags = GlobalOptions & { allow: string[]; disabled?: boolean }

export function registerService(program: CliCommand, ctx: CliContext): void {
  const service = program
    .command('service')
    .description('manage the local services this node offers to its peers')

  service
    .command('add')
    .description('offer a local TCP service to authorized peers')
    .argument('<name>', 'service name, like ssh (peers use it: `peerup proxy <peer> <name> …`)')
    .argument('<address>', 'local host:port it forwards to, like localhost:22')
    .option(
      '--allow <peer>',
      'only this peer (id or name) may use it (repeatable; default: every authorized peer)',
      collect,
      [],
    )
    .option('--disabled', 'add it switched off')
    .run(async (opts: AddFlags, name: string, address: string) => {
      const info = await addService(await nodeConfigFile(ctx, opts), name, address, {
        allowedPeers: opts.allow,
        enabled: opts.disabled !== true,
      })
      emit(ctx, opts, info, (s) => `added service ${describeService(s)}`)
    })

  service
    .command('remove')
    .description('stop offering a service and forget it')
    .argument('<name>')
    .run(async (opts, name: string) => {
      await removeService(await nodeConfigFile(ctx, opts), name)
      emit(ctx, opts, { removed: name }, () => `removed service ${name}`)
    })

  for (const [verb, enabled] of [
    ['enable', true],
    ['disable', false],
  ] as const) {
    service
      .command(verb)
      .description(`${verb} a configured service`)
      .argument('<name>')
      .run(async (opts, name: string) => {
        const info = await setServiceEnabled(await nodeConfigFile(ctx, opts), name, enabled)
        emit(ctx, opts, info, (s) => `${verb}d service ${describeService(s)}`)
      })
  }

  service
    .command('list')
    .description('list the configured services')
    .run(async (opts) => {
      const { config } = await loadNode(ctx, opts)
      emit(ctx, opts, listServices(config), (list) =>
        listTable(
          list,
          'no services (add one with `peerup service add ssh localhost:22`)',
          ['NAME', 'ADDRESS', 'STATE', 'ALLOWED'],
          (s) => [
            s.name,
            s.localAddress,
            s.enabled ? 'enabled' : 'disabled',
            s.allowedPeers.length === 0 ? 'all authorized' : s.allowedPeers.join(','),
          ],
        ),
      )
    })
}
