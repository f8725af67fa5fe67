/**
 * The short authentication string `peerup verify` shows: six digits computed from the two peer
 * ids, the same on both machines whichever runs it. When both people read the same digits, each
 * machine trusts the key the other really has — not one somebody slipped in by using an overheard
 * code first.
 *
 * The ids go through scrypt (about 30 ms) rather than a plain hash: six digits are only 20 bits,
 * and an attacker who wants *its* key to show the same digits as a victim's must now pay 2^20
 * scryptions (hours) instead of 2^20 hashes (a second).
 *
 * @packageDocumentation
 */

import { scryptSync } from 'node:crypto'
import { canonicalPeerId } from '../auth/authorized-keys.ts'

/** The domain separation of the SAS; bump it if the derivation ever changes. */
const SAS_SALT = 'peerup verify v1'

// N = 2^14, r = 8: 16 MiB and tens of milliseconds, well inside Node's default maxmem (32 MiB).
const SCRYPT = { N: 2 ** 14, r: 8, p: 1 } as const

/** The six-digit string, as `123 456`, for the pair of peers (order does not matter). */
export function shortAuthString(a: string, b: string): string {
  const [x, y] = [canonicalPeerId(a), canonicalPeerId(b)].sort()
  const digest = scryptSync(`${x}\n${y}`, SAS_SALT, 8, SCRYPT)
  // 2^64 mod 10^6 bias is below 10^-13: negligible.
  const n = digest.readBigUInt64BE(0) % 1_000_000n
  const digits = n.toString().padStart(6, '0')
  return `${digits.slice(0, 3)} ${digits.slice(3)}`
}
