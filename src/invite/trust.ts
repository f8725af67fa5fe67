/**
 * What pairing writes on a node: the other peer in authorized_keys (its name as the comment) and
 * under `names:`. Both writes are atomic and idempotent, so a peer paired twice keeps one line
 * and one name, and a daemon watching authorized_keys picks the peer up at once.
 *
 * @packageDocumentation
 */

import { canonicalPeerId, sanitizeComment } from '../auth/authorized-keys.ts'
import { authorizePaired } from '../auth/ops.ts'
import { editConfigFile, ensureMap } from '../config/edit.ts'
import { nodeConfigSchema } from '../config/schema.ts'
import { usableName } from './names.ts'

export interface TrustOptions {
  authorizedKeysFile: string
  /** The node's config.yaml, for `names:`; omit to record no name. */
  configFile?: string
  peerId: string
  /** The name the peer gave itself; made unique and valid here, or dropped. */
  name?: string
  /** `group=` on the authorized_keys line (relay group codes). */
  group?: string
  /** Extra text for the comment (after the name). */
  note?: string
}

/**
 * What {@link trustPeer} did: the name recorded under `names:` (the peer's existing one, if it had
 * one), and whether the peer was added (false when it was in authorized_keys already).
 */
export type Trusted = Awaited<ReturnType<typeof trustPeer>>

/** Authorizes a peer and records its name. */
export async function trustPeer(options: TrustOptions) {
  const peerId = canonicalPeerId(options.peerId)
  const wanted = usableName(options.name)
  const comment = sanitizeComment([wanted ?? options.name, options.note].filter(Boolean).join(' '))
  const added = await authorizePaired(options.authorizedKeysFile, peerId, {
    ...(comment === undefined ? {} : { comment }),
    attributes: options.group === undefined ? {} : { group: options.group },
  })
  if (options.configFile === undefined) {
    return { peerId, name: undefined, added }
  }
  const { result: name } = await editConfigFile(options.configFile, nodeConfigSchema, (doc, current) => {
    const existing = Object.entries(current.names).find(([, id]) => id === peerId)?.[0]
    if (existing !== undefined || wanted === undefined) {
      return existing
    }
    const free = freeName(wanted, current.names)
    if (free !== undefined) {
      ensureMap(doc, ['names']).set(free, peerId)
    }
    return free
  })
  return { peerId, name, added }
}

/** `name`, or `name-2`, `name-3`… — the first that no other peer uses. */
function freeName(name: string, names: Record<string, string>): string | undefined {
  for (let i = 1; i < 100; i++) {
    const candidate = i === 1 ? name : `${name.slice(0, 59)}-${i}`
    if (names[candidate] === undefined) {
      return candidate
    }
  }
  return undefined
}
