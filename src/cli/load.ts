/**
 * Finding and loading the config a command works on, from `--config` or the search path.
 *
 * @packageDocumentation
 */

import { type Loaded, loadNodeConfig, loadRelayConfig } from '../config/load.ts'
import { findConfigFile, nodeConfigCandidates, relayConfigCandidates } from '../config/paths.ts'
import type { NodeConfig, RelayConfig } from '../config/schema.ts'
import type { CliContext, GlobalOptions } from './context.ts'

/** The path of the node config this invocation uses. */
export function nodeConfigFile(ctx: CliContext, opts: GlobalOptions): Promise<string> {
  return findConfigFile(opts.config, nodeConfigCandidates(ctx.env, ctx.cwd), ctx.cwd, 'node')
}

/** Loads the node config this invocation uses. */
export async function loadNode(ctx: CliContext, opts: GlobalOptions): Promise<Loaded<NodeConfig>> {
  return loadNodeConfig(await nodeConfigFile(ctx, opts))
}

/** The path of the relay config this invocation uses. */
export function relayConfigFile(ctx: CliContext, opts: GlobalOptions): Promise<string> {
  return findConfigFile(opts.config, relayConfigCandidates(ctx.env, ctx.cwd), ctx.cwd, 'relay')
}

/** Loads the relay config this invocation uses. */
export async function loadRelay(ctx: CliContext, opts: GlobalOptions): Promise<Loaded<RelayConfig>> {
  return loadRelayConfig(await relayConfigFile(ctx, opts))
}
