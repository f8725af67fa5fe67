/**
 * `peerup config validate`: the config and the files it names, every problem at once.
 *
 * @packageDocumentation
 */

import { stringify } from 'yaml'
import { loadIdentity, peerIdOf } from '../auth/identity.ts'
import { validateAuthorizedKeysFile } from '../auth/ops.ts'
import { formatError } from '../errors.ts'
import { ConfigError, formatProblem } from './errors.ts'
import { loadNodeConfig, resolveIn } from './load.ts'
import type { NodeConfig } from './schema.ts'
import { formatDurationMs } from './units.ts'

/** What {@link checkNodeFiles} found. */
export interface CheckReport {
  /** One line per problem, `file:line: key: what`. */
  problems: string[]
  peerId: string | undefined
}

/** Checks config.yaml, the identity key and authorized_keys; collects every problem instead of stopping at one. */
export async function checkNodeFiles(file: string): Promise<CheckReport> {
  const problems: string[] = []
  let loaded: Awaited<ReturnType<typeof loadNodeConfig>>
  try {
    loaded = await loadNodeConfig(file)
  } catch (err) {
    if (err instanceof ConfigError) {
      return { problems: err.problems.map((p) => formatProblem(err.file, p)), peerId: undefined }
    }
    throw err
  }
  let peerId: string | undefined
  try {
    peerId = peerIdOf(await loadIdentity(resolveIn(loaded.dir, loaded.config.identity.key_file)))
  } catch (err) {
    problems.push(formatError(err))
  }
  try {
    for (const p of await validateAuthorizedKeysFile(
      resolveIn(loaded.dir, loaded.config.security.authorized_keys_file),
    )) {
      problems.push(p.message)
    }
  } catch (err) {
    problems.push(formatError(err))
  }
  return { problems, peerId }
}

/** The config in effect as YAML a person can read (and paste back): defaults filled, durations as text. */
export function effectiveNodeConfigYaml(config: NodeConfig): string {
  return stringify({
    ...config,
    relay: { ...config.relay, reservation_interval: formatDurationMs(config.relay.reservation_interval) },
  })
}
