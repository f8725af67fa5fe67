/**
 * `/peerup/nameplate/1.0.0`: how a joiner holding a short code (`7-acorn-zebra`) finds the inviter.
 * It asks the relay it was told of, over its own direct connection, for the member whose open
 * invite holds the nameplate; the relay answers with that member's peer id and network, or that
 * nobody holds it. The answer is not trusted for anything but where to dial: the PAKE that follows
 * proves (or not) that whoever answers there knows the words (docs/decisions/0013-short-codes-cpace.md),
 * and a lying relay gets one guess at them, like anyone. Asking costs no code anything.
 *
 * One request, one answer, length-prefixed JSON (src/invite/protocol.ts `requestOnce`). The relay's side
 * is src/relay/nameplates.ts.
 *
 * @packageDocumentation
 */

import type { Stream } from '@libp2p/interface'
import { z } from 'zod'
import { PairingProtocolError } from './errors.ts'
import { PAIRING_VERSION, requestOnce, STEP_TIMEOUT_MS } from './protocol.ts'
import { MAX_NAMEPLATE } from './short-code.ts'

export const NAMEPLATE_PROTOCOL = '/peerup/nameplate/1.0.0'

/** The joiner's question. */
export const nameplateRequest = z.strictObject({
  v: z.number().int(),
  nameplate: z.number().int().min(1).max(MAX_NAMEPLATE),
})

export type NameplateRequest = z.infer<typeof nameplateRequest>

/** The relay's answer. */
export const nameplateResponse = z.strictObject({
  ok: z.boolean(),
  /** The member holding the nameplate. */
  peer: z.string().min(1).max(128).optional(),
  /** Its `discovery.network`, for a joiner that makes its config now. */
  network: z.string().max(63).optional(),
})

export type NameplateResponse = z.infer<typeof nameplateResponse>

/** Asks, on `stream` to the relay, who holds `nameplate`; resolves with the answer. */
export async function askNameplate(
  stream: Stream,
  nameplate: number,
  signal: AbortSignal = AbortSignal.timeout(STEP_TIMEOUT_MS),
): Promise<NameplateResponse> {
  const request: NameplateRequest = { v: PAIRING_VERSION, nameplate }
  const answer = await requestOnce(stream, request, nameplateResponse, signal)
  if (answer === undefined) {
    throw new PairingProtocolError('the relay sent a malformed answer about the short code')
  }
  return answer
}
