/**
 * The one place the node, the daemon and the relay report what happened, for metrics and the
 * audit log (a callback rather than domains importing each other). {@link NO_OBSERVER}
 * does nothing, so code that records never checks whether anything listens (docs/decisions/0000-inherited.md).
 *
 * @packageDocumentation
 */

import type { AuditEvent, AuditSink } from './audit.ts'
import type { NodeMetrics, RelayMetrics } from './index.ts'

/** Which side of a proxied connection: a peer using our service, or us using a peer's. */
export type ProxySide = 'inbound' | 'outbound'

/** What is reported: the methods of {@link createObserver}. */
export type Observer = ReturnType<typeof createObserver>

/** Records nothing: an observer of no metrics and no audit log. */
export const NO_OBSERVER: Observer = createObserver({})

/** The label of a refusal by what its reason says, the first that matches. */
const REFUSAL_REASONS: Array<[RegExp, string]> = [
  [/not in relay_authorized_keys|not authorized/, 'unauthorized'],
  [/circuit requests|handshakes at once/, 'rate_limit'],
  [/too many reservations|from \S+$/, 'per_ip_limit'],
  [/too many relayed/, 'circuit_limit'],
  [/no invite open/, 'no_invite'],
  [/this unknown peer/, 'per_peer_limit'],
  [/idle/, 'idle'],
  [/not a member|strangers/, 'not_member'],
]

/** The label a relay refusal is counted under: a bounded set, not the free-text reason. */
export function refusalReason(reason: string): string {
  return REFUSAL_REASONS.find(([pattern]) => pattern.test(reason))?.[1] ?? 'other'
}

/** An observer that updates `metrics` and writes `audit`, either of which may be absent. */
export function createObserver(parts: {
  node?: NodeMetrics | undefined
  relay?: RelayMetrics | undefined
  audit?: AuditSink | undefined
}) {
  const { node, relay, audit } = parts
  return {
    authDecision: (peer: string, decision: 'allow' | 'deny', where: string) => {
      node?.authDecisions.inc({ decision })
      relay?.authDecisions.inc({ decision })
      audit?.write({ event: 'auth_decision', peer, decision, where })
    },
    authChanged: (added: string[], removed: string[], file: string) => {
      audit?.write({ event: 'auth_change', added, removed, file })
    },
    serviceDenied: (service: string, peer: string) => {
      node?.serviceDenials.inc({ service })
      audit?.write({ event: 'service_denied', service, peer })
    },
    proxyOpened: (service: string, side: ProxySide) => {
      node?.proxyConnections.inc({ service, side })
      node?.proxyActive.inc({ service, side })
    },
    proxyClosed: (service: string, side: ProxySide) => {
      node?.proxyActive.dec({ service, side })
    },
    apiAccess: (method: string, path: string, status: number, durationMs: number) => {
      node?.daemonRequests.inc({ method, path, status: String(status) })
      audit?.write({ event: 'api_access', method, path, status, duration_ms: Math.round(durationMs) })
    },
    pathDial: (pathType: 'DIRECT' | 'RELAYED' | undefined, ok: boolean) => {
      node?.pathDials.inc({ path_type: pathType ?? 'unknown', result: ok ? 'success' : 'failure' })
    },
    pairing: (event: Omit<Extract<AuditEvent, { event: 'pairing' }>, 'event'>) => {
      audit?.write({ event: 'pairing', ...event })
    },
    /** The relay refused a connection, reservation or circuit (`peer`: id, or IP before the handshake). */
    relayRefusal: (what: string, peer: string, reason: string) => {
      relay?.refusals.inc({ what, reason: refusalReason(reason) })
      audit?.write({ event: 'refusal', role: 'relay', what, peer, reason })
    },
    /** A node refused or shed what a peer it does not trust asked for (a relayed handshake, a DHT query). */
    nodeRefusal: (what: string, peer: string, reason: string) => {
      node?.refusals.inc({ what, reason: refusalReason(reason) })
      audit?.write({ event: 'refusal', role: 'node', what, peer, reason })
    },
    /**
     * The gateway refused a local client (`what`: `socks` or `http`): what it asked for and the
     * answer it got (a SOCKS reply code, an HTTP status).
     */
    gatewayRefusal: (
      what: string,
      client: string,
      target: string,
      reply: number | undefined,
      reason: string,
    ) => {
      node?.refusals.inc({ what: `gateway_${what}`, reason: refusalReason(reason) })
      audit?.write({
        event: 'refusal',
        role: 'gateway',
        what,
        peer: client,
        reason,
        ...(target === '' ? {} : { target }),
        ...(reply === undefined ? {} : { reply }),
      })
    },
    relayedBytes: (n: number) => {
      relay?.relayedBytes.inc(n)
    },
  }
}

/** An observer that only writes the audit log, for short-lived commands (invite, join). */
export async function auditObserver(
  audit: { enabled: boolean; file: string },
  dir: string,
): Promise<{ observer: Observer; close: () => Promise<void> }> {
  if (!audit.enabled) {
    return { observer: NO_OBSERVER, close: async () => {} }
  }
  const { openAuditLog } = await import('./audit.ts')
  const { resolveIn } = await import('../config/load.ts')
  const sink = await openAuditLog(resolveIn(dir, audit.file))
  return { observer: createObserver({ audit: sink }), close: () => sink.close() }
}
