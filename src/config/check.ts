/**
 * `peerup config validate|apply`: the config and the files it names, every problem at once.
 *
 * @packageDocumentation
 */

import * as path from 'node:path'
import { stringify } from 'yaml'
import { loadIdentity, peerIdOf } from '../auth/identity.ts'
import { validateAuthorizedKeysFile } from '../auth/ops.ts'
import { formatError } from '../errors.ts'
import { checkFileMode } from '../util/fs.ts'
import { ConfigError, formatProblem } from './errors.ts'
import { loadNodeConfig, parseConfigText, refuseOversize, resolveIn } from './load.ts'
import { type NodeConfig, nodeConfigSchema } from './schema.ts'
import { formatDurationMs } from './units.ts'

/** What {@link checkNodeFiles} found. */
export interface CheckReport {
  /** One line per problem, `file:line: key: what`. */
  problems: string[]
  peerId: string | undefined
}

/** Checks config.yaml, the identity key and authorized_keys; collects every problem instead of stopping at one. */
export async function checkNodeFiles(file: string): Promise<CheckReport> {
  let loaded: Awaited<ReturnType<typeof loadNodeConfig>>
  try {
    loaded = await loadNodeConfig(file)
  } catch (err) {
    return configProblems(err)
  }
  return checkNamedFiles(loaded.dir, loaded.config)
}

/**
 * Checks `text` as the replacement of `configFile`, as `config validate FILE` and `config apply
 * FILE` both do: parsed as a config, with the identity key and authorized_keys it names resolved
 * in `configFile`'s directory — where it will be used — whatever directory the text came from, and
 * that directory checked as a config's. Problems name the text `shownAs`.
 */
export async function checkReplacement(
  configFile: string,
  text: string,
  shownAs: string,
): Promise<CheckReport> {
  const dir = path.dirname(path.resolve(configFile))
  await checkFileMode(dir, 'trust')
  let config: NodeConfig
  try {
    refuseOversize(shownAs, Buffer.byteLength(text))
    config = parseConfigText(text, shownAs, nodeConfigSchema)
  } catch (err) {
    return configProblems(err)
  }
  return checkNamedFiles(dir, config)
}

/** A config that did not parse, as a report; anything else is thrown on. */
function configProblems(err: unknown): CheckReport {
  if (err instanceof ConfigError) {
    return { problems: err.problems.map((p) => formatProblem(err.file, p)), peerId: undefined }
  }
  throw err
}

/** Checks the identity key and authorized_keys a config names, relative to `dir`. */
async function checkNamedFiles(dir: string, config: NodeConfig): Promise<CheckReport> {
  const problems: string[] = []
  let peerId: string | undefined
  try {
    peerId = peerIdOf(await loadIdentity(resolveIn(dir, config.identity.key_file)))
  } catch (err) {
    problems.push(formatError(err))
  }
  try {
    for (const p of await validateAuthorizedKeysFile(resolveIn(dir, config.security.authorized_keys_file))) {
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
