/**
 * The invites open behind this relay. A member running `peerup invite` tells its relay that it
 * waits for a joiner (`invite-open` on `/peerup/relay-admin/1.0.0`); only then may a peer the
 * relay does not know open a (limited) circuit to it, and the relay notes who did. Sponsoring is
 * tied to that: a member may get the relay to authorize a peer only when the relay carried that
 * peer's circuit to the member while its invite was open (docs/decisions/0004-strangers.md).
 *
 * An open invite may also hold a nameplate (`nameplate-claim`), the number its short code starts
 * with: a joiner asks the relay which member holds it (src/relay/nameplates.ts). It is released when
 * the invite closes or is consumed, when the member says so (its short code burned), or when it
 * expires; the lowest free number is handed out, so codes stay short.
 *
 * When an invite's code is spent (used, or burned by wrong proofs) the member says so
 * (`invite-spent`, by its spent id: src/invite/protocol.ts): once its invite closed nobody else is
 * left to tell a second joiner why, so the joiner asks here (src/relay/group-codes.ts answers).
 *
 * @packageDocumentation
 */

import { MAX_INVITE_TTL_MS } from '../invite/relay-admin.ts'
import { MAX_NAMEPLATE } from '../invite/short-code.ts'

/** Strangers remembered per open invite: enough for a joiner's retries, bounded against floods. */
const MAX_JOINERS_PER_INVITE = 16

/** Spent codes remembered per member (the oldest goes first): one member's reports cannot grow the relay. */
const MAX_SPENT_PER_MEMBER = 16

/** Why a code is spent. */
export type SpentReason = 'used' | 'burned'

interface SpentCode {
  member: string
  reason: SpentReason
  expires: number
}

interface Nameplate {
  member: string
  network: string
  expires: number
}

interface OpenInvite {
  expires: number
  /** Peers not in relay_authorized_keys that reached the member through us while it was open. */
  joiners: Set<string>
}

/** The open invites of a relay's members, by member peer id. */
export class OpenInvites {
  readonly #open = new Map<string, OpenInvite>()
  /** By spent id, in the order they were reported. */
  readonly #spent = new Map<string, SpentCode>()
  /** By nameplate number. */
  readonly #nameplates = new Map<number, Nameplate>()
  readonly #now: () => number

  constructor(now: () => number = Date.now) {
    this.#now = now
  }

  /** `member` waits for a joiner for `ttlMs` (capped at {@link MAX_INVITE_TTL_MS}). */
  open(member: string, ttlMs: number): void {
    const expires = this.#now() + Math.min(Math.max(ttlMs, 0), MAX_INVITE_TTL_MS)
    const current = this.#open.get(member)
    if (current !== undefined && current.expires > this.#now()) {
      current.expires = Math.max(current.expires, expires)
      return
    }
    this.#open.set(member, { expires, joiners: new Set() })
  }

  /** `member`'s invite ended (joined, expired or cancelled). */
  close(member: string): void {
    this.#open.delete(member)
    this.releaseNameplate(member)
  }

  /**
   * Gives `member`'s open invite the lowest free nameplate for `ttlMs` (a member holds one at a
   * time: a second claim replaces the first); undefined when it has no invite open or all
   * {@link MAX_NAMEPLATE} are taken.
   */
  claimNameplate(member: string, ttlMs: number, network: string): number | undefined {
    if (!this.isOpen(member)) {
      return undefined
    }
    this.releaseNameplate(member)
    for (let n = 1; n <= MAX_NAMEPLATE; n++) {
      if (this.#unexpired(this.#nameplates, n) === undefined) {
        const expires = this.#now() + Math.min(Math.max(ttlMs, 0), MAX_INVITE_TTL_MS)
        this.#nameplates.set(n, { member, network, expires })
        return n
      }
    }
    return undefined
  }

  /** Forgets `member`'s nameplate, if it holds one. */
  releaseNameplate(member: string): void {
    for (const [n, p] of this.#nameplates) {
      if (p.member === member) {
        this.#nameplates.delete(n)
      }
    }
  }

  /** The member whose open invite holds `nameplate`, and its network. */
  lookupNameplate(nameplate: number): { member: string; network: string } | undefined {
    const p = this.#unexpired(this.#nameplates, nameplate)
    if (p === undefined || !this.isOpen(p.member)) {
      return undefined
    }
    return { member: p.member, network: p.network }
  }

  isOpen(member: string): boolean {
    return this.#unexpired(this.#open, member) !== undefined
  }

  /**
   * Records that `joiner` opens a circuit to `member`; false when `member` has no invite open (the
   * circuit is then refused) or too many strangers already tried this one.
   */
  admit(member: string, joiner: string): boolean {
    const invite = this.#unexpired(this.#open, member)
    if (invite === undefined) {
      return false
    }
    if (!invite.joiners.has(joiner) && invite.joiners.size >= MAX_JOINERS_PER_INVITE) {
      return false
    }
    invite.joiners.add(joiner)
    return true
  }

  /**
   * Whether `member` may sponsor `joiner`: the relay carried `joiner`'s circuit to `member` during
   * its open invite. True at most once per invite: the invite is spent by it.
   */
  consume(member: string, joiner: string): boolean {
    const invite = this.#unexpired(this.#open, member)
    if (invite === undefined || !invite.joiners.has(joiner)) {
      return false
    }
    this.#open.delete(member)
    this.releaseNameplate(member)
    return true
  }

  /**
   * `member`'s code with spent id `spentId` was used or burned; remembered for `ttlMs` (until the
   * code would have expired, capped at {@link MAX_INVITE_TTL_MS}).
   */
  spend(member: string, spentId: string, reason: SpentReason, ttlMs: number): void {
    const now = this.#now()
    this.#spent.delete(spentId)
    const mine: string[] = []
    for (const [id, s] of this.#spent) {
      if (s.expires <= now) {
        this.#spent.delete(id)
      } else if (s.member === member) {
        mine.push(id)
      }
    }
    for (const id of mine.slice(0, Math.max(mine.length - MAX_SPENT_PER_MEMBER + 1, 0))) {
      this.#spent.delete(id)
    }
    this.#spent.set(spentId, {
      member,
      reason,
      expires: now + Math.min(Math.max(ttlMs, 0), MAX_INVITE_TTL_MS),
    })
  }

  /** Why the code with spent id `spentId` is spent, if a member said it is. */
  spent(spentId: string): SpentReason | undefined {
    return this.#unexpired(this.#spent, spentId)?.reason
  }

  /** `map`'s entry for `key` until it expires; an expired one is dropped. */
  #unexpired<K, V extends { expires: number }>(map: Map<K, V>, key: K): V | undefined {
    const value = map.get(key)
    if (value !== undefined && value.expires <= this.#now()) {
      map.delete(key)
      return undefined
    }
    return value
  }
}
