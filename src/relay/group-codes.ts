/**
 * The relay answering its own group codes on `/peerup/invite/1.0.0`: a joiner proves its code
 * straight to the relay, is authorized here with `group=<id>`, and learns the members that joined
 * before it; members still waiting are told about it as it joins. A hello naming the spent id of a
 * member's invite code that was used or burned is refused with that reason. What counts against a
 * code is what counts against an invite ({@link WrongProofs}).
 *
 * @packageDocumentation
 */

import { ConflictError } from '../errors.ts'
import {
  type AcceptExtras,
  answerPairing,
  type CodeBook,
  type Joiner,
  type Opened,
  type ProofFailure,
  WrongProofs,
} from '../invite/inviter.ts'
import { INVITE_PROTOCOL, INVITE_STREAM_OPTIONS, type PairingMessage } from '../invite/protocol.ts'
import type { Component } from '../util/components.ts'
import { type CodeState, type Entry, type GroupState, isLive } from './groups.ts'
import type { PairingComponents } from './sponsoring.ts'

/**
 * The code book of the relay's groups and its protocol handler: `start()` answers
 * `/peerup/invite/1.0.0`, `stop()` ends the joiners' waits for introductions and stops answering.
 */
export class GroupCodes implements CodeBook<Entry>, Component {
  readonly #components: PairingComponents
  /** Codes whose exchange is under way: a second joiner with the same code is told it is busy. */
  readonly #busy = new Set<string>()
  /**
   * Per code: its wrong proofs. The total is kept in the state file (`failures`), so the ceiling
   * holds across restarts; who made them is not, so a restart gives a shut-out peer its tries
   * back, still within that ceiling.
   */
  readonly #wrongByCode = new Map<string, WrongProofs>()
  /** Per used code: the members its joiner has been told about (until its introductions end). */
  readonly #toldByCode = new Map<string, Set<string>>()
  /** Per group: the joiners waiting for introductions. */
  readonly #waiters = new Map<string, Set<(m: PairingMessage) => void>>()
  #controller = new AbortController()

  constructor(components: PairingComponents) {
    this.#components = components
  }

  async start(): Promise<void> {
    const { relay, observer, log } = this.#components
    this.#controller = new AbortController()
    const signal = this.#controller.signal
    await relay.node.handle(
      INVITE_PROTOCOL,
      (stream, connection) => {
        answerPairing(stream, connection, {
          localPeerId: relay.peerId,
          book: this,
          log: log.child('group'),
          observer,
          role: 'relay',
          signal,
        }).catch(() => {})
      },
      { ...INVITE_STREAM_OPTIONS, maxInboundStreams: 8 },
    )
  }

  async stop(): Promise<void> {
    this.#controller.abort()
    await this.#components.relay.node.unhandle(INVITE_PROTOCOL).catch(() => {})
  }

  /** Tells every joiner of `group` still waiting for introductions. */
  notify(group: GroupState, message: PairingMessage): void {
    for (const w of this.#waiters.get(group.id) ?? []) {
      w(message)
    }
  }

