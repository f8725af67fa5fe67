/**
 * The edits `peerup service|relay` make to config.yaml, and the look-ups `resolve` does. Flag
 * values are checked before the file is touched, so a typo is a usage error, not a broken config.
 *
 * @packageDocumentation
 */

import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { withoutPeerupDomain } from '../api/names.ts'
import { ConflictError, NotFoundError, UsageError } from '../errors.ts'
import { editConfigFile, ensureMap, ensureSeq } from './edit.ts'
import {
  hostPort,
  NAME_PATTERN,
  type NodeConfig,
  nodeConfigSchema,
  peerIdString,
  peerMultiaddrString,
  SERVICE_NAME_PATTERN,
} from './schema.ts'

/** A service as `service list` shows it. */
export type ServiceInfo = ReturnType<typeof listServices>[number]

/** The libp2p protocol a service is offered on. */
export function serviceProtocol(name: string): string {
  return `/peerup/${name}/1.0.0`
}

export function listServices(config: NodeConfig) {
  return Object.entries(config.services).map(([name, s]) => ({
    name,
    enabled: s.enabled,
    localAddress: s.local_address,
    allowedPeers: s.allowed_peers,
    protocol: serviceProtocol(name),
  }))
}

/** A check of a `what` given on the command line: a usage error with `hint` unless it matches `pattern`. */
export function nameCheck(what: string, pattern: RegExp, hint: string): (name: string) => void {
  return (name) => {
    if (!pattern.test(name)) {
      throw new UsageError(`invalid ${what} ${JSON.stringify(name)}`, { hint })
    }
  }
}

export const checkServiceName = nameCheck(
  'service name',
  SERVICE_NAME_PATTERN,
  'use lowercase letters, digits, - and _ (at most 32), like ssh or web-admin',
)

/** Normalises a local address from the command line: `22` means `localhost:22`. */
export function normaliseLocalAddress(address: string): string {
  const value = /^\d+$/.test(address) ? `localhost:${address}` : address
  if (!hostPort.safeParse(value).success) {
    throw new UsageError(`invalid address ${JSON.stringify(address)}`, {
      hint: 'give host:port (localhost:22, [::1]:8080) or just a port',
    })
  }
  return value
}

export async function addService(
  file: string,
  name: string,
  address: string,
  options: { allowedPeers?: string[]; enabled?: boolean } = {},
): Promise<ServiceInfo> {
  checkServiceName(name)
  const localAddress = normaliseLocalAddress(address)
  const allowed = options.allowedPeers ?? []
  const { config } = await editConfigFile(file, nodeConfigSchema, (doc, current) => {
    if (current.services[name] !== undefined) {
      throw new ConflictError(`service ${name} already exists`, {
        hint: `remove it first with \`peerup service remove ${name}\``,
      })
    }
    for (const p of allowed) {
      if (current.names[p] === undefined && !peerIdString.safeParse(p).success) {
        throw new UsageError(`${JSON.stringify(p)} is neither a peer id nor a known name`, {
          hint: 'list names with `peerup status`',
        })
      }
    }
    const entry: Record<string, unknown> = { enabled: options.enabled ?? true, local_address: localAddress }
    if (allowed.length > 0) {
      entry.allowed_peers = allowed
    }
    ensureMap(doc, ['services']).set(name, doc.createNode(entry))
  })
  return listServices(config).find((s) => s.name === name) as ServiceInfo
}

export async function removeService(file: string, name: string): Promise<void> {
  await editConfigFile(file, nodeConfigSchema, (doc, current) => {
    requireService(current, name)
    doc.deleteIn(['services', name])
  })
}

/** Turns a service on or off without forgetting it. */
export async function setServiceEnabled(file: string, name: string, enabled: boolean): Promise<ServiceInfo> {
  const { config } = await editConfigFile(file, nodeConfigSchema, (doc, current) => {
    requireService(current, name)
    doc.setIn(['services', name, 'enabled'], enabled)
  })
  return listServices(config).find((s) => s.name === name) as ServiceInfo
}

function requireService(config: NodeConfig, name: string): void {
  if (config.services[name] === undefined) {
    const known = Object.keys(config.services)
    throw new NotFoundError(`no service named ${name}`, {
      hint:
        known.length === 0
          ? 'add one with `peerup service add <name> <host:port>`'
          : `services: ${known.join(', ')}`,
    })
  }
}

/** A relay as `relay list` shows it. */
export type RelayInfo = ReturnType<typeof listRelays>[number]

/** The peer id in a relay's multiaddr. */
export function relayPeerId(address: string): string {
  const p2p = multiaddr(address)
    .getComponents()
    .find((c) => c.name === 'p2p')
  return p2p?.value ?? ''
}

export function listRelays(config: NodeConfig) {
  return config.relay.addresses.map((address) => ({ address, peerId: relayPeerId(address) }))
}

