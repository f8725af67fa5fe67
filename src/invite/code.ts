/**
 * The pairing code (docs/pairing.md): what `peerup invite` and `peerup relay pair` print and `peerup join`
 * reads. A versioned binary record, written in Crockford's base32 in dash-separated groups of 4,
 * with a CRC-32 so that a typo is reported as a typo.
 *
 * Layout (every version keeps bytes 0 and the last four as they are here, so any build can tell
 * "made by a newer peerup" from "mistyped"):
 *
 * ```
 * 0      version (1)
 * 1      flags: bit0 group code (issued by a relay: the inviter is the relay itself)
 *               bit1 relay id is an Ed25519 key (32 bytes follow), else a length-prefixed multihash
 *               bit2 inviter id is an Ed25519 key (only without bit0)
 * 2..17  token, 16 random bytes (128 bits): never sent over the wire, only proven (ADR 0003)
 * 18..21 expiry, seconds since the epoch, big-endian
 * …      relay peer id, inviter peer id (not for a group code)
 * …      relay address: a length byte and the multiaddr's bytes (ip4, ip6, dns*, tcp, ws…; no /p2p)
 * …      network namespace: a length byte and ASCII
 * last 4 CRC-32 of everything before, big-endian
 * ```
 *
 * A CRC-32 detects every error burst up to 32 bits; one wrong base32 character flips at most 5
 * adjacent bits and two swapped neighbours at most 10, so every such typo is caught, not just
 * most. Crockford's alphabet has no I, L, O or U, reads `I`/`L` as 1 and `O` as 0, and ignores
 * case, dashes and spaces, so what a person types back mostly just works.
 *
 * This module imports nothing heavy: the CLI loads it statically.
 *
 * @packageDocumentation
 */

