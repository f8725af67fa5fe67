/**
 * `peerup network list|add|remove|use|start`: several networks in one daemon (docs/cli.md
 * "Several networks"). The layout lives on disk (src/config/networks.ts); a running daemon is told
 * of each change through `/v1/networks` and starts or stops that network without touching the
 * others. Every command works without a daemon.
 *
 * @packageDocumentation
 */

import * as path from 'node:path'
import type { NetworkState } from '../../api/index.ts'
import { loadIdentity, peerIdOf } from '../../auth/identity.ts'
import { DaemonNotRunningError } from '../../client/local.ts'
import { loadNodeConfig } from '../../config/load.ts'
import {
  addNetwork,
  checkNetworkName,
  findNetwork,
  listNetworks,
  type NetworkEntry,
  readSelectedNetwork,
  removeNetworkDir,
  writeSelectedNetwork,
} from '../../config/networks.ts'
import { relayPeerId } from '../../config/ops.ts'
import { NotFoundError } from '../../errors.ts'
import type { CliContext, GlobalOptions } from '../context.ts'
import { daemonClient, mainConfigFile } from '../load.ts'
import { type CliCommand, collect } from '../options.ts'
import { emit, note } from '../output.ts'

/** What the daemon of `main` answers to `fn`, or undefined when no daemon runs. */
async function ifDaemon<T>(
  ctx: CliContext,
  main: string,
  fn: (c: ReturnType<typeof daemonClient>) => Promise<T>,
): Promise<T | undefined> {
  try {
    return await fn(daemonClient(ctx, main))
  } catch (err) {
    if (err instanceof DaemonNotRunningError) {
      return undefined
    }
    throw err
  }
}

/** A network as the disk shows it, when no daemon runs (or it does not run that one). */
async function fromDisk(entry: NetworkEntry, selected: string): Promise<NetworkState> {
  const peerId = await loadNodeConfig(entry.configFile)
    .then(async ({ config }) =>
      peerIdOf(await loadIdentity(path.resolve(entry.dir, config.identity.key_file))),
    )
    .catch(() => undefined)
  return {
    name: entry.name,
    main: entry.main,
    selected: entry.name === selected,
    dir: entry.dir,
    configFile: entry.configFile,
    running: false,
    ...(peerId === undefined ? {} : { peerId }),
  }
}

/** Every network of the layout: from disk, with the daemon's state of those it runs. */
async function networks(ctx: CliContext, main: string): Promise<{ list: NetworkState[]; daemon: boolean }> {
  const entries = await listNetworks(main)
  const selected = (await readSelectedNetwork(path.dirname(main))) ?? (entries[0] as NetworkEntry).name
  const running = await ifDaemon(ctx, main, (c) => c.call('networkList', {}))
  const list = await Promise.all(
    entries.map(async (e) => {
      const live = running?.find((r) => r.name === e.name)
      return live === undefined ? fromDisk(e, selected) : { ...live, selected: e.name === selected }
    }),
  )
  return { list, daemon: running !== undefined }
}

function listText(r: { list: NetworkState[]; daemon: boolean }): string {
  const lines = r.list.map((n) => {
    const state = n.running
      ? `running  relays ${n.relaysReserved ?? 0}/${n.relays ?? 0} reserved, ${n.connectedPeers ?? 0} peers`
      : r.daemon
        ? `stopped${n.error === undefined ? '' : ` (${n.error})`}`
        : 'no daemon'
    return `${n.selected ? '*' : ' '} ${n.name.padEnd(12)} ${(n.peerId ?? '-').padEnd(52)} ${state}${n.main ? '  (main)' : ''}\n    ${n.dir}`
  })
  return [
    ...lines,
    '',
    '* is the network commands use without --network (`peerup network use <name>` changes it)',
  ].join('\n')
}

interface AddFlags extends GlobalOptions {
  relay: string[]
  sameIdentity?: boolean
}

