/**
 * Several networks in one daemon (docs/cli.md "Several networks",
 * docs/decisions/0017-several-networks.md). The main config's directory `D` is the first network,
 * unchanged: its name is its `discovery.network`, or `default` when that is empty. Every further
 * network is a complete node directory `D/networks/<name>/` (config.yaml, identity key,
 * authorized_keys) whose `discovery.network` is `<name>`, so every loader of a node directory
 * works on it as it is. Which network a command means when it names none is recorded by `peerup
 * network use` in `D/.network`; a removed network's directory is moved under
 * `D/networks/.removed/`, never deleted.
 *
 * @packageDocumentation
 */

import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import { NETWORK_NAME_PATTERN, NETWORK_NAME_RULE, splitNetworkRef } from '../api/names.ts'
import { ConflictError, NotFoundError, UsageError } from '../errors.ts'
import { atomicWriteFile, exists } from '../util/fs.ts'
import { initNode } from './init.ts'
import { loadNodeConfig } from './load.ts'
import { CONFIG_FILE_NAME } from './paths.ts'
import type { NodeConfig } from './schema.ts'

/** The folder beside the main config that holds the further networks. */
export const NETWORKS_DIR = 'networks'

/** Where `network remove` moves a network's directory, inside {@link NETWORKS_DIR}. */
export const REMOVED_DIR = '.removed'

/** The file in the main directory holding the name `peerup network use` chose. */
export const SELECTED_NETWORK_FILE = '.network'

/** The main network's name when its `discovery.network` is empty. */
export const DEFAULT_NETWORK = 'default'

/** One network of a layout. */
export interface NetworkEntry {
  name: string
  /** The network's directory: the main one for the main network. */
  dir: string
  configFile: string
  /** The main network: the config found by `--config` or the search path. */
  main: boolean
}

const LIST_HINT = '`peerup network list` shows the names'

/** The name of the network a node config belongs to: its `discovery.network`, or `default`. */
export function networkNameOf(config: NodeConfig): string {
  return config.discovery.network === '' ? DEFAULT_NETWORK : config.discovery.network
}

/** `name` when it is a valid network name, else a usage error that says the rule. */
export function checkNetworkName(name: string): string {
  if (!NETWORK_NAME_PATTERN.test(name)) {
    throw new UsageError(`invalid network name ${JSON.stringify(name.slice(0, 64))}: ${NETWORK_NAME_RULE}`, {
      hint: 'choose a name like work or home-lab',
    })
  }
  return name
}

/**
 * The main config a config file belongs to, from its path alone: `D/networks/<name>/config.yaml`
 * belongs to `D/config.yaml` (network `<name>`); any other file is a main config itself.
 */
export function locateNetworkConfig(configFile: string): {
  mainConfigFile: string
  network: string | undefined
} {
  const dir = path.dirname(configFile)
  const parent = path.dirname(dir)
  if (path.basename(parent) === NETWORKS_DIR && path.basename(configFile) === CONFIG_FILE_NAME) {
    return { mainConfigFile: path.join(path.dirname(parent), CONFIG_FILE_NAME), network: path.basename(dir) }
  }
  return { mainConfigFile: configFile, network: undefined }
}

/** The further networks' directory names found under `D/networks/` (those with a config.yaml), sorted. */
export async function extraNetworkNames(mainDir: string): Promise<string[]> {
  const root = path.join(mainDir, NETWORKS_DIR)
  const entries = await fs.readdir(root, { withFileTypes: true }).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') {
      return []
    }
    throw err
  })
  const names: string[] = []
  for (const e of entries) {
    if (
      e.isDirectory() &&
      NETWORK_NAME_PATTERN.test(e.name) &&
      (await exists(path.join(root, e.name, CONFIG_FILE_NAME)))
    ) {
      names.push(e.name)
    }
  }
  return names.sort()
}

/**
 * Every network of the layout whose main config is `mainConfigFile`: the main one first, then
 * those of `D/networks/`, by name. A further network named like the main one is left out (the
 * main one wins; `peerup network list` says nothing of it, `network add` refuses the name).
 */
export async function listNetworks(mainConfigFile: string): Promise<NetworkEntry[]> {
  const { config, dir } = await loadNodeConfig(mainConfigFile)
  const mainName = networkNameOf(config)
  const main: NetworkEntry = { name: mainName, dir, configFile: mainConfigFile, main: true }
  const extras = (await extraNetworkNames(dir))
    .filter((name) => name !== mainName)
    .map((name) => {
      const netDir = path.join(dir, NETWORKS_DIR, name)
      return { name, dir: netDir, configFile: path.join(netDir, CONFIG_FILE_NAME), main: false }
    })
  return [main, ...extras]
}

/** The network named `name` in the layout, or a not-found error that says how to see the names. */
export async function findNetwork(mainConfigFile: string, name: string): Promise<NetworkEntry> {
  const networks = await listNetworks(mainConfigFile)
  const found = networks.find((n) => n.name === name)
  if (found === undefined) {
    throw new NotFoundError(
      `unknown network ${JSON.stringify(name.slice(0, 64))} (networks here: ${networks.map((n) => n.name).join(', ')})`,
      { hint: `${LIST_HINT}; add one with \`peerup network add <name>\`` },
    )
  }
  return found
}

