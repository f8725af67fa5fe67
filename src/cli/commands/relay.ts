/**
 * `peerup relay …`: the relays this node uses (`add|remove|list`), and the relay role
 * (`setup`, `config validate`).
 *
 * @packageDocumentation
 */

import { addAuthorizedPeer, listAuthorizedPeers, removeAuthorizedPeer } from '../../auth/ops.ts'
import { initRelay } from '../../config/init.ts'
import { loadRelayConfig, resolveIn } from '../../config/load.ts'
import { addRelay, listRelays, removeRelay } from '../../config/ops.ts'
import { rollbackConfig } from '../../config/safety.ts'
import { parseDurationMs } from '../../config/units.ts'
import { createLogger } from '../../log/index.ts'
import type { CliContext, GlobalOptions } from '../context.ts'

import { loadRelayAdmin, loadRelay as loadRelayModule } from '../lazy.ts'
import { loadNode, loadRelay, nodeConfigFile, relayConfigFile } from '../load.ts'
import { type CliCommand, numberFlag, wholeNumber } from '../options.ts'
import { emit, listTable, logToStderr, note } from '../output.ts'

/** `relay add|remove|list`: the relays this node uses. */
function registerRelayUse(relay: CliCommand, ctx: CliContext): void {
  relay
    .command('add')
    .description('use another relay')
    .argument('<multiaddr>', 'the address `peerup relay info` prints on the relay')
    .run(async (opts, address: string) => {
      const info = await addRelay(await nodeConfigFile(ctx, opts), address)
      emit(ctx, opts, info, (r) => `added relay ${r.address}`)
    })

  relay
    .command('remove')
    .description('stop using a relay (by address, or by peer id for all its addresses)')
    .argument('<multiaddr-or-peer-id>')
    .option('--force', 'allow removing the last relay')
    .run(async (opts: GlobalOptions & { force?: boolean }, target: string) => {
      const removed = await removeRelay(await nodeConfigFile(ctx, opts), target, opts.force === true)
      emit(ctx, opts, { removed }, (r) => r.removed.map((x) => `removed relay ${x.address}`).join('\n'))
    })

  relay
    .command('list')
    .description('list the relays this node uses')
    .run(async (opts) => {
      const { config } = await loadNode(ctx, opts)
      emit(ctx, opts, listRelays(config), (list) =>
        listTable(
          list,
          'no relays (add one with `peerup relay add <multiaddr>`)',
          ['PEER ID', 'ADDRESS'],
          (r) => [r.peerId, r.address],
        ),
      )
    })
}

/** `relay setup|serve|info`: running a relay. */
function registerRelayServe(relay: CliCommand, ctx: CliContext): void {
  relay
    .command('setup')
    .description(
      'create relay-server.yaml, the relay key and an empty relay_authorized_keys in a 0700 directory',
    )
    .option('--dir <dir>', 'directory to write them to', '.')
    .option('--non-interactive', 'never prompt (setup asks nothing today; accepted for scripts)')
    .run(async (opts: GlobalOptions & { dir: string }) => {
      const result = await initRelay(opts.dir.startsWith('/') ? opts.dir : `${ctx.cwd}/${opts.dir}`)
      emit(ctx, opts, result, (r) =>
        [
          `Relay set up in ${r.dir}${r.previousDirMode === undefined ? '' : ` (made 0700, it was ${r.previousDirMode})`}`,
          `  peer id                ${r.peerId}${r.createdIdentity ? '' : ' (existing key kept)'}`,
          `  config                 ${r.configFile}`,
          `  relay_authorized_keys  ${r.authorizedKeysFile}`,
          '',
          'Next: `peerup relay serve`, then give `peerup relay info` addresses to `peerup init --relay`.',
        ].join('\n'),
      )
    })

  relay
    .command('serve')
    .description('run the relay in the foreground (circuit relay v2, DHT server, /healthz)')
    .option('--log-level <level>', 'debug, info, warn, error (default: log.level in the config)')
    .run(
      async (opts: GlobalOptions & { logLevel?: string }) => {
        const { file, config } = await loadRelay(ctx, opts)
        // Before anything is opened: this may start the command again in place.
        const { RELAY_MALLOC_ARENAS, withFewerMallocArenas } = await import('../../util/self.ts')
        withFewerMallocArenas(RELAY_MALLOC_ARENAS)
        logToStderr(ctx, opts.logLevel, config.log.level)
        const { runRelay } = await loadRelayModule()
        await runRelay({ configFile: file, log: createLogger('relay'), signal: ctx.signal })
      },
      { json: false },
    )

  relay
    .command('info')
    .description("the relay's peer id and the addresses to give to `peerup init --relay`")
    .run(async (opts) => {
      const { relayInfo } = await loadRelayModule()
      const info = await relayInfo(await relayConfigFile(ctx, opts))
      emit(ctx, opts, info, (i) =>
        [
          `peer id  ${i.peerId}`,
          'addresses (give one to `peerup init --relay` or `peerup relay add`):',
          ...i.addresses.map((a) => `  ${a}`),
        ].join('\n'),
      )
    })
}

