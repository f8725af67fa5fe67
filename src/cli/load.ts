/**
 * Finding and loading the config a command works on, from `--config` or the search path, and
 * reaching the daemon that serves it.
 *
 * @packageDocumentation
 */

import { DaemonNotRunningError, LocalClient } from '../client/local.ts'
import { type Loaded, loadNodeConfig, loadRelayConfig } from '../config/load.ts'
import { findConfigFile } from '../config/paths.ts'
import type { NodeConfig, RelayConfig } from '../config/schema.ts'
import type { CliContext, GlobalOptions } from './context.ts'
import { note } from './output.ts'

/** The path of the node config this invocation uses. */
export function nodeConfigFile(ctx: CliContext, opts: GlobalOptions): Promise<string> {
  return findConfigFile(opts.config, ctx.env, ctx.cwd, 'node')
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

/** A client of the daemon serving `configFile`; its warning about another version goes to stderr. */
export function daemonClient(ctx: CliContext, configFile: string): LocalClient {
  return new LocalClient({ configFile, warn: (m) => note(ctx, m) })
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
