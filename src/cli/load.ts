/**
 * Finding and loading the config a command works on, from `--config` or the search path, and
 * reaching the daemon that serves it.
 *
 * @packageDocumentation
 */

import * as path from 'node:path'
import { DaemonNotRunningError, LocalClient } from '../client/local.ts'
import { type Loaded, loadNodeConfig, loadRelayConfig } from '../config/load.ts'
import {
  checkNetworkName,
  findNetwork,
  locateNetworkConfig,
  networkNameOf,
  readSelectedNetwork,
} from '../config/networks.ts'
import { findConfigFile } from '../config/paths.ts'
import type { NodeConfig, RelayConfig } from '../config/schema.ts'
import type { CliContext, GlobalOptions } from './context.ts'
import { note } from './output.ts'

/**
 * The main node config of this invocation: `--config`, else the first of the search path (a
 * further network's config given to `--config` stands for the main one beside it).
 */
export async function mainConfigFile(ctx: CliContext, opts: GlobalOptions): Promise<string> {
  return locateNetworkConfig(await findConfigFile(opts.config, ctx.env, ctx.cwd, 'node')).mainConfigFile
}

/**
 * The path of the node config this invocation uses: that of the network `--network` names, else
 * the one `peerup network use` chose, else the main one (docs/cli.md "Several networks"). A
 * `--config` into `networks/<name>/` means that network unless `--network` says otherwise.
 */
export async function nodeConfigFile(ctx: CliContext, opts: GlobalOptions): Promise<string> {
  const file = await findConfigFile(opts.config, ctx.env, ctx.cwd, 'node')
  const located = locateNetworkConfig(file)
  const network =
    opts.network === undefined
      ? located.network === undefined
        ? await readSelectedNetwork(path.dirname(file))
        : undefined
      : checkNetworkName(opts.network)
  if (network === undefined) {
    return file
  }
  return (await findNetwork(located.mainConfigFile, network)).configFile
}

export async function loadNode(ctx: CliContext, opts: GlobalOptions): Promise<Loaded<NodeConfig>> {
  return loadNodeConfig(await nodeConfigFile(ctx, opts))
}

/** The path of the relay config this invocation uses. */
export function relayConfigFile(ctx: CliContext, opts: GlobalOptions): Promise<string> {
  return findConfigFile(opts.config, ctx.env, ctx.cwd, 'relay')
}

export async function loadRelay(ctx: CliContext, opts: GlobalOptions): Promise<Loaded<RelayConfig>> {
  return loadRelayConfig(await relayConfigFile(ctx, opts))
}

/**
 * A client of the daemon serving `configFile` — the main config's daemon, about the network the
 * file is of; its warning about another version goes to stderr.
 */
export function daemonClient(ctx: CliContext, configFile: string): LocalClient {
  const { mainConfigFile, network } = locateNetworkConfig(configFile)
  return new LocalClient({
    configFile: mainConfigFile,
    warn: (m) => note(ctx, m),
    // Always named: without it the daemon would take the one `network use` chose.
    network: async () =>
      network ??
      (await loadNodeConfig(mainConfigFile).then(
        ({ config }) => networkNameOf(config),
        () => undefined,
      )),
  })
}

/**
 * Runs `daemon` with a client of the running daemon, or `alone` with the config file when none
 * runs (any other failure of the daemon's is the command's).
 */
export async function viaDaemon<T>(
  ctx: CliContext,
  opts: GlobalOptions,
  daemon: (client: LocalClient) => Promise<T>,
  alone: (configFile: string) => Promise<T>,
): Promise<T> {
  const configFile = await nodeConfigFile(ctx, opts)
  try {
    return await daemon(daemonClient(ctx, configFile))
  } catch (err) {
    if (!(err instanceof DaemonNotRunningError)) {
      throw err
    }
  }
  return alone(configFile)
}