function registerAdd(network: CliCommand, ctx: CliContext): void {
  network
    .command('add')
    .description('create a further network beside this node (its own identity, relays, peers, services)')
    .argument('<name>', 'the network’s name: lowercase letters, digits, - and _')
    .option('--relay <multiaddr>', 'a relay of that network (repeatable)', collect, [])
    .option('--same-identity', 'use this node’s identity (peer id) in that network too')
    .run(async (opts: AddFlags, name: string) => {
      const main = await mainConfigFile(ctx, opts)
      const added = await addNetwork({
        mainConfigFile: main,
        name,
        relays: opts.relay,
        sameIdentity: opts.sameIdentity === true,
      })
      let started: NetworkState | undefined
      let failed: string | undefined
      try {
        started = await ifDaemon(ctx, main, (c) => c.call('networkAdd', { name }))
      } catch (err) {
        failed = (err as Error).message
      }
      if (opts.sameIdentity === true) {
        const { config } = await loadNodeConfig(main)
        const mainRelays = new Set(config.relay.addresses.map(relayPeerId))
        if (opts.relay.some((r) => mainRelays.has(relayPeerId(r)))) {
          note(
            ctx,
            `warning: ${name} shares a relay and the identity with the main network; a relay keeps one reservation per peer id, so the two would take each other's — give ${name} relays of its own`,
          )
        }
      }
      if (opts.relay.length === 0) {
        note(
          ctx,
          `warning: no relay configured for ${name}; add one with \`peerup relay add --network ${name} <address>\``,
        )
      }
      if (failed !== undefined) {
        note(ctx, `warning: the daemon did not start ${name}: ${failed}; see \`peerup network list\``)
      }
      const result = { ...added, running: started?.running === true }
      emit(ctx, opts, result, (r) =>
        [
          `Added network ${r.name} in ${r.dir}`,
          `  peer id   ${r.peerId}${r.createdIdentity ? '' : ' (the main identity)'}`,
          `  config    ${r.configFile}`,
          r.running
            ? '  the daemon runs it now'
            : '  it runs from the next `peerup daemon` (or `peerup network start` with a daemon running)',
          '',
          `Next: \`peerup invite --network ${r.name}\` or \`peerup join --network ${r.name} …\`; \`peerup ssh peer@${r.name}\`.`,
        ].join('\n'),
      )
    })
}

function registerRemove(network: CliCommand, ctx: CliContext): void {
  network
    .command('remove')
    .description(
      'stop a network in the daemon and move its directory to networks/.removed/ (nothing is deleted)',
    )
    .argument('<name>', 'the network’s name')
    .run(async (opts: GlobalOptions, name: string) => {
      const main = await mainConfigFile(ctx, opts)
      const entry = await findNetwork(main, checkNetworkName(name))
      let stopped = false
      if (!entry.main) {
        try {
          stopped = (await ifDaemon(ctx, main, (c) => c.call('networkRemove', { name }))) !== undefined
        } catch (err) {
          // A daemon that does not run it has nothing to stop.
          if (!(err instanceof NotFoundError || (err as { status?: number }).status === 404)) {
            throw err
          }
        }
      }
      const { movedTo } = await removeNetworkDir(main, name)
      emit(ctx, opts, { removed: name, stopped, movedTo }, (r) =>
        [
          `${r.stopped ? 'Stopped and removed' : 'Removed'} network ${r.removed}; its directory is kept in ${r.movedTo}`,
          `  to bring it back: mv ${r.movedTo} ${entry.dir}`,
        ].join('\n'),
      )
    })
}

export function registerNetwork(program: CliCommand, ctx: CliContext): void {
  const network = program
    .command('network')
    .description('several networks in one daemon: list, add, remove, use, start')

  network
    .command('list')
    .description('the networks of this node, the one in use marked *, and whether the daemon runs them')
    .run(async (opts: GlobalOptions) => {
      const r = await networks(ctx, await mainConfigFile(ctx, opts))
      if (opts.json === true) {
        emit(ctx, opts, r.list, () => '')
      } else {
        emit(ctx, opts, r, listText)
      }
    })

  registerAdd(network, ctx)
  registerRemove(network, ctx)

  network
    .command('use')
    .description('the network commands use when they name none (`use` the main one to reset)')
    .argument('<name>', 'the network’s name')
    .run(async (opts: GlobalOptions, name: string) => {
      const main = await mainConfigFile(ctx, opts)
      const entry = await findNetwork(main, checkNetworkName(name))
      await writeSelectedNetwork(path.dirname(main), entry.main ? undefined : entry.name)
      emit(ctx, opts, { selected: entry.name, main: entry.main }, (r) =>
        r.main
          ? `Commands use the main network (${r.selected}) unless --network says otherwise`
          : `Commands use network ${r.selected} unless --network says otherwise (\`peerup network use\` the main one to reset)`,
      )
    })

  network
    .command('start')
    .description('ask the running daemon to start a network whose directory exists (after a failed start)')
    .argument('<name>', 'the network’s name')
    .run(async (opts: GlobalOptions, name: string) => {
      const main = await mainConfigFile(ctx, opts)
      await findNetwork(main, checkNetworkName(name))
      const state = await daemonClient(ctx, main).call('networkAdd', { name })
      emit(ctx, opts, state, (s) => `network ${s.name} runs as ${s.peerId ?? '?'}`)
    })
}
