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

/** The node's config file name inside its directory. */
export const CONFIG_FILE_NAME = 'config.yaml'

/** The relay's config file name inside its directory. */
export const RELAY_CONFIG_FILE_NAME = 'relay-server.yaml'

/** Files kept in a node's directory, beside its config. */
export const NODE_FILES = {
  socket: 'peerup.sock',
  cookie: '.daemon-cookie',
  lastGood: '.config.last-good.yaml',
} as const

/** The places a node config is looked for, in order. */
export function nodeConfigCandidates(env: Env, cwd: string): string[] {
  const candidates: string[] = []
  if (env.peerupHome !== undefined) {
    candidates.push(path.resolve(cwd, env.peerupHome, CONFIG_FILE_NAME))
  }
  candidates.push(
    path.resolve(cwd, 'peerup.yaml'),
    path.join(env.configHome, 'peerup', CONFIG_FILE_NAME),
    path.join('/etc/peerup', CONFIG_FILE_NAME),
  )
  return candidates
}

/** The places a relay config is looked for, in order. */
export function relayConfigCandidates(env: Env, cwd: string): string[] {
  const candidates: string[] = []
  if (env.peerupHome !== undefined) {
    candidates.push(path.resolve(cwd, env.peerupHome, RELAY_CONFIG_FILE_NAME))
  }
  candidates.push(
    path.resolve(cwd, RELAY_CONFIG_FILE_NAME),
    path.join(env.configHome, 'peerup', RELAY_CONFIG_FILE_NAME),
    path.join('/etc/peerup', RELAY_CONFIG_FILE_NAME),
  )
  return candidates
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
  candidates: string[],
  cwd: string,
  what: 'node' | 'relay',
): Promise<string> {
  if (explicit !== undefined) {
    const file = path.resolve(cwd, explicit)
    if (!(await exists(file))) {
      throw new ConfigNotFoundError(`config file ${file} does not exist`, {
        hint:
          what === 'node'
            ? 'create it with `peerup init --dir <dir>`'
            : 'create it with `peerup relay setup`',
      })
    }
    return file
  }
  for (const file of candidates) {
    if (await exists(file)) {
      return file
    }
  }
  throw new ConfigNotFoundError(`no ${what} config found (looked in ${candidates.join(', ')})`, {
    hint:
      what === 'node'
        ? 'run `peerup init` first, or pass --config FILE'
        : 'run `peerup relay setup` first, or pass --config FILE',
  })
}
