/**
 * The node's identity: an Ed25519 private key stored in libp2p's protobuf form, the same bytes
 * go-libp2p's `crypto.MarshalPrivateKey` writes, so a key moves between the Go original and
 * peerup unchanged.
 *
 * @packageDocumentation
 */

import * as fs from 'node:fs/promises'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { PeerupError } from '../errors.ts'
import { atomicWriteFile, checkFileMode } from '../util/fs.ts'

/** The identity key file is missing, unreadable or not a key. */
export class IdentityError extends PeerupError {
  override name = 'IdentityError'
}

/**
 * Creates a new Ed25519 identity at `file` (mode 0600, never replacing an existing file) and
 * returns it.
 */
export async function createIdentity(file: string): Promise<PrivateKey> {
  const key = await generateKeyPair('Ed25519')
  try {
    await atomicWriteFile(file, privateKeyToProtobuf(key), { mode: 0o600, exclusive: true })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new IdentityError(`${file} already exists`, {
        hint: 'peerup never overwrites an identity; remove it first if you really mean to',
      })
    }
    throw err
  }
  return key
}

/** Loads the identity at `file`, refusing a key file other users can read. */
export async function loadIdentity(file: string): Promise<PrivateKey> {
  let bytes: Uint8Array
  try {
    await checkFileMode(file, 'secret')
    bytes = await fs.readFile(file)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new IdentityError(`identity key ${file} does not exist`, {
        hint: 'run `peerup init` to create one',
      })
    }
    throw err
  }
  try {
    return privateKeyFromProtobuf(bytes)
  } catch (err) {
    throw new IdentityError(`${file} is not a libp2p private key`, {
      hint: 'restore it from a backup, or move it away and run `peerup init` for a new identity',
      cause: err,
    })
  }
}

/** The peer id (`12D3KooW…`) of a private key. */
export function peerIdOf(key: PrivateKey): string {
  return peerIdFromPrivateKey(key).toString()
}
