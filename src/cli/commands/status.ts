/**
 * `peerup status`: the node's identity, relays, peers, services and names, read from its files.
 *
 * @packageDocumentation
 */

import * as path from 'node:path'
import { listNetworks, readSelectedNetwork } from '../../config/networks.ts'
import { type NodeSummary, summarizeNode } from '../../config/summary.ts'
import { type CliContext, type GlobalOptions, graceful } from '../context.ts'
import { mainConfigFile, nodeConfigFile } from '../load.ts'
import type { CliCommand } from '../options.ts'
import { emit } from '../output.ts'
import { watchStatus } from './status-watch.ts'

/** The summary, and the node's networks when it has more than one (docs/cli.md "Several networks"). */
type StatusSummary = NodeSummary & {
  networks?: Array<{ name: string; main: boolean; selected: boolean; dir: string }>
}

function render(s: StatusSummary): string {
  const lines = [
    `peer id   ${s.peerId}`,
    `network   ${s.networkName}${s.network === '' || s.network === s.networkName ? '' : ` (discovery.network: ${s.network})`}`,
    `config    ${s.files.config}`,
    `daemon    ${s.daemon.running ? `running (${s.files.socket})` : 'not running (start it with `peerup daemon`)'}`,
    '',
    `relays (${s.relays.length})`,
    ...(s.relays.length === 0
      ? ['  none: add one with `peerup relay add <multiaddr>`']
      : s.relays.map((r) => `  ${r.address}`)),
    '',
    `services (${s.services.length})`,
    ...s.services.map((v) =>
      `  ${v.name.padEnd(12)} ${v.localAddress} ${v.enabled ? '' : '(disabled)'}`.trimEnd(),
    ),
    '',
    `authorized peers (${s.authorizedPeers.length}${s.unverifiedPeers > 0 ? `, ${s.unverifiedPeers} unverified` : ''})`,
    ...s.authorizedPeers.map((p) =>
      `  ${p.peerId} ${p.name ?? ''}${p.verified === undefined ? ' [unverified]' : ''}${p.expired ? ' [expired]' : ''}`.trimEnd(),
    ),
  ]
  const names = Object.entries(s.names)
  if (names.length > 0) {
    lines.push('', `names (${names.length})`, ...names.map(([n, id]) => `  ${n.padEnd(12)} ${id}`))
  }
  if (s.networks !== undefined) {
    lines.push(
      '',
      `networks (${s.networks.length}; this one with --network, \`peerup network list\` for each one's state)`,
      ...s.networks.map(
        (n) =>
          `${n.name === s.networkName ? '*' : ' '} ${n.name.padEnd(12)} ${n.dir}${n.main ? ' (main)' : ''}${n.selected ? ' (chosen by `network use`)' : ''}`,
      ),
    )
  }
  return lines.join('\n')
}

export function registerStatus(program: CliCommand, ctx: CliContext): void {
  program
    .command('status')
    .description('summarise this node: identity, relays, peers, services, names')
    .option('--watch', 'a live view of the peers of the running daemon (path, rtt, since); Ctrl+C to stop')
    .run(async (opts: GlobalOptions & { watch?: boolean }) => {
      const configFile = await nodeConfigFile(ctx, opts)
      if (opts.watch === true) {
        await graceful(ctx, () => watchStatus(ctx, opts, configFile))
        return
      }
      const summary: StatusSummary = await summarizeNode(configFile)
      const main = await mainConfigFile(ctx, opts)
      const networks = await listNetworks(main).catch(() => [])
      if (networks.length > 1) {
        const used = await readSelectedNetwork(path.dirname(main))
        summary.networks = networks.map((n) => ({
          name: n.name,
          main: n.main,
          selected: n.name === used,
          dir: n.dir,
        }))
      }
      emit(ctx, opts, summary, render)
    })
}
