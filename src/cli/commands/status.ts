/**
 * `peerup status`: the node's identity, relays, peers, services and names, read from its files.
 *
 * @packageDocumentation
 */

import { type NodeSummary, summarizeNode } from '../../config/summary.ts'
import { type CliContext, type GlobalOptions, graceful } from '../context.ts'
import { nodeConfigFile } from '../load.ts'
import type { CliCommand } from '../options.ts'
import { emit } from '../output.ts'
import { watchStatus } from './status-watch.ts'

function render(s: NodeSummary): string {
  const lines = [
    `peer id   ${s.peerId}`,
    `network   ${s.network === '' ? '(default)' : s.network}`,
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
      emit(ctx, opts, await summarizeNode(configFile), render)
    })
}
