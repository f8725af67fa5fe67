/**
 * `/peerup/relay-notify/1.0.0`: what a relay tells a peer connected to it about that peer's
 * standing, so that the peer's reservation supervisor (src/p2p/reservations.ts) need not wait for
 * its next try:
 *
 * - `authorized`: relay_authorized_keys now holds you (the operator ran `peerup relay authorize`,
 *   or a member sponsored you): ask for your reservation again now.
 * - `refused { reason }`: why your reservation was refused, in the relay's words
 *   (`not in relay_authorized_keys`): the circuit relay protocol itself says only
 *   `PERMISSION_DENIED`.
 *
 * The relay opens the stream, writes one length-prefixed JSON frame and closes it; nothing is
 * answered. The node takes a notice only from a relay of its config. The relay's side is
 * src/relay/relay-components.ts (`RelayNotices`).
 *
 * @packageDocumentation
 */

import type { Connection, Stream } from '@libp2p/interface'
import { lpStream } from '@libp2p/utils'
import { z } from 'zod'

export const RELAY_NOTIFY_PROTOCOL = '/peerup/relay-notify/1.0.0'

/** Largest notice either side handles. */
const MAX_NOTICE_BYTES = 1024

/** How long writing or reading one notice may take. */
export const NOTICE_TIMEOUT_MS = 5_000

/** Streams of this protocol open at once on one connection, each way. */
export const RELAY_NOTIFY_STREAMS = 4

/** A notice from a relay. */
export const relayNotice = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('authorized') }),
  z.strictObject({ type: z.literal('refused'), reason: z.string().min(1).max(300) }),
])

export type RelayNotice = z.infer<typeof relayNotice>

/** Sends one notice on `connection` (the relay's side); rejects when the peer does not take it. */
export async function sendRelayNotice(connection: Connection, notice: RelayNotice): Promise<void> {
  const signal = AbortSignal.timeout(NOTICE_TIMEOUT_MS)
  const stream = await connection.newStream(RELAY_NOTIFY_PROTOCOL, { signal })
  try {
    await lpStream(stream, { maxDataLength: MAX_NOTICE_BYTES }).write(
      new TextEncoder().encode(JSON.stringify(notice)),
      { signal },
    )
  } finally {
    await stream.close({ signal }).catch(() => stream.abort(new Error('closed')))
  }
}

/**
 * Reads the one notice of an inbound stream (the node's side) and closes the stream; rejects on
 * a timeout, an oversized or malformed frame.
 */
export async function readRelayNotice(stream: Stream): Promise<RelayNotice> {
  const signal = AbortSignal.timeout(NOTICE_TIMEOUT_MS)
  try {
    const raw = (await lpStream(stream, { maxDataLength: MAX_NOTICE_BYTES }).read({ signal })).subarray()
    return relayNotice.parse(JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(raw)))
  } finally {
    await stream.close({ signal }).catch(() => stream.abort(new Error('closed')))
  }
}
