/**
 * The audit log (opt-in, `telemetry.audit`): one JSON line per security-relevant event — every
 * decision of the gater, every change of authorized_keys, every service stream refused by
 * `allowed_peers`, every local API request, every pairing attempt. It records who and what, never
 * a secret: no tokens, codes, cookies or keys are passed to it.
 *
 * @packageDocumentation
 */

import { once } from 'node:events'
import * as fs from 'node:fs'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'

/** The events the audit log knows; each has a test that it is emitted. */
export const AUDIT_EVENTS = [
  'auth_decision',
  'auth_change',
  'service_denied',
  'api_access',
  'pairing',
  'refusal',
] as const

export type AuditEvent =
  | { event: 'auth_decision'; peer: string; decision: 'allow' | 'deny'; where: string }
  | { event: 'auth_change'; added: string[]; removed: string[]; file: string }
  | { event: 'service_denied'; service: string; peer: string }
  | { event: 'api_access'; method: string; path: string; status: number; duration_ms: number }
  | {
      event: 'pairing'
      role: 'inviter' | 'joiner' | 'relay'
      outcome: 'paired' | 'refused' | 'failed'
      peer?: string
      name?: string
      reason?: string
    }
  | {
      /**
       * Something a peer asked for was refused or shed before any service saw it (see
       * src/relay/gater.ts); or, role `gateway`, what a local client of the SOCKS or HTTP CONNECT
       * gateway asked for (src/daemon/gateway.ts).
       */
      event: 'refusal'
      role: 'node' | 'relay' | 'gateway'
      what: string
      /** The peer id, or the IP address (and port) where no peer is known yet. */
      peer: string
      reason: string
      /** What a gateway's client asked for (`web.home.peerup:80`). */
      target?: string
      /** The answer it got: the SOCKS reply code, or the HTTP status. */
      reply?: number
    }

/** Where audit lines go. */
export type AuditSink = Awaited<ReturnType<typeof openAuditLog>>

/** Opens (appends to) `file`, 0600, creating its directory. */
export async function openAuditLog(file: string) {
  await fsp.mkdir(path.dirname(file), { recursive: true, mode: 0o700 })
  const stream = fs.createWriteStream(file, { flags: 'a', mode: 0o600 })
  // Rejects with the open error, as 'error' comes instead of 'open'.
  await once(stream, 'open')
  // An existing file created wider (by hand) is narrowed: it names peers and what they did.
  await fsp.chmod(file, 0o600)
  return {
    write: (event: AuditEvent): void => {
      stream.write(`${JSON.stringify({ time: new Date().toISOString(), ...event })}\n`)
    },
    close: (): Promise<void> => new Promise<void>((resolve) => stream.end(() => resolve())),
  }
}
