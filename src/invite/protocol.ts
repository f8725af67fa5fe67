/**
 * The pairing exchange on `/peerup/invite/1.0.0` (ADR 0003). The libp2p connection (noise)
 * already authenticates both peer ids and encrypts everything, so what is left to prove is that
 * the joiner holds the code's token — without the token ever crossing the wire:
 *
 * ```
 * joiner → inviter  hello      { v, code: id(token), nonce: nJ }          (short code: + pake: Ya)
 * inviter → joiner  challenge  { nonce: nI }                              (short code: + pake: Yb)
 * joiner → inviter  proof      { mac: HMAC(K, "joiner"  ‖ inviter ‖ joiner ‖ nI ‖ nJ), name }
 * inviter → joiner  accept     { mac: HMAC(K, "inviter" ‖ inviter ‖ joiner ‖ nI ‖ nJ), name, … }
 *                   (a relay's group code: member… then complete, while the group fills)
 * joiner → inviter  done
 * ```
 *
 * K and id(token) are HKDF-SHA256 outputs of the token under different labels: the id names the
 * code without revealing the key, the MACs are bound to both authenticated peer ids and to fresh
 * nonces of both sides, so a proof is useless on any other connection and a wrong guess learns
 * nothing but "wrong". Either side refuses with `error { reason }` and closes.
 *
 * A short code (`7-acorn-zebra`, src/invite/short-code.ts) has no token: its hello names
 * id(nameplate) and carries the joiner's CPace share, the challenge carries the inviter's, and K
 * is derived from CPace's session key (src/invite/cpace.ts), so the proof and accept MACs are the
 * PAKE's key confirmation (docs/decisions/0013-short-codes-cpace.md).
 *
 * Every message is one length-prefixed JSON frame of at most {@link MAX_MESSAGE_BYTES}, checked
 * against a schema; every read has a deadline.
 *
 * @packageDocumentation
 */

