/**
 * The proxies of config.yaml's `proxies:` — local ports the daemon forwards to peers' services —
 * as `peerup proxy add|remove|enable|disable` and the daemon's API change them. Every value is
 * checked before the file is touched, and the file is checked again as the edit writes it, so a
 * refused change leaves it as it was.
 *
 * @packageDocumentation
 */

import { NAME_PATTERN, PROXY_NAME_RULE, SERVICE_NAME_RULE } from '../api/names.ts'
import { ConflictError, NotFoundError, UsageError } from '../errors.ts'
import { formatHostPort, type HostPort, parseListenAddress } from '../util/address.ts'
import { editConfigFile, ensureMap } from './edit.ts'
import { checkServiceName, nameCheck, resolvePeer } from './ops.ts'
import { type NodeConfig, nodeConfigSchema } from './schema.ts'

/** A proxy as config.yaml holds it: `peer` as written (a name from `names:` or a peer id), `bind` as `host:port`. */
export type ProxyInfo = NodeConfig['proxies'][string] & { name: string }

export function listProxies(config: NodeConfig): ProxyInfo[] {
  // Field by field: this order is the order of `proxy list --json`.
  return Object.entries(config.proxies).map(([name, p]) => ({
    name,
    peer: p.peer,
    service: p.service,
    bind: p.bind,
    enabled: p.enabled,
  }))
}

/** A proxy to add, as given on the command line or to the API. */
export interface NewProxy {
  name: string
  peer: string
  service: string
  /** `[host:]port`; without it, or with port 0, a free port is to be picked. */
  bind?: string | undefined
  enabled?: boolean | undefined
}

/** A new proxy checked: its fields, and the address to bind (port 0: pick one, then record it). */
export type CheckedProxy = Omit<ProxyInfo, 'bind'> & { listen: HostPort }

export const checkProxyName = nameCheck('proxy name', NAME_PATTERN, `${PROXY_NAME_RULE}, like home-ssh`)

/** `[host:]port` to listen on, checked: a usage error that says how to write it otherwise. */
export function parseBind(bind: string | undefined): HostPort {
  if (bind === undefined) {
    return parseListenAddress('0')
  }
  try {
    if (/\s/.test(bind.trim())) {
      throw new Error('whitespace')
    }
    return parseListenAddress(bind)
  } catch {
    throw new UsageError(`invalid bind address ${JSON.stringify(bind)}`, {
      hint: 'give [host:]port, like 2222 or 127.0.0.1:2222 (leave it out to pick a free port)',
    })
  }
}

/**
 * Checks a new proxy against `config`: the name's form and that no proxy has it, that the peer is
 * a name under `names:` or a peer id, the service's form, and the bind address (that no other
 * proxy uses it). Nothing is bound or written.
 */
export function checkNewProxy(config: NodeConfig, p: NewProxy): CheckedProxy {
  checkProxyName(p.name)
  requireNoProxy(config, p.name)
  resolvePeer(config, p.peer)
  try {
    checkServiceName(p.service)
  } catch {
    throw new UsageError(`invalid service name ${JSON.stringify(p.service)}`, { hint: SERVICE_NAME_RULE })
  }
  const listen = parseBind(p.bind)
  if (listen.port !== 0) {
    requireBindFree(config, formatHostPort(listen.host, listen.port))
  }
  return { name: p.name, peer: p.peer, service: p.service, enabled: p.enabled ?? true, listen }
}

/**
 * Writes a checked proxy, listening on `bound` (its port known: a picked one is recorded), into
 * config.yaml. Checked again against the file as it is now, under its lock.
 */
export async function addProxyToFile(file: string, p: CheckedProxy, bound: HostPort): Promise<ProxyInfo> {
  const bind = formatHostPort(bound.host, bound.port)
  await editConfigFile(file, nodeConfigSchema, (doc, current) => {
    requireNoProxy(current, p.name)
    requireBindFree(current, bind)
    const entry: Record<string, unknown> = { peer: p.peer, service: p.service, bind }
    if (!p.enabled) {
      entry.enabled = false
    }
    ensureMap(doc, ['proxies']).set(p.name, doc.createNode(entry))
  })
  return { name: p.name, peer: p.peer, service: p.service, bind, enabled: p.enabled }
}

/** Removes a proxy from config.yaml; returns what it was. */
export async function removeProxyFromFile(file: string, name: string): Promise<ProxyInfo> {
  const { result } = await editConfigFile(file, nodeConfigSchema, (doc, current) => {
    const info = requireProxy(current, name)
    doc.deleteIn(['proxies', name])
    return info
  })
  return result
}

/** Switches a proxy on or off in config.yaml, keeping it; returns it as it is now. */
export async function setProxyEnabledInFile(
  file: string,
  name: string,
  enabled: boolean,
): Promise<ProxyInfo> {
  const { result } = await editConfigFile(file, nodeConfigSchema, (doc, current) => {
    const info = requireProxy(current, name)
    doc.setIn(['proxies', name, 'enabled'], enabled)
    return { ...info, enabled }
  })
  return result
}

/** The proxy named `name`, or a not-found error that lists those there are. */
export function requireProxy(config: NodeConfig, name: string): ProxyInfo {
  const found = listProxies(config).find((p) => p.name === name)
  if (found === undefined) {
    const known = Object.keys(config.proxies)
    throw new NotFoundError(`no proxy named ${name}`, {
      hint:
        known.length === 0
          ? 'add one with `peerup proxy add <name> <peer> <service> [[host:]port]`'
          : `proxies: ${known.join(', ')}`,
    })
  }
  return found
}

function requireNoProxy(config: NodeConfig, name: string): void {
  const p = config.proxies[name]
  if (p !== undefined) {
    throw new ConflictError(`a proxy named ${name} already exists (${p.bind} → ${p.peer}/${p.service})`, {
      hint: `choose another name, or remove it first with \`peerup proxy remove ${name}\``,
    })
  }
}

function requireBindFree(config: NodeConfig, bind: string): void {
  const other = listProxies(config).find((p) => p.bind === bind)
  if (other !== undefined) {
    throw new ConflictError(`proxy ${other.name} already listens on ${bind}`, {
      hint: 'choose another port (or leave it out to pick a free one)',
    })
  }
}