/** `relay authorize|deauthorize|list-peers`: who may use this relay. */
function registerRelayPeers(relay: CliCommand, ctx: CliContext): void {
  relay
    .command('authorize')
    .description('allow a peer to hold a reservation on this relay')
    .argument('<peer>', 'peer id')
    .option('--comment <text>', 'a note kept on the line')
    .option('--sponsor', 'mark it sponsor=yes: it may authorize the peers it pairs with')
    .run(async (opts: GlobalOptions & { comment?: string; sponsor?: boolean }, peer: string) => {
      const { dir, config } = await loadRelay(ctx, opts)
      const added = await addAuthorizedPeer(resolveIn(dir, config.security.authorized_keys_file), peer, {
        ...(opts.comment === undefined ? {} : { comment: opts.comment }),
        attributes: opts.sponsor === true ? { sponsor: 'yes' } : {},
      })
      emit(
        ctx,
        opts,
        added,
        (p) => `authorized ${p.peerId} on this relay (a running relay picks it up at once)`,
      )
    })

  relay
    .command('deauthorize')
    .description("remove a peer's right to a reservation; it is disconnected")
    .argument('<peer>', 'peer id')
    .run(async (opts, peer: string) => {
      const { dir, config } = await loadRelay(ctx, opts)
      const removed = await removeAuthorizedPeer(resolveIn(dir, config.security.authorized_keys_file), peer)
      emit(ctx, opts, removed, (p) => `deauthorized ${p.peerId}`)
    })

  relay
    .command('list-peers')
    .description('the peers authorized on this relay')
    .run(async (opts) => {
      const { dir, config } = await loadRelay(ctx, opts)
      const peers = await listAuthorizedPeers(resolveIn(dir, config.security.authorized_keys_file))
      emit(ctx, opts, peers, (list) =>
        listTable(
          list,
          'no authorized peers (`peerup relay authorize <peer-id>`)',
          ['PEER ID', 'SPONSOR', 'EXPIRES', 'COMMENT'],
          (p) => [p.peerId, p.sponsor ?? '-', p.expires?.slice(0, 10) ?? '-', p.comment ?? ''],
        ),
      )
    })
}

/** `relay pair`: group codes, made by the running relay through its admin socket. */
function registerRelayPair(relay: CliCommand, ctx: CliContext): void {
  relay
    .command('pair')
    .description(
      'make single-use codes for a group of machines that all trust each other (needs the running relay)',
    )
    .option('--count <n>', 'how many codes (machines)', '2')
    .option('--ttl <duration>', 'how long the codes stay valid', '1h')
    .option('--list', 'list the groups and who joined')
    .option('--revoke <group>', 'stop the unused codes of a group working')
    .run(async (opts: GlobalOptions & { count: string; ttl: string; list?: boolean; revoke?: string }) => {
      const { dir } = await loadRelay(ctx, opts)
      const { RelayAdminClient } = await loadRelayAdmin()
      const client = new RelayAdminClient(dir)
      if (opts.list === true) {
        const groups = await client.listGroups()
        emit(ctx, opts, groups, (list) =>
          list.length === 0
            ? 'no groups (`peerup relay pair --count N`)'
            : list
                .map((g) =>
                  [
                    `${g.id}  ${g.revoked ? 'revoked' : g.expired ? 'expired' : `until ${g.expires}`}  ${g.members.length}/${g.size} joined` +
                      (g.burned > 0 ? `, ${g.burned} burned` : ''),
                    ...g.members.map((m) => `    ${m.peerId}${m.name === undefined ? '' : `  ${m.name}`}`),
                  ].join('\n'),
                )
                .join('\n'),
        )
        return
      }
      if (opts.revoke !== undefined) {
        const g = await client.revokeGroup(opts.revoke)
        emit(
          ctx,
          opts,
          g,
          (x) => `revoked ${x.id}: its unused codes no longer work (members who joined stay authorized)`,
        )
        return
      }
      const count = numberFlag('count', opts.count, 'give a whole number from 1 to 100', wholeNumber, 1, 100)
      const hint = 'give a duration from 1m to 7d, like 1h'
      const ttlMs = numberFlag('ttl', opts.ttl, hint, parseDurationMs, 60_000, 7 * 24 * 3_600_000)
      const created = await client.createGroup(count, ttlMs)
      emit(ctx, opts, created, (r) => (opts.json === true ? '' : [...r.codes, ''].join('\n')))
      note(
        ctx,
        `group ${created.group.id}: ${count} single-use codes, valid until ${created.group.expires}. ` +
          'Give one to each machine: `peerup join <code>` there. Each joiner is authorized on this relay and with every other member.',
      )
    })
}

/** `relay config validate|rollback`. */
function registerRelayConfig(relay: CliCommand, ctx: CliContext): void {
  const config = relay.command('config').description("check the relay's config")
  config
    .command('validate')
    .description('check relay-server.yaml and exit')
    .argument('[file]', 'file to check instead of the one in use')
    .run(async (opts, file: string | undefined) => {
      const loaded = await loadRelay(ctx, file === undefined ? opts : { ...opts, config: file })
      emit(ctx, opts, { file: loaded.file, valid: true }, (r) => `${r.file}: OK`)
    })

  config
    .command('rollback')
    .description('restore the relay-server.yaml the last successful `relay serve` started with')
    .run(async (opts) => {
      const target = await relayConfigFile(ctx, opts)
      await rollbackConfig(target, async (candidate) => {
        await loadRelayConfig(candidate)
      })
      emit(
        ctx,
        opts,
        { file: target, restored: 'last-good' },
        (r) => `restored the last-known-good relay config to ${r.file}; restart the relay to use it`,
      )
    })
}

export function registerRelay(program: CliCommand, ctx: CliContext): void {
  const relay = program.command('relay').description('the relays this node uses, and running a relay')
  registerRelayUse(relay, ctx)
  registerRelayServe(relay, ctx)
  registerRelayPeers(relay, ctx)
  registerRelayPair(relay, ctx)
  registerRelayConfig(relay, ctx)
}