/** Checks a relay address given on the command line and returns it canonicalised. */
export function checkRelayAddress(address: string): string {
  const parsed = peerMultiaddrString.safeParse(address)
  if (!parsed.success) {
    throw new UsageError(`invalid relay address: ${parsed.error.issues[0]?.message ?? address}`, {
      hint: 'copy the address `peerup relay info` prints on the relay, like /ip4/203.0.113.7/tcp/7777/p2p/12D3KooW…',
    })
  }
  return parsed.data
}

/** Adds a relay address. Several addresses of one relay (IPv4 and IPv6) are fine; the same one twice is not. */
export async function addRelay(file: string, address: string): Promise<RelayInfo> {
  const canonical = checkRelayAddress(address)
  await editConfigFile(file, nodeConfigSchema, (doc, current) => {
    if (current.relay.addresses.includes(canonical)) {
      throw new ConflictError(`relay ${canonical} is already configured`)
    }
    ensureSeq(doc, ['relay', 'addresses']).add(doc.createNode(canonical))
  })
  return { address: canonical, peerId: relayPeerId(canonical) }
}

/** Sets `discovery.network` (a node made by a short-code join learns its inviter's only then). */
export async function setNetwork(file: string, network: string): Promise<void> {
  await editConfigFile(file, nodeConfigSchema, (doc) => {
    doc.setIn(['discovery', 'network'], network)
  })
}

/**
 * Removes a relay, by its full address or by its peer id (which removes all its addresses).
 * Removing the last relay makes the node unreachable from behind other NATs, so it needs `force`.
 */
export async function removeRelay(file: string, target: string, force = false): Promise<RelayInfo[]> {
  const { result } = await editConfigFile(file, nodeConfigSchema, (doc, current) => {
    const byAddress = peerMultiaddrString.safeParse(target)
    const matches = (address: string): boolean =>
      byAddress.success ? address === byAddress.data : relayPeerId(address) === target
    const removed = listRelays(current).filter((r) => matches(r.address))
    if (removed.length === 0) {
      throw new NotFoundError(`no relay ${target} in the config`, {
        hint: 'list them with `peerup relay list`',
      })
    }
    if (removed.length === current.relay.addresses.length && !force) {
      throw new ConflictError(
        'that would remove the last relay, and peers behind NAT could no longer reach this node',
        {
          hint: 'add another relay first, or pass --force',
        },
      )
    }
    const seq = ensureSeq(doc, ['relay', 'addresses'])
    // Delete from the end so earlier indexes stay valid.
    for (let i = current.relay.addresses.length - 1; i >= 0; i--) {
      if (matches(current.relay.addresses[i] as string)) {
        seq.delete(i)
      }
    }
    return removed
  })
  return result
}

export interface Resolved {
  name: string | undefined
  peerId: string
}

/**
 * Resolves a name from `names:` to its peer id; a peer id resolves to itself (and to its name,
 * when it has one).
 */
export function resolvePeer(config: NodeConfig, nameOrId: string): Resolved {
  const byName = config.names[nameOrId]
  if (byName !== undefined) {
    return { name: nameOrId, peerId: byName }
  }
  // `home.peerup` is `home`: how ssh's `Host *.peerup` block and the SOCKS gateway pass a name on.
  const bare = withoutPeerupDomain(nameOrId)
  const byBareName = bare === undefined ? undefined : config.names[bare]
  if (bare !== undefined && byBareName !== undefined) {
    return { name: bare, peerId: byBareName }
  }
  try {
    const peerId = peerIdFromString(nameOrId).toString()
    const name = Object.entries(config.names).find(([, id]) => id === peerId)?.[0]
    return { name, peerId }
  } catch {
    // Not a peer id either: fall through to the error below.
  }
  const known = Object.keys(config.names)
  throw new NotFoundError(`unknown peer ${JSON.stringify(nameOrId)}: not a name in names: nor a peer id`, {
    hint:
      known.length === 0
        ? 'pair with it using `peerup invite`/`peerup join`, or use its peer id'
        : `known names: ${known.join(', ')}`,
  })
}

export const checkPeerName = nameCheck(
  'name',
  NAME_PATTERN,
  'use letters, digits, . _ - (at most 63), like home or laptop-2',
)

/** Refuses `name` when `names:` already has it for another peer than `peerId`. */
export function checkNameFree(config: NodeConfig, name: string, peerId: string): void {
  const taken = config.names[name]
  if (taken !== undefined && taken !== peerId) {
    throw new ConflictError(`the name ${name} is already used for ${taken}`, {
      hint: 'pick another name, or remove that line under names: first',
    })
  }
}

/**
 * Records `name` for `peerId` under `names:`, so commands take the name wherever they take a
 * peer id. A name already used for another peer is refused; a peer keeps one name (an older name
 * of the same peer is replaced).
 */
export async function setPeerName(file: string, name: string, peerId: string): Promise<Resolved> {
  checkPeerName(name)
  const id = peerIdString.parse(peerId)
  await editConfigFile(file, nodeConfigSchema, (doc, current) => {
    checkNameFree(current, name, id)
    for (const [old, oldId] of Object.entries(current.names)) {
      if (oldId === id && old !== name) {
        doc.deleteIn(['names', old])
      }
    }
    ensureMap(doc, ['names']).set(name, id)
  })
  return { name, peerId: id }
}
