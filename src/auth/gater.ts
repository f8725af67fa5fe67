/**
 * Connection gating from authorized_keys. Inbound connections (direct and relayed) are refused
 * unless the remote peer, authenticated by the noise handshake, is authorized; outbound ones are
 * never refused. The authorized set is swapped by reference, so a reload is atomic, and
 * connections of revoked peers are closed by whoever triggers the reload (gating does not touch
 * existing connections).
 *
 * @packageDocumentation
 */

import type { ConnectionGater, MultiaddrConnection } from '@libp2p/interface'
import { loadAuthorizedKeys } from './authorized-keys.ts'
import { ipOfAddr, type PendingSlot, PendingSlots } from './pending.ts'

/** Called for every decision the gater makes; recorded in metrics and the audit log. */
export type AuthDecisionCallback = (peerId: string, decision: 'allow' | 'deny', where: string) => void

/**
 * The set of authorized peer ids, replaced whole on reload. Expiry is applied when the set is
 * built; {@link AuthorizedPeers.reloadFromFile} also re-arms a timer for the next expiry. As a
 * component, `start()` loads the file and arms that timer; `stop()` disarms it.
 */
export class AuthorizedPeers {
  #ids: ReadonlySet<string>
  #file: string | undefined
  #expiryTimer: NodeJS.Timeout | undefined
  #listeners = new Set<(added: string[], removed: string[]) => void>()

  constructor(ids: Iterable<string> = [], file?: string) {
    this.#ids = new Set(ids)
    this.#file = file
  }

  /** Loads the set from its file, when it has one (a missing file is an empty set). */
  async start(): Promise<void> {
    await this.reloadFromFile()
  }

  has(peerId: string): boolean {
    return this.#ids.has(peerId)
  }

  get size(): number {
    return this.#ids.size
  }