/** The name `peerup network use` recorded in the main directory, if any. */
export async function readSelectedNetwork(mainDir: string): Promise<string | undefined> {
  const text = await fs.readFile(path.join(mainDir, SELECTED_NETWORK_FILE), 'utf8').catch(() => '')
  const name = text.trim()
  return NETWORK_NAME_PATTERN.test(name) ? name : undefined
}

/** Records `name` as the network commands mean when they name none; `undefined` forgets the choice. */
export async function writeSelectedNetwork(mainDir: string, name: string | undefined): Promise<void> {
  const file = path.join(mainDir, SELECTED_NETWORK_FILE)
  if (name === undefined) {
    await fs.rm(file, { force: true })
    return
  }
  await atomicWriteFile(file, `${name}\n`, { mode: 0o600 })
}

/**
 * The network a command works in: the one a `name@network` peer names, else `--network`, else the
 * one `peerup network use` chose, else the main one. A peer's `@network` and a different
 * `--network` together are a usage error.
 */
export function selectNetwork(choice: {
  peer?: string | undefined
  flag?: string | undefined
  used?: string | undefined
}): { network: string | undefined; peer: string | undefined } {
  const split = choice.peer === undefined ? undefined : splitNetworkRef(choice.peer)
  const fromPeer = split?.network
  if (fromPeer !== undefined) {
    checkNetworkName(fromPeer)
    if (choice.flag !== undefined && choice.flag !== fromPeer) {
      throw new UsageError(
        `${JSON.stringify(choice.peer)} names network ${fromPeer} but --network says ${choice.flag}`,
        {
          hint: 'give the network once: either name@network or --network',
        },
      )
    }
  }
  return { network: fromPeer ?? choice.flag ?? choice.used, peer: split?.name }
}

export interface AddNetworkOptions {
  mainConfigFile: string
  name: string
  relays: string[]
  /** The new network uses the main network's identity (its key copied, 0600). */
  sameIdentity?: boolean
}

/**
 * Creates `D/networks/<name>/` as `peerup init` makes a node (identity, config.yaml with
 * `discovery.network: <name>`, an empty authorized_keys), in a temporary directory beside it
 * renamed into place at the end: a failure leaves no half-made network.
 */
export async function addNetwork(
  options: AddNetworkOptions,
): Promise<NetworkEntry & { peerId: string; createdIdentity: boolean }> {
  const name = checkNetworkName(options.name)
  const networks = await listNetworks(options.mainConfigFile)
  const main = networks[0] as NetworkEntry
  const root = path.join(main.dir, NETWORKS_DIR)
  const dir = path.join(root, name)
  if (networks.some((n) => n.name === name) || (await exists(dir))) {
    throw new ConflictError(
      `a network named ${name} already exists (${networks.find((n) => n.name === name)?.dir ?? dir})`,
      {
        hint: `choose another name, or remove it first with \`peerup network remove ${name}\``,
      },
    )
  }
  await fs.mkdir(root, { recursive: true, mode: 0o700 })
  const tmp = await fs.mkdtemp(path.join(root, `.${name}.tmp-`))
  try {
    if (options.sameIdentity === true) {
      const { config } = await loadNodeConfig(main.configFile)
      const key = await fs.readFile(path.resolve(main.dir, config.identity.key_file))
      await atomicWriteFile(path.join(tmp, 'identity.key'), key, { mode: 0o600, exclusive: true })
    }
    const result = await initNode({ dir: tmp, relays: options.relays, network: name })
    await fs.chmod(tmp, 0o700)
    // rename() of a directory onto an existing non-empty one fails: a race loses cleanly.
    await fs.rename(tmp, dir)
    const configFile = path.join(dir, CONFIG_FILE_NAME)
    return {
      name,
      dir,
      configFile,
      main: false,
      peerId: result.peerId,
      createdIdentity: result.createdIdentity,
    }
  } catch (err) {
    await fs.rm(tmp, { recursive: true, force: true })
    throw err
  }
}

/**
 * Moves a further network's directory to `D/networks/.removed/<name>-<time>`, where it stays:
 * nothing is deleted. The main network cannot be removed.
 */
export async function removeNetworkDir(
  mainConfigFile: string,
  name: string,
  now = new Date(),
): Promise<{ movedTo: string }> {
  const network = await findNetwork(mainConfigFile, name)
  if (network.main) {
    throw new UsageError(`${name} is the main network (${network.configFile}): it cannot be removed`, {
      hint: 'remove a network added with `peerup network add`; the main one is the config itself',
    })
  }
  const removed = path.join(path.dirname(network.dir), REMOVED_DIR)
  await fs.mkdir(removed, { recursive: true, mode: 0o700 })
  const stamp = now.toISOString().replace(/[:.]/g, '-')
  const movedTo = path.join(removed, `${name}-${stamp}`)
  await fs.rename(network.dir, movedTo)
  // The choice of `network use` would now name nothing.
  const mainDir = path.dirname(mainConfigFile)
  if ((await readSelectedNetwork(mainDir)) === name) {
    await writeSelectedNetwork(mainDir, undefined)
  }
  return { movedTo }
}
