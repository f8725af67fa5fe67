/**
 * What `peerup auth add|remove|list|validate` do to an authorized_keys file.
 *
 * @packageDocumentation
 */

import * as fs from 'node:fs/promises'
import { withFileLock } from '../util/fs.ts'
import {
  type AddPeerOptions,
  type AuthorizedKey,
  type AuthorizedKeys,
  canonicalPeerId,
  isExpired,
  loadAuthorizedKeys,
  updateAuthorizedKeys,
  validateAuthorizedKeys,
} from './authorized-keys.ts'
import type { AuthorizedKeysError } from './errors.ts'

/** An authorized peer as `auth list` shows it. */
export type AuthorizedPeer = ReturnType<typeof toPeer>

/** Authorizes a peer; the file is locked, rewritten atomically and keeps its comments. */
export function addAuthorizedPeer(
  file: string,
  peerId: string,
  options: AddPeerOptions = {},
): Promise<AuthorizedPeer> {
  return editPeer(file, peerId, (doc, id) => doc.add(id, options), true)
}

/** Removes a peer's authorization. */
export function removeAuthorizedPeer(file: string, peerId: string): Promise<AuthorizedPeer> {
  return editPeer(file, peerId, (doc, id) => doc.remove(id))
}

/**
 * Records that a peer was verified out of band (`peerup verify`): `verified=<value>` on its line,
 * which must exist. Returns the peer as `auth list` shows it.
 */
export function markVerified(file: string, peerId: string, value: string): Promise<AuthorizedPeer> {
  return editPeer(file, peerId, (doc, id) => doc.setAttribute(id, 'verified', value))
}

/**
 * Authorizes a peer that pairing brought (the file locked, created when missing); a peer listed
 * already keeps its line and only gets the `group` attribute, when one is given. True when added.
 */
export function authorizePaired(file: string, peerId: string, options: AddPeerOptions): Promise<boolean> {
  const group = options.attributes?.group
  return withFileLock(file, () =>
    updateAuthorizedKeys(
      file,
      (doc) => {
        if (!doc.has(peerId)) {
          doc.add(peerId, options)
          return true
        }
        if (group !== undefined) {
          doc.setAttribute(peerId, 'group', group)
        }
        return false
      },
      { createIfMissing: true },
    ),
  )
}

/** Changes one peer's line, with the file locked, and returns the peer as `auth list` shows it. */
async function editPeer(
  file: string,
  peerId: string,
  edit: (doc: AuthorizedKeys, id: string) => AuthorizedKey,
  createIfMissing = false,
): Promise<AuthorizedPeer> {
  const id = canonicalPeerId(peerId)
  return withFileLock(file, () =>
    updateAuthorizedKeys(file, (doc) => toPeer(edit(doc, id), {}), { createIfMissing }),
  )
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

function toPeer(entry: AuthorizedKey, names: Record<string, string>, now: Date = new Date()) {
  return {
    peerId: entry.peerId,
    // Its name under `names:` in config.yaml, if it has one.
    name: Object.entries(names).find(([, id]) => id === entry.peerId)?.[0],
    comment: entry.comment,
    expires: entry.attributes.expires?.toISOString(),
    expired: isExpired(entry, now),
    verified: entry.attributes.verified,
    group: entry.attributes.group,
    sponsor: entry.attributes.sponsor,
    line: entry.line,
  }
}
