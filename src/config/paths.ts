/**
 * Where config files are looked for (docs/cli.md). Everything a node keeps lives beside its config
 * file, so `--config` alone is enough to run several nodes on one machine.
 *
 * @packageDocumentation
 */

import * as path from 'node:path'
import type { Env } from '../env.ts'
import { exists } from '../util/fs.ts'
import { ConfigNotFoundError } from './errors.ts'

export const CONFIG_FILE_NAME = 'config.yaml'

export const RELAY_CONFIG_FILE_NAME = 'relay-server.yaml'

/** Files kept in a node's directory, beside its config. */
export const NODE_FILES = {
  socket: 'peerup.sock',
  cookie: '.daemon-cookie',
} as const

/** A node's config and a relay's: the file's name, its name in the current directory, the command making one. */
const KINDS = {
  node: { file: CONFIG_FILE_NAME, inCwd: 'peerup.yaml', init: 'peerup init' },
  relay: { file: RELAY_CONFIG_FILE_NAME, inCwd: RELAY_CONFIG_FILE_NAME, init: 'peerup relay setup' },
}

/** The places a node's (or relay's) config is looked for, in order. */
export function configCandidates(env: Env, cwd: string, kind: 'node' | 'relay'): string[] {
  const { file, inCwd } = KINDS[kind]
  return [
    ...(env.peerupHome === undefined ? [] : [path.resolve(cwd, env.peerupHome, file)]),
    path.resolve(cwd, inCwd),
    path.join(env.configHome, 'peerup', file),
    path.join('/etc/peerup', file),
  ]
}

/** The directory `peerup init` writes to when no `--dir` is given. */
export function defaultNodeDir(env: Env, cwd: string): string {
  return env.peerupHome === undefined
    ? path.join(env.configHome, 'peerup')
    : path.resolve(cwd, env.peerupHome)
}

/**
 * Finds the config file to use: the explicit one when given (it must exist), else the first
 * candidate that exists.
 */
export async function findConfigFile(
  explicit: string | undefined,
  env: Env,
  cwd: string,
  kind: 'node' | 'relay',
): Promise<string> {
  if (explicit !== undefined) {
    const file = path.resolve(cwd, explicit)
    if (!(await exists(file))) {
      throw new ConfigNotFoundError(`config file ${file} does not exist`, {
        hint: `create it with \`${KINDS[kind].init}${kind === 'node' ? ' --dir <dir>' : ''}\``,
      })
    }
    return file
  }
  const candidates = configCandidates(env, cwd, kind)
  for (const file of candidates) {
    if (await exists(file)) {
      return file
    }
  }
  throw new ConfigNotFoundError(`no ${kind} config found (looked in ${candidates.join(', ')})`, {
    hint: `run \`${KINDS[kind].init}\` first, or pass --config FILE`,
  })
}
