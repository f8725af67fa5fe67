/**
 * What `peerup auth add|remove|list|validate` do to an authorized_keys file.
 *
 * @packageDocumentation
 */

import * as fs from 'node:fs/promises'
import { withFileLock } from '../util/fs.ts'
import {
  type AuthorizedKeyAttributesInput,
  canonicalPeerId,
  isExpired,
  loadAuthorizedKeys,
  updateAuthorizedKeys,
  validateAuthorizedKeys,
} from './authorized-keys.ts'
import type { AuthorizedKeysError } from './errors.ts'

/** An authorized peer as `auth list` shows it. */
export interface AuthorizedPeer {
  peerId: string
  /** Its name under `names:` in config.yaml, if it has one. */
  name: string | undefined
  comment: string | undefined
  expires: string | undefined
  expired: boolean
  verified: string | undefined
  group: string | undefined
  sponsor: string | undefined
  line: number
}

/** Options of {@link addAuthorizedPeer}. */
export interface AddPeerOptions {
  comment?: string
  attributes?: AuthorizedKeyAttributesInput
}

/** Authorizes a peer; the file is locked, rewritten atomically and keeps its comments. */
export async function addAuthorizedPeer(
  file: string,
  peerId: string,
  options: AddPeerOptions = {},
): Promise<AuthorizedPeer> {
  const id = canonicalPeerId(peerId)
  return withFileLock(file, () =>
    updateAuthorizedKeys(
      file,
      (doc) => {
        const entry = doc.add(id, options)
        return toPeer(entry, {})
      },
      { createIfMissing: true },
    ),
  )
}

/** Removes a peer's authorization. */
export async function removeAuthorizedPeer(file: string, peerId: string): Promise<AuthorizedPeer> {
  const id = canonicalPeerId(peerId)
  return withFileLock(file, () => updateAuthorizedKeys(file, (doc) => toPeer(doc.remove(id), {})))
}

/** Lists the authorized peers, with their names from config.yaml. */
export async function listAuthorizedPeers(
  file: string,
  names: Record<string, string> = {},
  now: Date = new Date(),
): Promise<AuthorizedPeer[]> {
  const doc = await loadAuthorizedKeys(file, { createIfMissing: true })
  return doc.entries().map((e) => toPeer(e, names, now))
}

/** Every problem in the file (empty when it is valid). */
export async function validateAuthorizedKeysFile(file: string): Promise<AuthorizedKeysError[]> {
  await loadAuthorizedKeys(file).catch((err: unknown) => {
    // Mode and existence problems come from loading; line problems are collected below.
    if ((err as { name?: string }).name !== 'AuthorizedKeysError') {
      throw err
    }
  })
  return validateAuthorizedKeys(await fs.readFile(file, 'utf8'), file)
}

function toPeer(
  entry: {
    peerId: string
    comment: string | undefined
    line: number
    attributes: { expires?: Date; verified?: string; group?: string; sponsor?: string }
  },
  names: Record<string, string>,
  now: Date = new Date(),
): AuthorizedPeer {
  return {
    peerId: entry.peerId,
    name: Object.entries(names).find(([, id]) => id === entry.peerId)?.[0],
    comment: entry.comment,
    expires: entry.attributes.expires?.toISOString(),
    expired: isExpired(entry as Parameters<typeof isExpired>[0], now),
    verified: entry.attributes.verified,
    group: entry.attributes.group,
    sponsor: entry.attributes.sponsor,
    line: entry.line,
  }
}

/**
 * Records that a peer was verified out of band (`peerup verify`): `verified=<value>` on its line,
 * which must exist. Returns the peer as `auth list` shows it.
 */
export async function markVerified(file: string, peerId: string, value: string): Promise<AuthorizedPeer> {
  const id = canonicalPeerId(peerId)
  return withFileLock(file, () =>
    updateAuthorizedKeys(file, (doc) => toPeer(doc.setAttribute(id, 'verified', value), {})),
  )
}
