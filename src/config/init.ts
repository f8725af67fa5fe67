/**
 * `peerup init` and `peerup relay setup`: create a node's (or relay's) directory with identity,
 * config and an empty authorized_keys. Nothing that exists is overwritten; an existing identity
 * is kept, so re-running after a failure picks up where it stopped.
 *
 * @packageDocumentation
 */

import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import { createIdentity, loadIdentity, peerIdOf } from '../auth/identity.ts'
import { ConflictError, UsageError } from '../errors.ts'
import { atomicWriteFile, exists, FileModeError } from '../util/fs.ts'
import { parseConfigText } from './load.ts'
import { checkRelayAddress } from './ops.ts'
import { CONFIG_FILE_NAME, RELAY_CONFIG_FILE_NAME } from './paths.ts'
import { NETWORK_PATTERN, nodeConfigSchema, relayConfigSchema } from './schema.ts'
import { renderNodeConfig, renderRelayConfig } from './template.ts'

/** What `init` was asked to create. */
export interface InitOptions {
  dir: string
  relays: string[]
  network: string
  /**
   * Filled with every path this call creates, directories first, as it creates them (also when it
   * fails half-way): what {@link removeMade} takes back when the caller's next step fails.
   */
  made?: string[]
}

/** What `init` created. */
export interface InitResult {
  dir: string
  configFile: string
  identityFile: string
  authorizedKeysFile: string
  peerId: string
  /** False when an identity was already there and was kept. */
  createdIdentity: boolean
  /** `relay setup` only: the mode the directory had (`0755`) when setup made it 0700. */
  previousDirMode?: string
}

const AUTHORIZED_KEYS_HEADER = `# Peers allowed to connect to this node, one per line:
#   <peer-id> [expires=YYYY-MM-DD] [verified=…] [group=…] [# comment]
# Edit with \`peerup auth add|remove\`, or pair with \`peerup invite\` / \`peerup join\`.
`

const RELAY_AUTHORIZED_KEYS_HEADER = `# Peers allowed to hold a reservation on this relay, one per line:
#   <peer-id> [sponsor=yes|<peer-id>] [expires=YYYY-MM-DD] [# comment]
# Edit with \`peerup relay authorize|deauthorize\`; peers that pair through this relay are added
# automatically when sponsoring is on (security.sponsoring in relay-server.yaml).
`

/** Creates `dir` (0700) unless it exists; returns the directories it created, outermost first. */
async function prepareDir(dir: string, configFile: string, command: string): Promise<string[]> {
  const first = await fs.mkdir(dir, { recursive: true, mode: 0o700 })
  if (await exists(configFile)) {
    throw new ConflictError(`${configFile} already exists`, {
      hint: `${command} never overwrites a config; use --dir for another one, or edit this one`,
    })
  }
  const created: string[] = []
  for (let d = dir; first !== undefined && d.startsWith(first); d = path.dirname(d)) {
    created.unshift(d)
  }
  return created
}

/**
 * Makes an existing directory 0700; returns the mode it had when that changed it. `mkdir`'s mode
 * applies only to a directory it creates, and one made beforehand (`mkdir -p` leaves 0755) would
 * keep the relay from opening its admin socket there, which src/util/socket.ts refuses in a
 * directory other users can enter: `relay pair` would then find no relay to talk to.
 */
async function makePrivate(dir: string): Promise<string | undefined> {
  if (process.platform === 'win32') {
    return undefined
  }
  const mode = (await fs.stat(dir)).mode & 0o777
  if ((mode & 0o077) === 0) {
    return undefined
  }
  const was = mode.toString(8).padStart(4, '0')
  try {
    await fs.chmod(dir, 0o700)
  } catch (err) {
    throw new FileModeError(`${dir} has mode ${was} and cannot be made 0700: ${(err as Error).message}`, {
      hint: `run setup as the directory's owner, or: chmod 700 ${dir}`,
    })
  }
  return was
}

async function identityIn(file: string, made: string[]): Promise<{ peerId: string; created: boolean }> {
  if (await exists(file)) {
    return { peerId: peerIdOf(await loadIdentity(file)), created: false }
  }
  const key = await createIdentity(file)
  made.push(file)
  return { peerId: peerIdOf(key), created: true }
}

async function writeIfMissing(file: string, text: string, made: string[]): Promise<void> {
  if (!(await exists(file))) {
    await atomicWriteFile(file, text, { mode: 0o600, exclusive: true })
    made.push(file)
  }
}

/**
 * Takes back what an {@link initNode} call made (its `made` list), newest first: its files are
 * removed, and its directories when they are empty again. A `join` whose pairing fails leaves no
 * half-made node behind with it (src/invite/join.ts); nothing that was there before is touched.
 */
export async function removeMade(made: string[]): Promise<void> {
  for (const p of [...made].reverse()) {
    const st = await fs.lstat(p).catch(() => undefined)
    if (st?.isDirectory() === true) {
      // Not empty: something else lives there now, and stays.
      await fs.rmdir(p).catch(() => {})
    } else if (st !== undefined) {
      await fs.rm(p, { force: true })
    }
  }
}

export async function initNode(options: InitOptions): Promise<InitResult> {
  const relays = [...new Set(options.relays.map(checkRelayAddress))]
  if (!NETWORK_PATTERN.test(options.network)) {
    throw new UsageError(`invalid network name ${JSON.stringify(options.network)}`, {
      hint: 'use lowercase letters, digits, - and _, or leave it empty for the default network',
    })
  }
  const dir = path.resolve(options.dir)
  const configFile = path.join(dir, CONFIG_FILE_NAME)
  const text = renderNodeConfig({ relays, network: options.network })
  const config = parseConfigText(text, configFile, nodeConfigSchema)
  const made = options.made ?? []
  made.push(...(await prepareDir(dir, configFile, 'peerup init')))
  const identityFile = path.join(dir, config.identity.key_file)
  const authorizedKeysFile = path.join(dir, config.security.authorized_keys_file)
  const identity = await identityIn(identityFile, made)
  await writeIfMissing(authorizedKeysFile, AUTHORIZED_KEYS_HEADER, made)
  // The config goes last: its presence is what marks the directory as initialised.
  await atomicWriteFile(configFile, text, { mode: 0o600, exclusive: true })
  made.push(configFile)
  return {
    dir,
    configFile,
    identityFile,
    authorizedKeysFile,
    peerId: identity.peerId,
    createdIdentity: identity.created,
  }
}

export async function initRelay(dir: string): Promise<InitResult> {
  const abs = path.resolve(dir)
  const configFile = path.join(abs, RELAY_CONFIG_FILE_NAME)
  const text = renderRelayConfig()
  const config = parseConfigText(text, configFile, relayConfigSchema)
  await prepareDir(abs, configFile, 'peerup relay setup')
  const previousDirMode = await makePrivate(abs)
  const identityFile = path.join(abs, config.identity.key_file)
  const authorizedKeysFile = path.join(abs, config.security.authorized_keys_file)
  const identity = await identityIn(identityFile, [])
  await writeIfMissing(authorizedKeysFile, RELAY_AUTHORIZED_KEYS_HEADER, [])
  await atomicWriteFile(configFile, text, { mode: 0o600, exclusive: true })
  return {
    dir: abs,
    configFile,
    identityFile,
    authorizedKeysFile,
    peerId: identity.peerId,
    createdIdentity: identity.created,
    ...(previousDirMode === undefined ? {} : { previousDirMode }),
  }
}