  open(codeId: string, joiner: string, now: Date): Opened<Entry> {
    const entry = this.#components.store.byCodeId(codeId)
    if (entry === undefined) {
      // A member's invite code that is spent, named by its spent id: the joiner asks here because
      // nobody else is left to say so (src/relay/invites.ts).
      const spent = this.#components.relay.invites.spent(codeId)
      if (spent !== undefined) return { ok: false, reason: spent }
      // Not one of ours: nothing to count it against, and the token cannot be guessed either way.
      return { ok: false, reason: 'unknown-code' }
    }
    const { group, code } = entry
    if (group.revoked) return { ok: false, reason: 'revoked' }
    if (now.getTime() >= Date.parse(group.expires)) return { ok: false, reason: 'expired' }
    if (code.state !== 'open') return { ok: false, reason: code.state }
    if (this.#wrongProofs(code).shutOut(joiner)) return { ok: false, reason: 'burned', remaining: 0 }
    if (this.#busy.has(code.id)) return { ok: false, reason: 'busy' }
    this.#busy.add(code.id)
    return { ok: true, entry, key: Buffer.from(code.key, 'hex') }
  }

  fail({ code }: Entry, joiner: string): ProofFailure {
    this.#busy.delete(code.id)
    const wrong = this.#wrongProofs(code)
    const failure = wrong.record(joiner)
    code.failures = wrong.total
    if (failure.burned) {
      code.state = 'burned'
    }
    this.#components.store
      .save()
      .catch((err: unknown) =>
        this.#components.log.error('saving pairing groups failed', { error: err as Error }),
      )
    return failure
  }

  release({ code }: Entry): void {
    this.#busy.delete(code.id)
  }

  async accept({ group, code }: Entry, joiner: Joiner): Promise<AcceptExtras> {
    const { store, keys, log } = this.#components
    try {
      if (!isLive(group)) {
        throw new ConflictError('the group is no longer live')
      }
      const before = group.members.filter((m) => m.peerId !== joiner.peerId)
      const member = { peerId: joiner.peerId, ...(joiner.name === undefined ? {} : { name: joiner.name }) }
      code.state = 'used'
      code.usedBy = joiner.peerId
      if (before.length === group.members.length) {
        group.members.push(member)
      }
      await store.save()
      await keys.authorize(joiner.peerId, { group: group.id }, joiner.name)
      log.info('group member joined', { group: group.id, peer: joiner.peerId, members: group.members.length })
      this.notify(group, { type: 'member', ...member })
      this.#toldByCode.set(code.id, new Set([...before.map((m) => m.peerId), joiner.peerId]))
      return { group: { id: group.id, size: group.size, members: before } }
    } finally {
      this.#busy.delete(code.id)
    }
  }

  /**
   * Tells the waiting joiner every member it has not heard of yet — checked again on each change,
   * so a member that joined between our accept and this registration is not missed — until the
   * group is full, revoked or expired, the exchange ends, or the relay stops.
   */
  async afterAccept(
    { group, code }: Entry,
    send: (m: PairingMessage) => Promise<void>,
    signal: AbortSignal,
  ): Promise<void> {
    const told = this.#toldByCode.get(code.id) ?? new Set<string>()
    this.#toldByCode.delete(code.id)
    const { promise, resolve } = Promise.withResolvers<void>()
    let queue = Promise.resolve()
    let finished = false
    const finish = (): void => {
      finished = true
      resolve()
    }
    const flush = (stop?: PairingMessage): void => {
      queue = queue
        .then(async () => {
          if (finished) return
          for (const m of group.members) {
            if (!told.has(m.peerId)) {
              told.add(m.peerId)
              await send({ type: 'member', ...m })
            }
          }
          if (stop !== undefined) {
            await send(stop)
            finish()
          } else if (group.members.length >= group.size) {
            await send({ type: 'complete' })
            finish()
          }
        })
        .catch(() => finish())
    }
    const set = this.#waiters.get(group.id) ?? new Set()
    this.#waiters.set(group.id, set)
    const listener = (m: PairingMessage): void => flush(m.type === 'error' ? m : undefined)
    set.add(listener)
    flush()
    const expiry = setTimeout(
      () => flush({ type: 'error', reason: 'expired' }),
      Math.max(Date.parse(group.expires) - Date.now(), 0),
    )
    const stopped = this.#controller.signal
    const onAbort = (): void => finish()
    signal.addEventListener('abort', onAbort, { once: true })
    stopped.addEventListener('abort', onAbort, { once: true })
    try {
      await promise
      await queue
    } finally {
      clearTimeout(expiry)
      set.delete(listener)
      signal.removeEventListener('abort', onAbort)
      stopped.removeEventListener('abort', onAbort)
    }
  }

  #wrongProofs(code: CodeState): WrongProofs {
    const wrong = this.#wrongByCode.get(code.id) ?? new WrongProofs(code.failures)
    this.#wrongByCode.set(code.id, wrong)
    return wrong
  }
}