import { randomBytes } from 'node:crypto'
import { crc32 } from 'node:zlib'
import { peerIdFromMultihash, peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import * as Digest from 'multiformats/hashes/digest'
import { CodeExpiredError, CodeTypoError, CodeVersionError, MalformedCodeError } from './errors.ts'

/** The code format this build writes and reads. */
export const CODE_VERSION = 1

/** Bytes of the random token: 128 bits. */
export const TOKEN_BYTES = 16

/** What a code holds. */
export interface InviteCode {
  version: number
  /** `peer`: made by `peerup invite`; `group`: one of a relay's group codes (`relay pair`). */
  kind: 'peer' | 'group'
  /** The secret. Never log it, never put it in an error. */
  token: Uint8Array
  /** When the code stops working. Whole seconds. */
  expires: Date
  /** The relay's transport address, without `/p2p/<relay>`: `/ip4/203.0.113.7/tcp/7777`. */
  relayAddress: string
  relayPeerId: string
  /** The peer to pair with; the relay itself for a group code. */
  inviterPeerId: string
  /** `discovery.network` of the inviter: the joiner's config gets the same. */
  network: string
}

/** What {@link createInviteCode} needs; the token is made here unless given (tests). */
export type InviteCodeInput = Omit<InviteCode, 'version' | 'token'> & { token?: Uint8Array }

const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ'
const DECODE = new Map([
  ...[...ALPHABET].map((c, i) => [c, i] as const),
  // Crockford: the letters people confuse with digits read as those digits.
  ['I', 1],
  ['L', 1],
  ['O', 0],
])

const FLAG_GROUP = 1
const FLAG_RELAY_ED25519 = 2
const FLAG_INVITER_ED25519 = 4
const KNOWN_FLAGS = FLAG_GROUP | FLAG_RELAY_ED25519 | FLAG_INVITER_ED25519
// An identity multihash of a protobuf Ed25519 public key: 0x00, length 36, then 08 01 12 20.
const ED25519_PREFIX = Uint8Array.from([0x00, 0x24, 0x08, 0x01, 0x12, 0x20])
const NETWORK_RE = /^$|^[a-z0-9][a-z0-9_-]{0,62}$/
// A code longer than this is not one of ours: a pasted essay must not reach the decoders.
const MAX_CODE_CHARS = 1024
const MAX_EXPIRY_S = 2 ** 32 - 1

/** Makes a fresh code (random token) for `input`. */
export function createInviteCode(input: InviteCodeInput): InviteCode {
  const token = input.token ?? new Uint8Array(randomBytes(TOKEN_BYTES))
  if (token.length !== TOKEN_BYTES) {
    throw new RangeError(`a token is ${TOKEN_BYTES} bytes`)
  }
  return { ...input, version: CODE_VERSION, token: Uint8Array.from(token) }
}

/** Encodes a code as `XXXX-XXXX-…`. Throws RangeError on fields that cannot be encoded. */
export function encodeInviteCode(code: InviteCode): string {
  const chars = base32Encode(toBytes(code))
  return chars.match(/.{1,4}/g)?.join('-') ?? ''
}

/**
 * Decodes a code as a person typed or pasted it (any case, dashes, spaces and line breaks
 * anywhere). Throws {@link MalformedCodeError}, {@link CodeTypoError} or {@link CodeVersionError};
 * it does not check the expiry (see {@link assertNotExpired}).
 */
export function decodeInviteCode(text: string, options: { locateTypo?: boolean } = {}): InviteCode {
  const chars = text.replace(/[\s-]+/g, '').toUpperCase()
  if (chars.length === 0) {
    throw new MalformedCodeError('the pairing code is empty', {
      hint: 'paste the whole code `peerup invite` printed (groups like ABCD-EFGH-…)',
    })
  }
  if (chars.length > MAX_CODE_CHARS) {
    throw new MalformedCodeError(`that is not a pairing code (${chars.length} characters, far too long)`, {
      hint: 'paste only the code `peerup invite` printed',
    })
  }
  // Every valid character is ASCII, so the first invalid one sits at the same index however counted.
  const values = Array.from(chars, (c) => DECODE.get(c) ?? -1)
  const bad = values.indexOf(-1)
  if (bad !== -1) {
    throw new CodeTypoError(
      `the pairing code has a character that cannot be in a code, in group ${Math.floor(bad / 4) + 1}`,
      { hint: 'codes use only digits and the letters A–Z without I, L, O and U; check that group' },
    )
  }
  const bytes = base32Decode(values)
  if (!checksumMatches(bytes)) {
    throw typo(values, options.locateTypo !== false)
  }
  const body = bytes.subarray(0, bytes.length - 4)
  const version = body[0] as number
  if (version > CODE_VERSION) {
    throw new CodeVersionError(
      `this pairing code was made by a newer peerup (code format ${version}, this one reads ${CODE_VERSION})`,
      { hint: 'upgrade peerup on this machine, then run the same command again' },
    )
  }
  if (version !== CODE_VERSION) {
    throw new MalformedCodeError(`that is not a peerup pairing code (format ${version})`)
  }
  try {
    return fromBytes(body)
  } catch (err) {
    // A correct checksum over a record this build cannot parse: a bug or a forged code, not a typo.
    throw new MalformedCodeError('that is not a valid peerup pairing code', { cause: err })
  }
}

/** Throws {@link CodeExpiredError} when `code` has expired at `now`. */
export function assertNotExpired(code: InviteCode, now: Date = new Date()): void {
  if (now.getTime() >= code.expires.getTime()) {
    throw new CodeExpiredError(`the pairing code expired at ${formatExpiry(code.expires)}`, {
      hint: 'ask for a new one (`peerup invite` on the other machine)',
    })
  }
}

/**
 * An expiry as people read it, to the minute, in this machine's time zone with its offset:
 * `2026-12-06 14:05 UTC+01:00`. Invite, join and their errors all print it so.
 */
export function formatExpiry(date: Date): string {
  const pad = (n: number): string => String(n).padStart(2, '0')
  const offset = -date.getTimezoneOffset()
  const sign = offset < 0 ? '-' : '+'
  const abs = Math.abs(offset)
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ${pad(date.getHours())}:${pad(date.getMinutes())} UTC${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`
}

/** The relay's full address, `…/p2p/<relay>`: what the joiner's config gets under `relay.addresses`. */
export function relayMultiaddr(code: InviteCode): string {
  return `${code.relayAddress}/p2p/${code.relayPeerId}`
}

function typo(values: number[], locate: boolean): CodeTypoError {
  // Where a single mistyped character would fix the checksum, say which group (a few thousand
  // CRCs, milliseconds); the code itself never goes into the message.
  const group = locate ? locateTypo(values) : undefined
  return new CodeTypoError(
    group === undefined
      ? 'the pairing code has a typo (its checksum does not match)'
      : `the pairing code has a typo, probably in group ${group}`,
    {
      hint: 'compare it with the original character by character (a missing or extra character counts too), or copy and paste it',
    },
  )
}

/** The 1-based group where changing one character makes the checksum match, when exactly one does. */
function locateTypo(values: number[]): number | undefined {
  if (values.length > 400) {
    return undefined
  }
  const found = new Set<number>()
  const trial = [...values]
  for (let i = 0; i < values.length && found.size <= 1; i++) {
    for (let v = 0; v < 32; v++) {
      if (v === values[i]) {
        continue
      }
      trial[i] = v
      if (checksumMatches(base32Decode(trial))) {
        found.add(Math.floor(i / 4) + 1)
      }
    }
    trial[i] = values[i] as number
  }
  return found.size === 1 ? [...found][0] : undefined
}

/** Whether `bytes` (a record at least 6 bytes long) end with the CRC-32 of what comes before. */
function checksumMatches(bytes: Uint8Array | undefined): bytes is Uint8Array {
  if (bytes === undefined || bytes.length < 6) {
    return false
  }
  const sum = new DataView(bytes.buffer, bytes.byteOffset).getUint32(bytes.length - 4)
  return crc32(bytes.subarray(0, bytes.length - 4)) >>> 0 === sum
}

function toBytes(code: InviteCode): Uint8Array {
  const relayId = peerIdBytes(code.relayPeerId)
  const inviterId = code.kind === 'group' ? undefined : peerIdBytes(code.inviterPeerId)
  if (code.kind === 'group' && code.inviterPeerId !== code.relayPeerId) {
    throw new RangeError('a group code is issued by its relay: inviterPeerId must be the relay')
  }
  let flags = code.kind === 'group' ? FLAG_GROUP : 0
  if (relayId.ed25519) flags |= FLAG_RELAY_ED25519
  if (inviterId?.ed25519 === true) flags |= FLAG_INVITER_ED25519
  if (code.token.length !== TOKEN_BYTES) {
    throw new RangeError(`a token is ${TOKEN_BYTES} bytes`)
  }
  const seconds = Math.floor(code.expires.getTime() / 1000)
  if (!Number.isInteger(seconds) || seconds < 0 || seconds > MAX_EXPIRY_S) {
    throw new RangeError('the expiry cannot be encoded')
  }
  const expiry = Buffer.alloc(4)
  expiry.writeUInt32BE(seconds)
  const addr = multiaddr(code.relayAddress)
  if (addr.getComponents().some((c) => c.name === 'p2p' || c.name === 'p2p-circuit')) {
    throw new RangeError('the relay address must not contain /p2p or /p2p-circuit')
  }
  const address = lengthPrefixed(addr.bytes, 'relay address')
  if (!NETWORK_RE.test(code.network)) {
    throw new RangeError('invalid network name')
  }
  const network = lengthPrefixed(new TextEncoder().encode(code.network), 'network')
  const body = Buffer.concat([
    Uint8Array.of(CODE_VERSION, flags),
    code.token,
    expiry,
    relayId.bytes,
    inviterId?.bytes ?? new Uint8Array(),
    address,
    network,
  ])
  const sum = Buffer.alloc(4)
  sum.writeUInt32BE(crc32(body) >>> 0)
  return Buffer.concat([body, sum])
}

function fromBytes(body: Uint8Array): InviteCode {
  let at = 0
  const take = (n: number): Uint8Array => {
    if (at + n > body.length) {
      throw new RangeError('truncated')
    }
    const out = body.subarray(at, at + n)
    at += n
    return out
  }
  // A length byte, then that many bytes (a copy).
  const takePrefixed = (): Uint8Array => Uint8Array.from(take(take(1)[0] as number))
  const [version, flags] = take(2) as unknown as [number, number]
  if ((flags & ~KNOWN_FLAGS) !== 0) {
    throw new RangeError('unknown flags')
  }
  const kind = (flags & FLAG_GROUP) !== 0 ? 'group' : 'peer'
  if (kind === 'group' && (flags & FLAG_INVITER_ED25519) !== 0) {
    throw new RangeError('a group code has no inviter id')
  }
  const token = Uint8Array.from(take(TOKEN_BYTES))
  const seconds = Buffer.from(take(4)).readUInt32BE()
  const readId = (ed25519: boolean): string => {
    const mh = ed25519 ? Buffer.concat([ED25519_PREFIX, take(32)]) : takePrefixed()
    return peerIdFromMultihash(Digest.decode(mh)).toString()
  }
  const relayPeerId = readId((flags & FLAG_RELAY_ED25519) !== 0)
  const inviterPeerId = kind === 'group' ? relayPeerId : readId((flags & FLAG_INVITER_ED25519) !== 0)
  const relayAddress = multiaddr(takePrefixed()).toString()
  const network = new TextDecoder('utf-8', { fatal: true }).decode(takePrefixed())
  if (!NETWORK_RE.test(network) || at !== body.length) {
    throw new RangeError('bad network or trailing bytes')
  }
  return {
    version,
    kind,
    token,
    expires: new Date(seconds * 1000),
    relayAddress,
    relayPeerId,
    inviterPeerId,
    network,
  }
}

function peerIdBytes(id: string): { ed25519: boolean; bytes: Uint8Array } {
  const mh = peerIdFromString(id).toMultihash().bytes
  const ed25519 = mh.length === ED25519_PREFIX.length + 32 && ED25519_PREFIX.every((b, i) => mh[i] === b)
  return ed25519
    ? { ed25519, bytes: mh.subarray(ED25519_PREFIX.length) }
    : { ed25519, bytes: lengthPrefixed(mh, 'peer id') }
}

function lengthPrefixed(bytes: Uint8Array, what: string): Uint8Array {
  if (bytes.length > 255) {
    throw new RangeError(`the ${what} is too long to encode`)
  }
  return Buffer.concat([Uint8Array.of(bytes.length), bytes])
}

function base32Encode(bytes: Uint8Array): string {
  let out = ''
  let buffer = 0
  let bits = 0
  for (const b of bytes) {
    buffer = (buffer << 8) | b
    bits += 8
    while (bits >= 5) {
      out += ALPHABET[(buffer >>> (bits - 5)) & 31]
      bits -= 5
    }
    buffer &= (1 << bits) - 1
  }
  if (bits > 0) {
    out += ALPHABET[(buffer << (5 - bits)) & 31]
  }
  return out
}

/** Base32 values to bytes; undefined when the padding bits are not zero (a sure typo). */
function base32Decode(values: number[]): Uint8Array | undefined {
  const out = new Uint8Array(Math.floor((values.length * 5) / 8))
  let buffer = 0
  let bits = 0
  let n = 0
  for (const v of values) {
    buffer = (buffer << 5) | v
    bits += 5
    if (bits >= 8) {
      out[n++] = (buffer >>> (bits - 8)) & 0xff
      bits -= 8
    }
    buffer &= (1 << bits) - 1
  }
  // Leftover bits are padding: an encoder always writes zeros there. More than 7 means a
  // character too many.
  if (bits >= 5 || buffer !== 0) {
    return undefined
  }
  return out
}
