/**
 * The small parts a relay (src/relay/server.ts) is assembled from, beside its libp2p node, the
 * health endpoint and the STUN responder: the report of a refusal (metrics and audit, a log that
 * a flood cannot fill, the relay's `refusal` event), the disconnection of peers removed from
 * relay_authorized_keys, and the sweep that lets idle strangers go.
 *
 * @packageDocumentation
 */

import type { PeerId } from '@libp2p/interface'
import type { TypedEventEmitter } from 'main-event'
import type { AuthorizedPeers } from '../auth/gater.ts'
import { INVITE_PROTOCOL } from '../invite/protocol.ts'
import type { Logger } from '../log/index.ts'
import type { Observer } from '../metrics/observer.ts'
import { RELAY_HOP_PROTOCOL } from '../p2p/constants.ts'
import type { PeerupLibp2p } from '../p2p/node.ts'
import type { Component } from '../util/components.ts'
import type { RefusalWhat } from './gater.ts'
import type { RelayEvents, RelayServices } from './server.ts'

/** Refusals of one kind are logged at most once per this, with the count of those not logged. */
const REFUSAL_LOG_INTERVAL_MS = 10_000

/** Kinds of refusal remembered for the throttled log; the oldest is forgotten past this. */
const REFUSAL_KINDS_KEPT = 256

/**
 * Protocols that make a stranger's connection useful: a circuit (pairing with a member) or the
 * relay's own group codes. A stranger holding none of them for `unknown_peer_idle_timeout` is
 * disconnected.
 */
const STRANGER_BUSY_PROTOCOLS = new Set([RELAY_HOP_PROTOCOL, INVITE_PROTOCOL])

/** What {@link RefusalReport} reports to. */
export interface RefusalReportComponents {
  observer: Observer
  log: Logger
  events: TypedEventEmitter<RelayEvents>
}

/**
 * Reports each refusal of the relay: to metrics and the audit log (every one), to the `refusal`
 * event, and to the log so that a flood cannot fill it: the first of each kind (what and why, the
 * addresses and peer ids taken out) at once, then at most one line per
 * {@link REFUSAL_LOG_INTERVAL_MS} saying how many were not logged.
 */
export class RefusalReport {
  readonly #components: RefusalReportComponents
  readonly #last = new Map<string, { at: number; suppressed: number }>()

  constructor(components: RefusalReportComponents) {
    this.#components = components
  }

  /** Reports one refusal. */
  report(what: RefusalWhat, peer: string, reason: string): void {
    const { observer, events } = this.#components
    observer.relayRefusal(what, peer, reason)
    this.#log(what, peer, reason)
    events.safeDispatchEvent('refusal', { detail: { what, peer, reason } })
  }

  #log(what: RefusalWhat, peer: string, reason: string): void {
    const kind = `${what}:${reason.replace(/\b(12D3Koo|Qm)\w+|\d+\.\d+\.\d+\.\d+|[0-9a-f:]*:[0-9a-f:]+/g, '…')}`
    const now = Date.now()
    const seen = this.#last.get(kind)
    if (seen !== undefined && now - seen.at < REFUSAL_LOG_INTERVAL_MS) {
      seen.suppressed++
      return
    }
    this.#last.set(kind, { at: now, suppressed: 0 })
    if (this.#last.size > REFUSAL_KINDS_KEPT) {
      this.#last.delete(this.#last.keys().next().value as string)
    }
    this.#components.log.warn(`${what} refused`, {
      peer,
      reason,
      ...(seen !== undefined && seen.suppressed > 0 ? { suppressed: seen.suppressed } : {}),
    })
  }
}

/** What {@link RevokedRelayPeers} uses. */
export interface RevokedRelayPeersComponents {
  node: PeerupLibp2p<RelayServices>
  authorized: AuthorizedPeers
  observer: Observer
  log: Logger
}

