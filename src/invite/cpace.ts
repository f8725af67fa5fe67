/**
 * CPace over ristretto255 with SHA-512 (draft-irtf-cfrg-cpace, the `CPACE-RISTR255-SHA512` suite):
 * a balanced PAKE that turns the low-entropy words of a short invite code into a strong shared key
 * (docs/decisions/0013-short-codes-cpace.md). The group and hash come from `@noble/curves` and
 * `@noble/hashes`; this module only strings them together as the draft says, and
 * test/unit/invite/cpace.test.ts checks it against the draft's ristretto255 test vectors.
 *
 * One run, initiator A (the joiner) and responder B (the inviter):
 *
 * ```
 * g   = element_derivation(SHA-512(lv_cat("CPaceRistretto255", PRS, zpad, CI, sid)))
 * Ya  = ya·g  → B          Yb = yb·g  → A
 * K   = ya·Yb = yb·Ya      (either side aborts when K is the identity or Y does not decode)
 * ISK = SHA-512(lv_cat("CPaceRistretto255_ISK", sid, K) ‖ lv_cat(Ya, ADa) ‖ lv_cat(Yb, ADb))
 * ```
 *
 * An eavesdropper (or the relay) sees Ya and Yb, which are uniformly random group elements whatever
 * the password: it has nothing to test a guess against. An active party learns one bit (its one
 * guess was right or wrong) per run, and only through the key confirmation that follows.
 *
 * @packageDocumentation
 */

import { randomBytes } from 'node:crypto'
import { ristretto255, ristretto255_hasher } from '@noble/curves/ed25519.js'
import { sha512 } from '@noble/hashes/sha2.js'

const DSI = new TextEncoder().encode('CPaceRistretto255')
const DSI_ISK = new TextEncoder().encode('CPaceRistretto255_ISK')
/** SHA-512's input block: the zero padding makes DSI ‖ PRS fill it (the draft's `s_in_bytes`). */
const SHA512_BLOCK_BYTES = 128
/** Ristretto255 encodings are 32 bytes. */
export const CPACE_ELEMENT_BYTES = 32

const Point = ristretto255.Point
const ORDER = Point.Fn.ORDER

/** The inputs both sides share (the draft's PRS, CI and sid). */
export interface CPaceInputs {
  /** The password-related string: the low-entropy secret. */
  prs: Uint8Array
  /** The channel identifier: both parties' identities, bound into the generator. */
  ci: Uint8Array
  /** The session id: fresh per run. */
  sid: Uint8Array
}

/** LEB128 length, then the bytes (the draft's `prepend_len`). */
export function prependLen(data: Uint8Array): Uint8Array {
  const len: number[] = []
  let n = data.length
  do {
    len.push((n & 0x7f) | (n >= 128 ? 0x80 : 0))
    n >>>= 7
  } while (n > 0)
  return concat([Uint8Array.from(len), data])
}

/** The draft's `lv_cat`: each argument length-prefixed, concatenated. */
export function lvCat(...parts: Uint8Array[]): Uint8Array {
  return concat(parts.map(prependLen))
}

/** The generator for `inputs` (`G.calculate_generator`). */
export function calculateGenerator(inputs: CPaceInputs): InstanceType<typeof Point> {
  const zpad = Math.max(0, SHA512_BLOCK_BYTES - 1 - prependLen(inputs.prs).length - prependLen(DSI).length)
  const genStr = lvCat(DSI, inputs.prs, new Uint8Array(zpad), inputs.ci, inputs.sid)
  return ristretto255_hasher.deriveToCurve!(sha512(genStr))
}

/** A scalar as the draft recommends: 32 random bytes, top 4 bits cleared, little-endian. */
export function sampleScalar(): Uint8Array {
  const bytes = new Uint8Array(randomBytes(32))
  bytes[31] = (bytes[31] as number) & 0x0f
  return bytes
}

/** One side of a run: its share to send, and {@link CPaceParty.finish} once the other's arrives. */
export class CPaceParty {
  readonly #role: 'initiator' | 'responder'
  readonly #sid: Uint8Array
  readonly #scalar: bigint
  readonly #ad: Uint8Array
  /** This side's public share, encoded. */
  readonly share: Uint8Array

  /**
   * `scalar` is for the draft's test vectors only; a real run samples a fresh one. `ad` is this
   * side's associated data (ADa or ADb).
   */
  constructor(
    role: 'initiator' | 'responder',
    inputs: CPaceInputs,
    options: { ad?: Uint8Array; scalar?: Uint8Array } = {},
  ) {
    this.#role = role
    this.#sid = inputs.sid
    this.#ad = options.ad ?? new Uint8Array()
    this.#scalar = scalarOf(options.scalar ?? sampleScalar())
    this.share = calculateGenerator(inputs).multiply(this.#scalar).toBytes()
  }

  /**
   * The intermediate session key from the other side's share, or undefined when that share does
   * not decode or gives the identity (the draft's abort: the run must end there).
   */
  finish(theirShare: Uint8Array, theirAd: Uint8Array = new Uint8Array()): Uint8Array | undefined {
    const k = scalarMultVfy(this.#scalar, theirShare)
    if (k === undefined) {
      return undefined
    }
    const [ya, ada, yb, adb] =
      this.#role === 'initiator'
        ? [this.share, this.#ad, theirShare, theirAd]
        : [theirShare, theirAd, this.share, this.#ad]
    return sha512(concat([lvCat(DSI_ISK, this.#sid, k), lvCat(ya, ada), lvCat(yb, adb)]))
  }
}

/** `G.scalar_mult_vfy`: y·decode(X) encoded, or undefined when X does not decode or the result is the identity. */
export function scalarMultVfy(scalar: bigint, encoded: Uint8Array): Uint8Array | undefined {
  if (encoded.length !== CPACE_ELEMENT_BYTES) {
    return undefined
  }
  let point: InstanceType<typeof Point>
  try {
    point = Point.fromBytes(encoded)
  } catch {
    return undefined
  }
  // A prime-order group: the product is the identity only when the point is.
  if (point.is0()) {
    return undefined
  }
  return point.multiply(scalar).toBytes()
}

/** A little-endian scalar as a non-zero integer below the group order (a zero one is resampled). */
function scalarOf(bytes: Uint8Array): bigint {
  let n = 0n
  for (let i = bytes.length - 1; i >= 0; i--) {
    n = (n << 8n) | BigInt(bytes[i] as number)
  }
  n %= ORDER
  return n === 0n ? scalarOf(sampleScalar()) : n
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((sum, p) => sum + p.length, 0))
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.length
  }
  return out
}
