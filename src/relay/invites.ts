/**
 * The invites open behind this relay. A member running `peerup invite` tells its relay that it
 * waits for a joiner (`invite-open` on `/peerup/relay-admin/1.0.0`); only then may a peer the
 * relay does not know open a (limited) circuit to it, and the relay notes who did. Sponsoring is
 * tied to that: a member may get the relay to authorize a peer only when the relay carried that
 * peer's circuit to the member while its invite was open (docs/decisions/0004-strangers.md).
 *
 * When an invite's code is spent (used, or burned by wrong proofs) the member says so
 * (`invite-spent`, by its spent id: src/invite/protocol.ts): once its invite closed nobody else is
 * left to tell a second joiner why, so the joiner asks here (src/relay/group-codes.ts answers).
 *
 * @packageDocumentation
 */

import { MAX_INVITE_TTL_MS } from '../invite/relay-admin.ts'

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
  #unexpired<V extends { expires: number }>(map: Map<string, V>, key: string): V | undefined {
    const value = map.get(key)
    if (value !== undefined && value.expires <= this.#now()) {
      map.delete(key)
      return undefined
    }
    return value
  }
}