/** Settings of {@link RevokedRelayPeers}. */
export interface RevokedRelayPeersInit {
  /** relay_authorized_keys, as the audit log names it. */
  keysFile: string
}

/**
 * Audits every change of relay_authorized_keys and disconnects the peers it removed, dropping
 * their reservations: gating does not touch connections that are already open.
 */
export class RevokedRelayPeers implements Component {
  readonly #components: RevokedRelayPeersComponents
  readonly #keysFile: string
  #unsubscribe: (() => void) | undefined

  constructor(components: RevokedRelayPeersComponents, init: RevokedRelayPeersInit) {
    this.#components = components
    this.#keysFile = init.keysFile
  }

  /** Starts following relay_authorized_keys changes. */
  start(): void {
    const { authorized, observer, log } = this.#components
    this.#unsubscribe = authorized.onChange((added, removed) => {
      observer.authChanged(added, removed, this.#keysFile)
      this.#disconnect(removed).catch((err: unknown) =>
        log.warn('closing revoked peers failed', { error: err as Error }),
      )
    })
  }

  /** Stops following them. */
  stop(): void {
    this.#unsubscribe?.()
    this.#unsubscribe = undefined
  }

  async #disconnect(removed: string[]): Promise<void> {
    const { node, log } = this.#components
    for (const id of removed) {
      const peer = node.getConnections().find((c) => c.remotePeer.toString() === id)?.remotePeer
      if (peer === undefined) {
        continue
      }
      // Internal API: the stock server has no public way to drop one reservation.
      ;(
        node.services.relay as unknown as { reservationStore?: { removeReservation(p: PeerId): void } }
      ).reservationStore?.removeReservation(peer)
      await node.hangUp(peer).catch(() => {})
      log.info('deauthorized peer disconnected', { peer: id })
    }
  }
}

/** What {@link IdleStrangers} uses. */
export interface IdleStrangersComponents {
  node: PeerupLibp2p<RelayServices>
  authorized: AuthorizedPeers
  refusals: RefusalReport
}

/** Settings of {@link IdleStrangers}. */
export interface IdleStrangersInit {
  /** How long a stranger may stay without a circuit or a pairing exchange (`unknown_peer_idle_timeout`). */
  idleMs: number
  /** Gating on (`security.enable_connection_gating`): with it off nobody is a stranger. */
  gating: boolean
}

/**
 * Lets strangers go that hold no circuit and no pairing exchange: an idle identity costs the
 * relay ~100 KB and a slot of its per-IP allowance (docs/decisions/0004-strangers.md). `start()`
 * arms the sweep (every third of the idle time), `stop()` disarms it.
 */
export class IdleStrangers implements Component {
  readonly #components: IdleStrangersComponents
  readonly #idleMs: number
  readonly #gating: boolean
  #timer: NodeJS.Timeout | undefined

  constructor(components: IdleStrangersComponents, init: IdleStrangersInit) {
    this.#components = components
    this.#idleMs = init.idleMs
    this.#gating = init.gating
  }

  /** Arms the sweep. */
  start(): void {
    this.#timer = setInterval(() => this.#sweep(), Math.max(Math.floor(this.#idleMs / 3), 200))
    this.#timer.unref()
  }

  /** Disarms it. */
  stop(): void {
    clearInterval(this.#timer)
    this.#timer = undefined
  }

  #sweep(): void {
    const { node, authorized, refusals } = this.#components
    const now = Date.now()
    for (const conn of node.getConnections()) {
      const id = conn.remotePeer.toString()
      if (
        conn.status !== 'open' ||
        !this.#gating ||
        authorized.has(id) ||
        now - conn.timeline.open < this.#idleMs ||
        conn.streams.some((s) => s.protocol !== undefined && STRANGER_BUSY_PROTOCOLS.has(s.protocol))
      ) {
        continue
      }
      conn.close().catch(() => conn.abort(new Error('idle unknown peer')))
      refusals.report('connection', id, 'idle unknown peer')
    }
  }
}
