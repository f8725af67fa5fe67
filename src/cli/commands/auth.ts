/**
 * `peerup auth add|remove|list|validate`: who may connect to this node.
 *
 * @packageDocumentation
 */

import {
  addAuthorizedPeer,
  listAuthorizedPeers,
  removeAuthorizedPeer,
  validateAuthorizedKeysFile,
} from '../../auth/ops.ts'
import { resolveIn } from '../../config/load.ts'
import { checkNameFree, checkPeerName, setPeerName } from '../../config/ops.ts'
import type { NodeConfig } from '../../config/schema.ts'
import { PeerupError } from '../../errors.ts'
import type { CliContext, GlobalOptions } from '../context.ts'
import { loadNode, viaDaemon } from '../load.ts'
import type { CliCommand } from '../options.ts'
import { emit, listTable } from '../output.ts'

function authorizedKeysFile(dir: string, config: NodeConfig): string {
  return resolveIn(dir, config.security.authorized_keys_file)
}

/** A name from names: stands for its peer id. */
function peerArg(config: NodeConfig, peer: string): string {
  return config.names[peer] ?? peer
}

type AddFlags = GlobalOptions & { comment?: string; name?: string; expires?: string; group?: string }

export function registerAuth(program: CliCommand, ctx: CliContext): void {
  const auth = program
    .command('auth')
    .description('manage authorized_keys: the peers allowed to connect to this node')

  auth
    .command('add')
    .description('allow a peer to connect')
    .argument('<peer>', 'peer id (12D3KooW…) or a name from names:')
    .option('--comment <text>', 'a note kept on the line, like the machine name')
    .option('--name <name>', 'also record the peer under names:, so commands take the name')
    .option('--expires <date>', 'stop authorizing it then (YYYY-MM-DD or an RFC 3339 time)')
    .option('--group <name>', 'a group label')
    .run(async (opts: AddFlags, peer: string) => {
      const { dir, config, file } = await loadNode(ctx, opts)
      if (opts.name !== undefined) {
        // Checked before anything is written, so a bad or taken name leaves both files as they were.
        checkPeerName(opts.name)
        checkNameFree(config, opts.name, peerArg(config, peer))
      }
      const attributes: Record<string, string> = {}
      if (opts.expires !== undefined) attributes.expires = opts.expires
      if (opts.group !== undefined) attributes.group = opts.group
      const added = await addAuthorizedPeer(authorizedKeysFile(dir, config), peerArg(config, peer), {
        ...(opts.comment === undefined ? {} : { comment: opts.comment }),
        attributes,
      })
      const named = opts.name === undefined ? undefined : await setPeerName(file, opts.name, added.peerId)
      emit(
        ctx,
        opts,
        { ...added, ...(named === undefined ? {} : { name: named.name }) },
        (p) =>
          `authorized ${p.peerId}${p.comment === undefined ? '' : ` (${p.comment})`}` +
          (named === undefined ? '' : `, named ${named.name}`),
      )
    })

  auth
    .command('remove')
    .description('revoke a peer')
    .argument('<peer>', 'peer id or a name from names:')
    .run(async (opts, peer: string) => {
      const { dir, config } = await loadNode(ctx, opts)
      const id = peerArg(config, peer)
      // A running daemon revokes it itself: the file is edited and the peer's connections are closed
      // before the answer comes back. Without one, the file is all there is.
      await viaDaemon(
        ctx,
        opts,
        async (client) => {
          const r = await client.call('authRemove', { peer: id })
          emit(
            ctx,
            opts,
            r,
            (p) => `revoked ${p.peerId}; the daemon closed ${p.closedConnections} connection(s)`,
          )
        },
        async () => {
          const removed = await removeAuthorizedPeer(authorizedKeysFile(dir, config), id)
          emit(ctx, opts, { ...removed, closedConnections: 0 }, (p) => `revoked ${p.peerId}`)
        },
      )
    })

  auth
    .command('list')
    .description('list authorized peers and their attributes')
    .run(async (opts) => {
      const { dir, config } = await loadNode(ctx, opts)
      const peers = await listAuthorizedPeers(authorizedKeysFile(dir, config), config.names)
      emit(ctx, opts, peers, (list) =>
        listTable(
          list,
          'no authorized peers (pair with `peerup invite`/`peerup join`, or `peerup auth add <peer-id>`)',
          ['PEER ID', 'NAME', 'VERIFIED', 'EXPIRES', 'COMMENT'],
          (p) => [
            p.peerId,
            p.name ?? '-',
            p.verified === undefined ? 'no' : 'yes',
            p.expires === undefined ? '-' : `${p.expires.slice(0, 10)}${p.expired ? ' (expired)' : ''}`,
            p.comment ?? '',
          ],
        ),
      )
    })

  auth
    .command('validate')
    .description('check authorized_keys and report every bad line')
    .argument('[file]', 'file to check')
    .run(async (opts, file: string | undefined) => {
      let target: string
      if (file === undefined) {
        const { dir, config } = await loadNode(ctx, opts)
        target = authorizedKeysFile(dir, config)
      } else {
        target = resolveIn(ctx.cwd, file)
      }
      const problems = await validateAuthorizedKeysFile(target)
      if (problems.length > 0) {
        // Every bad line on stderr, the way a compiler lists errors; the summary is the command's error.
        for (const p of problems) {
          ctx.stderr.write(`${p.message}${p.hint === undefined ? '' : ` (${p.hint})`}\n`)
        }
        throw new PeerupError(`${target}: ${problems.length} bad line${problems.length === 1 ? '' : 's'}`, {
          hint: 'fix them and run `peerup auth validate` again',
        })
      }
      emit(ctx, opts, { file: target, valid: true }, (r) => `${r.file}: OK`)
    })
}
