/**
 * The small parts a relay (src/relay/server.ts) is assembled from, beside its libp2p node, the
 * health endpoint and the STUN responder.
 *
 * @packageDocumentation
 */

import type { Connection, PeerId } from '@libp2p/interface'
import type { TypedEventEmitter } from 'main-event'
import type { AuthorizedPeers } from '../auth/gater.ts'
import { unlimitedConnection } from '../invite/node.ts'
import { INVITE_PROTOCOL } from '../invite/protocol.ts'
import type { Logger } from '../log/index.ts'
import type { Observer } from '../metrics/observer.ts'
import { RELAY_HOP_PROTOCOL } from '../p2p/constants.ts'
import type { PeerupLibp2p } from '../p2p/node.ts'
import { type RelayNotice, sendRelayNotice } from '../p2p/relay-notify.ts'
import type { Component } from '../util/components.ts'
import type { RefusalWhat } from './gater.ts'
import type { RelayEvents, RelayRefusal, RelayServices } from './server.ts'

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

/** What the parts below use, each a few of them (src/relay/server.ts makes them). */
interface RelayComponents {
  node: PeerupLibp2p<RelayServices>
  authorized: AuthorizedPeers
  observer: Observer
  log: Logger
  events: TypedEventEmitter<RelayEvents>
  refusals: RefusalReport
}

/**
 * Reports each refusal of the relay: to metrics and the audit log (every one), to the `refusal`
 * event, and to the log so that a flood cannot fill it: the first of each kind (what and why, the
 * addresses and peer ids taken out) at once, then at most one line per
 * {@link REFUSAL_LOG_INTERVAL_MS} saying how many were not logged.
 */
export class RefusalReport {
  readonly #components: Pick<RelayComponents, 'observer' | 'log' | 'events'>
  readonly #last = new Map<string, { at: number; suppressed: number }>()

  constructor(components: Pick<RelayComponents, 'observer' | 'log' | 'events'>) {
    this.#components = components
  }

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

/**
 * Audits every change of relay_authorized_keys (`keysFile`, as the audit log names it) and
 * disconnects the peers it removed, dropping their reservations: gating does not touch
 * connections that are already open.
 */
export class RevokedRelayPeers implements Component {
  readonly #components: Pick<RelayComponents, 'node' | 'authorized' | 'observer' | 'log'>
  readonly #keysFile: string
  #unsubscribe: (() => void) | undefined

  constructor(
    components: Pick<RelayComponents, 'node' | 'authorized' | 'observer' | 'log'>,
    init: { keysFile: string },
  ) {
    this.#components = components
    this.#keysFile = init.keysFile
  }

  start(): void {
    const { authorized, observer, log } = this.#components
    this.#unsubscribe = authorized.onChange((added, removed) => {
      observer.authChanged(added, removed, this.#keysFile)
      this.#disconnect(removed).catch((err: unknown) =>
        log.warn('closing revoked peers failed', { error: err as Error }),
      )
    })
  }

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

/**
 * Tells a peer connected to the relay about its standing (`/peerup/relay-notify/1.0.0`,
 * src/p2p/relay-notify.ts): `authorized` when relay_authorized_keys gains it, so that its node
 * asks for its reservation now rather than at its next try, up to 30 s later; `refused { reason }`
 * when its reservation is refused, once per connection and reason, so that a stranger asking again
 * and again costs one stream, not one each time. A peer that is not connected (an idle stranger is
 * let go after `unknown_peer_idle_timeout`) is told nothing: its own retries bring it back.
 */
export class RelayNotices implements Component {
  readonly #components: Pick<RelayComponents, 'node' | 'authorized' | 'events' | 'log'>
  /** The refusal reasons each connection was told. */
  #told = new WeakMap<Connection, Set<string>>()
  #unsubscribe: (() => void) | undefined
  readonly #onRefusal = (evt: CustomEvent<RelayRefusal>): void => {
    const { what, peer, reason } = evt.detail
    // A reservation is asked for on the peer's own connection to the relay.
    const connection = what === 'reservation' ? unlimitedConnection(this.#components.node, peer) : undefined
    if (connection === undefined) {
      return
    }
    const told = this.#told.get(connection) ?? new Set<string>()
    if (told.has(reason)) {
      return
    }
    told.add(reason)
    this.#told.set(connection, told)
    this.#send(connection, { type: 'refused', reason })
  }

  constructor(components: Pick<RelayComponents, 'node' | 'authorized' | 'events' | 'log'>) {
    this.#components = components
  }

  start(): void {
    const { authorized, events } = this.#components
    const off = authorized.onChange((added) => {
      for (const id of added) {
        const connection = unlimitedConnection(this.#components.node, id)
        if (connection !== undefined) {
          this.#send(connection, { type: 'authorized' })
        }
      }
    })
    events.addEventListener('refusal', this.#onRefusal)
    this.#unsubscribe = () => {
      off()
      events.removeEventListener('refusal', this.#onRefusal)
    }
  }

  /** Stops following them (notices on their way finish or time out on their own). */
  stop(): void {
    this.#unsubscribe?.()
    this.#unsubscribe = undefined
    this.#told = new WeakMap()
  }

  #send(connection: Connection, notice: RelayNotice): void {
    const peer = connection.remotePeer.toString()
    sendRelayNotice(connection, notice).then(
      () => this.#components.log.debug('notice sent', { peer, notice: notice.type }),
      // A peerup from before relay-notify does not take it, and retries on its own.
      (err: unknown) =>
        this.#components.log.debug('notice not taken', { peer, notice: notice.type, error: err as Error }),
    )
  }
}

/**
 * Lets strangers go that hold no circuit and no pairing exchange for `idleMs`
 * (`unknown_peer_idle_timeout`): an idle identity costs the relay ~100 KB and a slot of its
 * per-IP allowance (docs/decisions/0004-strangers.md). `start()` arms the sweep (every third of
 * the idle time), `stop()` disarms it. With `gating` (`security.enable_connection_gating`) off,
 * nobody is a stranger.
 */
export class IdleStrangers implements Component {
  readonly #components: Pick<RelayComponents, 'node' | 'authorized' | 'refusals'>
  readonly #idleMs: number
  readonly #gating: boolean
  #timer: NodeJS.Timeout | undefined

  constructor(
    components: Pick<RelayComponents, 'node' | 'authorized' | 'refusals'>,
    init: { idleMs: number; gating: boolean },
  ) {
    this.#components = components
    this.#idleMs = init.idleMs
    this.#gating = init.gating
  }

  start(): void {
    this.#timer = setInterval(() => this.#sweep(), Math.max(Math.floor(this.#idleMs / 3), 200))
    this.#timer.unref()
  }

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
