/**
 * `/peerup/relay-admin/1.0.0`: what a node asks of its relay after pairing. The caller is whoever
 * the noise handshake says it is, so the relay decides on an authenticated peer id alone:
 *
 * - `sponsor { peer, name }`: authorize the peer that just paired with me (docs/pairing.md); the relay
 *   records `sponsor=<caller>` and applies its `security.sponsoring` policy.
 * - `members`: the members of the relay groups I belong to, so a member that missed an
 *   introduction (it was offline when others joined) can catch up.
 * - `invite-open { ttl_ms }` / `invite-close`: I wait for a joiner now / no longer; only meanwhile
 *   may a stranger reach me through the relay, and be sponsored (src/relay/invites.ts).
 * - `invite-spent { code, reason, ttl_ms }`: my invite's code was used (or burned); `code` is its
 *   spent id (src/invite/protocol.ts `deriveKeys`), never its code id, and until the code would
 *   have expired the relay says so to a joiner that asks (src/relay/invites.ts).
 * - `nameplate-claim { ttl_ms, network }` / `nameplate-release`: give my open invite a nameplate, the
 *   number of its short code (`7-acorn-zebra`), until it expires / no longer. A joiner that knows
 *   the number asks for me on `/peerup/nameplate/1.0.0` (src/invite/nameplate.ts); `invite-close`
 *   releases it too. A relay from before short codes answers "malformed request": no short code.
 *
 * One request, one answer, each a length-prefixed JSON frame under {@link MAX_MESSAGE_BYTES}.
 * The wire contract lives here; the relay's side is src/relay/sponsoring.ts.
 *
 * @packageDocumentation
 */

import type { Connection } from '@libp2p/interface'
import { z } from 'zod'
import { PairingProtocolError } from './errors.ts'
import { groupMember, requestOnce, STEP_TIMEOUT_MS } from './protocol.ts'
import { MAX_NAMEPLATE } from './short-code.ts'

export const RELAY_ADMIN_PROTOCOL = '/peerup/relay-admin/1.0.0'

/** Longest an invite may be registered for (the CLI's `--ttl` is capped below this). */
export const MAX_INVITE_TTL_MS = 7 * 24 * 3_600_000

const ttlMs = z.number().int().min(1).max(MAX_INVITE_TTL_MS)

/** A request to the relay. */
export const relayAdminRequest = z.discriminatedUnion('type', [
  z.strictObject({
    type: z.literal('sponsor'),
    peer: groupMember.shape.peerId,
    name: groupMember.shape.name,
  }),
  z.strictObject({ type: z.literal('members') }),
  z.strictObject({ type: z.literal('invite-open'), ttl_ms: ttlMs }),
  z.strictObject({ type: z.literal('invite-close') }),
  z.strictObject({
    type: z.literal('invite-spent'),
    code: z.string().regex(/^[0-9a-f]{16}$/),
    reason: z.enum(['used', 'burned']),
    ttl_ms: ttlMs,
  }),
  z.strictObject({
    type: z.literal('nameplate-claim'),
    ttl_ms: ttlMs,
    network: z.string().regex(/^$|^[a-z0-9][a-z0-9_-]{0,62}$/),
  }),
  z.strictObject({ type: z.literal('nameplate-release') }),
])

export type RelayAdminRequest = z.infer<typeof relayAdminRequest>

/** The relay's answer. */
export const relayAdminResponse = z.strictObject({
  ok: z.boolean(),
  /** Why not, worded for the person: `sponsoring is off on this relay`. */
  reason: z.string().max(300).optional(),
  /** For `members`: every group the caller is in, with its members (the caller included). */
  groups: z
    .array(z.strictObject({ id: z.string().max(64), members: z.array(groupMember).max(1000) }))
    .max(100)
    .optional(),
  /** For `nameplate-claim`: the number of the caller's short code. */
  nameplate: z.number().int().min(1).max(MAX_NAMEPLATE).optional(),
})

export type RelayAdminResponse = z.infer<typeof relayAdminResponse>

/** Sends one request on a connection to the relay and returns its answer. */
export async function askRelay(
  connection: Connection,
  request: RelayAdminRequest,
  signal: AbortSignal = AbortSignal.timeout(STEP_TIMEOUT_MS),
): Promise<RelayAdminResponse> {
  const stream = await connection.newStream(RELAY_ADMIN_PROTOCOL, { signal })
  const answer = await requestOnce(stream, request, relayAdminResponse, signal)
  if (answer === undefined) {
    throw new PairingProtocolError('the relay sent a malformed answer')
  }
  return answer
}