import { createHmac, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto'
import type { Stream } from '@libp2p/interface'
import { lpStream } from '@libp2p/utils'
import { z } from 'zod'
import { CPACE_ELEMENT_BYTES, type CPaceInputs, lvCat } from './cpace.ts'
import { PairingProtocolError } from './errors.ts'
import { type ShortCode, shortCodePassword } from './short-code.ts'

export const INVITE_PROTOCOL = '/peerup/invite/1.0.0'

/** Protocol version inside the hello. */
export const PAIRING_VERSION = 1

/** Largest frame either side accepts. */
export const MAX_MESSAGE_BYTES = 4096

/** How long one step may take before the exchange is abandoned. */
export const STEP_TIMEOUT_MS = 15_000

/**
 * Wrong proofs after which one peer is refused a code from then on. Only a proof against the real
 * code id counts: a hello naming a code that is not there is refused (`unknown-code`) and costs
 * nothing, or anyone who can reach the inviter could burn its code without knowing anything.
 */
export const MAX_FAILED_PROOFS = 3

/**
 * Wrong proofs, from all peers together, after which a code burns for everyone. The code id is an
 * HKDF output of the token and only ever travels inside the encrypted connection, so whoever
 * presents the right id with a wrong proof has seen the code (or runs a broken peerup): not a
 * guesser, since neither the 128-bit token nor the MAC key can be guessed in any number of online
 * tries. Peer ids cost nothing, so without this ceiling such a party could go on forever under new
 * identities, 3 tries each; at 10 (3 peers shut out, then one more) the code is plainly in the
 * wrong hands and is better replaced, while one broken joiner alone cannot burn it.
 */
export const MAX_FAILED_PROOFS_PER_CODE = 10

/** Options to `handle()` and `dialProtocol()`: pairing runs on the limited circuit an unknown peer gets. */
export const INVITE_STREAM_OPTIONS = {
  runOnLimitedConnection: true,
  maxInboundStreams: 4,
  maxOutboundStreams: 4,
} as const

const NONCE_BYTES = 32
const CODE_ID_BYTES = 8
const HKDF_SALT = 'peerup invite v1'
const hex = (bytes: number) => z.string().regex(new RegExp(`^[0-9a-f]{${bytes * 2}}$`))
const peerName = z.string().max(63)
const peerIdText = z.string().min(1).max(128)

/** Why a side refused. */
export type RefusalReason =
  /** The hello named a code this side does not have (open or not): it counts as nothing. */
  | 'unknown-code'
  | 'wrong-proof'
  | 'burned'
  | 'used'
  | 'expired'
  | 'busy'
  | 'revoked'
  | 'bad-message'
  | 'failed'

/** A member of a relay group, as the relay introduces it (and lists it: src/invite/relay-admin.ts). */
export const groupMember = z.strictObject({ peerId: peerIdText, name: peerName.optional() })

/** A member of a relay group, as the relay introduces it. */
export type GroupMember = z.infer<typeof groupMember>

const messages = {
  hello: z.strictObject({
    type: z.literal('hello'),
    v: z.number().int(),
    code: hex(CODE_ID_BYTES),
    nonce: hex(NONCE_BYTES),
    /** A short code's CPace share (Ya): K is then derived from the PAKE's key, not from a token. */
    pake: hex(CPACE_ELEMENT_BYTES).optional(),
  }),
  challenge: z.strictObject({
    type: z.literal('challenge'),
    nonce: hex(NONCE_BYTES),
    /** The inviter's CPace share (Yb), in answer to a short code's hello. */
    pake: hex(CPACE_ELEMENT_BYTES).optional(),
  }),
  proof: z.strictObject({ type: z.literal('proof'), mac: hex(32), name: peerName.optional() }),
  accept: z.strictObject({
    type: z.literal('accept'),
    mac: hex(32),
    name: peerName.optional(),
    /** The inviter asked the relay to authorize the joiner: what the relay said. */
    sponsored: z.strictObject({ ok: z.boolean(), reason: z.string().max(300).optional() }).optional(),
    /** A relay group: its id, size, and the members that joined before. */
    group: z
      .strictObject({
        id: z.string().max(64),
        size: z.number().int().min(1).max(1000),
        members: z.array(groupMember).max(1000),
      })
      .optional(),
  }),
  member: z.strictObject({ type: z.literal('member'), ...groupMember.shape }),
  complete: z.strictObject({ type: z.literal('complete') }),
  done: z.strictObject({ type: z.literal('done') }),
  error: z.strictObject({
    type: z.literal('error'),
    // Any plain word, not only the RefusalReasons this build knows: a reason a newer peerup
    // adds then reads as a refusal, named, instead of as a malformed message (as `unknown-code`
    // does to a build from before it).
    reason: z.string().regex(/^[a-z0-9-]{1,32}$/),
    remaining: z.number().int().min(0).optional(),
  }),
}

/** A message of the exchange. */
export type PairingMessage = {
  [K in keyof typeof messages]: z.infer<(typeof messages)[K]>
}[keyof typeof messages]

type MessageOf<T extends PairingMessage['type']> = Extract<PairingMessage, { type: T }>

/**
 * Derives the code id, the MAC key and the spent id from a token (HKDF-SHA256, distinct labels).
 * The code id names the code on the wire and reveals nothing about the key. The spent id names the
 * code to its relay once the code is spent (used, or burned): the inviter tells the relay, and a
 * joiner that finds no invite open asks it in a hello, in place of the code id
 * (src/relay/invites.ts). It reveals neither the code id nor the key, so asking costs a code that
 * is still open nothing.
 */
export function deriveKeys(token: Uint8Array) {
  const id = (label: string): string =>
    Buffer.from(hkdfSync('sha256', token, HKDF_SALT, label, CODE_ID_BYTES)).toString('hex')
  const key = new Uint8Array(hkdfSync('sha256', token, HKDF_SALT, 'proof key', 32))
  return { codeId: id('code id'), key, spentId: id('spent id') }
}

/**
 * The CPace inputs of a short code's run (docs/decisions/0013-short-codes-cpace.md): the words are
 * the password; the channel identifier binds the protocol version, both peer ids as the connection
 * authenticated them and the nameplate, so that a run cannot be spliced onto another connection
 * or code; the joiner's fresh nonce is the session id.
 */
export function shortCodeCPace(
  code: ShortCode,
  ids: { inviter: string; joiner: string },
  joinerNonce: string,
): CPaceInputs {
  const text = (s: string): Uint8Array => new TextEncoder().encode(s)
  return {
    prs: shortCodePassword(code),
    ci: lvCat(
      text(`${HKDF_SALT} short code ${PAIRING_VERSION}`),
      text(ids.inviter),
      text(ids.joiner),
      text(String(code.nameplate)),
    ),
    sid: Uint8Array.from(Buffer.from(joinerNonce, 'hex')),
  }
}

/** The MAC key of a short code's run, from CPace's intermediate session key. */
export function pakeProofKey(isk: Uint8Array): Uint8Array {
  return new Uint8Array(hkdfSync('sha256', isk, HKDF_SALT, 'short code proof key', 32))
}

/** The MAC one side sends: bound to its role, both peer ids and both nonces. */
export function proofMac(
  key: Uint8Array,
  role: 'joiner' | 'inviter',
  ids: { inviter: string; joiner: string },
  nonces: { inviter: string; joiner: string },
): string {
  return createHmac('sha256', key)
    .update(['peerup invite v1', role, ids.inviter, ids.joiner, nonces.inviter, nonces.joiner].join('\n'))
    .digest('hex')
}

/** Compares two hex MACs in constant time. */
export function macEquals(a: string, b: string): boolean {
  const x = Buffer.from(a, 'hex')
  const y = Buffer.from(b, 'hex')
  return x.length === 32 && y.length === 32 && timingSafeEqual(x, y)
}

/** A fresh nonce, hex. */
export function freshNonce(): string {
  return randomBytes(NONCE_BYTES).toString('hex')
}

/** Length-prefixed, size-capped, schema-checked JSON frames on a stream. */
export class Framed {
  readonly stream: Stream
  readonly #lp: ReturnType<typeof lpStream<Stream>>

  constructor(stream: Stream) {
    this.stream = stream
    this.#lp = lpStream(stream, { maxDataLength: MAX_MESSAGE_BYTES, maxBufferSize: 4 * MAX_MESSAGE_BYTES })
  }

  async send(message: PairingMessage, signal?: AbortSignal): Promise<void> {
    const bytes = new TextEncoder().encode(JSON.stringify(message))
    if (bytes.length > MAX_MESSAGE_BYTES) {
      throw new PairingProtocolError('a pairing message would be too large')
    }
    await this.#lp.write(bytes, { signal: signal ?? AbortSignal.timeout(STEP_TIMEOUT_MS) })
  }

  /**
   * Reads the next message, which must be one of `types` (or an `error`, returned as is).
   * Throws {@link PairingProtocolError} on a timeout, an oversized or malformed frame, or the end
   * of the stream.
   */
  async read<T extends PairingMessage['type']>(
    types: T[],
    options: { signal?: AbortSignal; timeoutMs?: number } = {},
  ): Promise<MessageOf<T> | MessageOf<'error'>> {
    const signal = AbortSignal.any([
      AbortSignal.timeout(options.timeoutMs ?? STEP_TIMEOUT_MS),
      ...(options.signal === undefined ? [] : [options.signal]),
    ])
    let raw: Uint8Array
    try {
      raw = (await this.#lp.read({ signal })).subarray()
    } catch (err) {
      options.signal?.throwIfAborted()
      const name = (err as Error).name
      const why =
        name === 'InvalidDataLengthError' || name === 'InvalidDataLengthLengthError'
          ? 'the other side sent an oversized message'
          : name === 'TimeoutError' || name === 'AbortError'
            ? 'the other side stopped answering'
            : 'the other side closed the connection'
      throw new PairingProtocolError(`pairing broke off: ${why}`, { cause: err })
    }
    let parsed: unknown
    try {
      parsed = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(raw))
    } catch (err) {
      throw new PairingProtocolError('pairing broke off: the other side sent a malformed message', {
        cause: err,
      })
    }
    const type = (parsed as { type?: unknown } | null)?.type
    const wanted = [...types, 'error'] as Array<keyof typeof messages>
    if (typeof type !== 'string' || !wanted.includes(type as keyof typeof messages)) {
      throw new PairingProtocolError(`pairing broke off: unexpected message (wanted ${types.join(' or ')})`)
    }
    const checked = messages[type as keyof typeof messages].safeParse(parsed)
    if (!checked.success) {
      throw new PairingProtocolError(`pairing broke off: malformed ${type} message`)
    }
    return checked.data as MessageOf<T> | MessageOf<'error'>
  }

  /** Sends a refusal (best effort) and closes the stream. */
  async refuse(reason: RefusalReason, remaining?: number): Promise<void> {
    await this.send({ type: 'error', reason, ...(remaining === undefined ? {} : { remaining }) }).catch(
      () => {},
    )
    await this.close()
  }

  /** Closes the stream for writing, then entirely; never throws. */
  close(): Promise<void> {
    return closeStream(this.stream)
  }
}

/**
 * One request, one answer, on a fresh `stream` (the relay-admin and nameplate protocols): writes
 * `request` as a length-prefixed JSON frame, reads one back and checks it against `schema`.
 * Resolves with the answer, or undefined when it is malformed; closes the stream either way.
 */
export async function requestOnce<T>(
  stream: Stream,
  request: unknown,
  schema: z.ZodType<T>,
  signal: AbortSignal,
): Promise<T | undefined> {
  const lp = lpStream(stream, { maxDataLength: MAX_MESSAGE_BYTES })
  try {
    await lp.write(new TextEncoder().encode(JSON.stringify(request)), { signal })
    const raw = (await lp.read({ signal })).subarray()
    return schema.safeParse(parseJson(raw)).data
  } finally {
    await closeStream(stream)
  }
}

/**
 * The other side of {@link requestOnce}: reads one request from `stream`, checks it against
 * `schema`, and writes what `decide` makes of it (or `malformed` for a request that does not
 * parse), within {@link STEP_TIMEOUT_MS}. The caller closes the stream.
 */
export async function answerOnce<Q, A>(
  stream: Stream,
  schema: z.ZodType<Q>,
  decide: (request: Q) => A | Promise<A>,
  malformed: A,
): Promise<void> {
  const lp = lpStream(stream, { maxDataLength: MAX_MESSAGE_BYTES })
  const signal = AbortSignal.timeout(STEP_TIMEOUT_MS)
  const checked = schema.safeParse(parseJson((await lp.read({ signal })).subarray()))
  const answer = checked.success ? await decide(checked.data) : malformed
  await lp.write(new TextEncoder().encode(JSON.stringify(answer)), { signal })
}

/** UTF-8 JSON, or undefined when it is not. */
function parseJson(raw: Uint8Array): unknown {
  try {
    return JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(raw))
  } catch {
    return undefined
  }
}

/** Closes `stream` for writing, then entirely (aborting it when that takes over 2 s); never throws. */
export async function closeStream(stream: Stream): Promise<void> {
  await stream.close({ signal: AbortSignal.timeout(2_000) }).catch(() => stream.abort(new Error('closed')))
}