  /** Re-reads the file this set came from and replaces the set; listeners learn who was added and removed. */
  async reloadFromFile(): Promise<{ added: string[]; removed: string[] }> {
    if (this.#file === undefined) {
      return { added: [], removed: [] }
    }
    const doc = await loadAuthorizedKeys(this.#file, { createIfMissing: true })
    const now = new Date()
    const next = doc.authorizedSet(now)
    const added = [...next].filter((id) => !this.#ids.has(id))
    const removed = [...this.#ids].filter((id) => !next.has(id))
    this.#ids = next
    if (added.length > 0 || removed.length > 0) {
      for (const listener of this.#listeners) {
        listener(added, removed)
      }
    }
    this.#armExpiry(doc.nextExpiry(now))
    return { added, removed }
  }

  /** Subscribes to changes; returns the unsubscribe function. */
  onChange(listener: (added: string[], removed: string[]) => void): () => void {
    this.#listeners.add(listener)
    return () => this.#listeners.delete(listener)
  }

  stop(): void {
    this.#armExpiry(undefined)
  }

  #armExpiry(next: Date | undefined): void {
    clearTimeout(this.#expiryTimer)
    this.#expiryTimer = undefined
    if (next === undefined) {
      return
    }
    // setTimeout takes at most 2^31-1 ms; a far expiry is re-checked then.
    const delay = Math.min(Math.max(next.getTime() - Date.now(), 0) + 10, 2 ** 31 - 1)
    this.#expiryTimer = setTimeout(() => {
      this.reloadFromFile().catch(() => {})
    }, delay)
    this.#expiryTimer.unref()
  }
}

/** Relayed handshakes of peers not in authorized_keys under way at once (a pairing needs one). */
export const STRANGER_RELAYED_PENDING = 4

/** Direct inbound handshakes under way at once from one IP address. */
export const DIRECT_PENDING_PER_IP = 8

/** How long an inbound connection may take to authenticate (libp2p's default, kept); slots are freed then. */
export const NODE_HANDSHAKE_TIMEOUT_MS = 10_000

export interface NodeGaterOptions {
  /** `security.enable_connection_gating`: false lets every peer connect. */
  enabled: boolean
  onDecision?: AuthDecisionCallback
  /**
   * While true, a peer not in authorized_keys is still let in on a *relayed* connection: the
   * joiner of an open invite, whom nobody could have authorized yet. Such a connection is limited
   * by the relay, and services additionally check authorization (src/proxy/registry.ts).
   */
  admitRelayed?: () => boolean
  /** A handshake was not even started: too many strangers (or one IP) are in theirs already. */
  onShed?: (what: 'relayed' | 'direct', peer: string, reason: string) => void
}

/**
 * The gater of a node: inbound only from authorized peers. Before a handshake, strangers get a
 * small allowance of pending slots of their own (relayed: {@link STRANGER_RELAYED_PENDING} in all,
 * one per claimed peer id; direct: {@link DIRECT_PENDING_PER_IP} per IP), so that half-open
 * connections can never take the slots authorized peers need (docs/decisions/0004-strangers.md).
 */
export function nodeGater(peers: AuthorizedPeers, options: NodeGaterOptions): ConnectionGater {
  const isAuthorized = (id: string): boolean => !options.enabled || peers.has(id)
  const timeoutMs = NODE_HANDSHAKE_TIMEOUT_MS
  const relayedSlots = new PendingSlots({ perKey: 1, total: STRANGER_RELAYED_PENDING, timeoutMs })
  const heldRelayed = new Map<string, PendingSlot>()
  const directSlots = new PendingSlots({ perKey: DIRECT_PENDING_PER_IP, timeoutMs })
  const heldDirect = new WeakMap<MultiaddrConnection, PendingSlot>()
  const isRelayed = (maConn: MultiaddrConnection): boolean =>
    maConn.remoteAddr.getComponents().some((c) => c.name === 'p2p-circuit')
  return {
    denyInboundConnection: (maConn) => {
      if (!options.enabled || isRelayed(maConn)) {
        return false
      }
      const ip = ipOfAddr(maConn.remoteAddr)
      if (ip === undefined) {
        return false
      }
      const slot = directSlots.take(ip)
      if (slot === undefined) {
        options.onShed?.('direct', ip, `too many handshakes at once from ${ip}`)
        return true
      }
      heldDirect.set(maConn, slot)
      maConn.addEventListener('close', () => slot.release(), { once: true })
      return false
    },
    // The relay's STOP names the source (the relay authenticated it): authorized sources pass at
    // once; strangers only within their allowance, or the handshake is never started.
    denyInboundRelayedConnection: (_relay, source) => {
      const id = source.toString()
      if (isAuthorized(id)) {
        return false
      }
      // One slot per claimed id (perKey 1), so at most one is held for it at a time.
      const slot = relayedSlots.take(id, () => heldRelayed.delete(id))
      if (slot === undefined) {
        options.onShed?.('relayed', id, 'too many relayed handshakes of unknown peers at once')
        return true
      }
      heldRelayed.set(id, slot)
      return false
    },
    // The first point where the remote is authenticated, for direct and relayed connections alike.
    // Relayed ones from a stranger within its allowance are not refused earlier on purpose: the
    // relay would report that to the dialer as a vague CONNECTION_FAILED, while a refusal after
    // the handshake is recognisable, so the dialer can say "not authorized by the peer".
    denyInboundEncryptedConnection: (peer, maConn) => {
      const id = peer.toString()
      const relayed = isRelayed(maConn)
      heldDirect.get(maConn)?.release()
      if (relayed) {
        heldRelayed.get(id)?.release()
      }
      const allowed = isAuthorized(id)
      if (!allowed && relayed && options.admitRelayed?.() === true) {
        options.onDecision?.(id, 'allow', 'inbound-pairing')
        return false
      }
      options.onDecision?.(id, allowed ? 'allow' : 'deny', 'inbound')
      return !allowed
    },
  }
}
