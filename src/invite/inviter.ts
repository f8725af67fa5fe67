/**
 * The answering side of a pairing: {@link answerPairing} runs the exchange of
 * src/invite/protocol.ts on one stream against a {@link CodeBook} that knows the codes (one for
 * `peerup invite`, many for a relay's group codes). {@link InviteSession} is the book of one
 * `peerup invite`: a single-use code that refuses itself once expired by *this* machine's clock,
 * and says who joined. What counts against a code is {@link WrongProofs}'s rule.
 *
 * @packageDocumentation
 */

import type { Connection, Stream } from '@libp2p/interface'
import type { Logger } from '../log/index.ts'
import type { Observer } from '../metrics/observer.ts'
import { CPaceParty } from './cpace.ts'
import { CodeExpiredError, CodeUsedError } from './errors.ts'
import { usableName } from './names.ts'
import {
  deriveKeys,
  Framed,
  freshNonce,
  MAX_FAILED_PROOFS,
  MAX_FAILED_PROOFS_PER_CODE,
  macEquals,
  PAIRING_VERSION,
  type PairingMessage,
  pakeProofKey,
  proofMac,
  type RefusalReason,
  STEP_TIMEOUT_MS,
  shortCodeCPace,
} from './protocol.ts'
import { MAX_SHORT_CODE_FAILURES, type ShortCode, shortCodeId } from './short-code.ts'

/** What the accept message carries besides the MAC. */
export type AcceptExtras = Omit<Extract<PairingMessage, { type: 'accept' }>, 'type' | 'mac'>

/** The joiner, once it has proven the token. */
export interface Joiner {
  peerId: string
  /** The name it gave itself, made valid (or undefined). */
  name: string | undefined
}

/** The result of looking a code up at hello; `share` is the inviter's CPace share for a short code. */
export type Opened<E> =
  | { ok: true; entry: E; key: Uint8Array; share?: string }
  | { ok: false; reason: RefusalReason; remaining?: number }

/** What a short code's hello brings to {@link CodeBook.open}: the joiner's CPace share and nonce. */
export interface PakeHello {
  share: string
  nonce: string
  /** This side's peer id, as the connection authenticated it. */
  inviter: string
}

/** What one wrong proof did. */
export interface ProofFailure {
  /** Wrong proofs this peer may still make on the code (0: it is refused from now on). */
  remaining: number
  /** The code burned for everyone ({@link MAX_FAILED_PROOFS_PER_CODE} wrong proofs in all). */
  burned: boolean
}

/**
 * The wrong proofs made against one code: per peer, where {@link MAX_FAILED_PROOFS} shut that
 * peer out, and in all, where {@link MAX_FAILED_PROOFS_PER_CODE} burn the code. Both code books
 * count with it, so an invite and a relay's group code follow one rule.
 */
export class WrongProofs {
  readonly #byPeer = new Map<string, number>()
  #total: number

  /** `total`: wrong proofs counted before (a relay's state file keeps them across restarts). */
  constructor(total = 0) {
    this.#total = total
  }

  get total(): number {
    return this.#total
  }

  /** How many peers made them (since this count was made: a relay forgets them on a restart). */
  get peers(): number {
    return this.#byPeer.size
  }

  get burned(): boolean {
    return this.#total >= MAX_FAILED_PROOFS_PER_CODE
  }

  /** Whether `peer` has used up its wrong proofs on this code. */
  shutOut(peer: string): boolean {
    return (this.#byPeer.get(peer) ?? 0) >= MAX_FAILED_PROOFS
  }

  /**
   * Counts a wrong proof by `peer`. The books call it only for a code that has not burned, one
   * exchange at a time, so the map never holds more than {@link MAX_FAILED_PROOFS_PER_CODE} peers.
   */
  record(peer: string): ProofFailure {
    const mine = (this.#byPeer.get(peer) ?? 0) + 1
    this.#byPeer.set(peer, mine)
    this.#total++
    const burned = this.burned
    return { remaining: burned ? 0 : Math.max(MAX_FAILED_PROOFS - mine, 0), burned }
  }
}

/** The codes an answering side knows. */
export interface CodeBook<E> {
  /**
   * Called at hello: the entry to prove against, or why not. This never counts against a code: an
   * id that is not there is refused as `unknown-code`; a shut-out peer is refused as `burned`.
   */
  open(codeId: string, joiner: string, now: Date, pake?: PakeHello): Opened<E>
  /** A wrong proof by `joiner` for `entry` (the entry is free again unless the code burned). */
  fail(entry: E, joiner: string): ProofFailure
  /** The proof was right: commit (authorize, sponsor…) and return what the accept carries. */
  accept(entry: E, joiner: Joiner): Promise<AcceptExtras>
  /** After the accept was sent: a relay group streams introductions here until the group is full. */
  afterAccept?(entry: E, send: (m: PairingMessage) => Promise<void>, signal: AbortSignal): Promise<void>
  /** The exchange ended before the proof was judged: the entry is free again. */
  release(entry: E): void
}

export interface AnswerOptions<E> {
  localPeerId: string
  book: CodeBook<E>
  log: Logger
  /** Pairing attempts go to the audit log through it; `role` says who answered. */
  observer?: Observer
  role?: 'inviter' | 'relay'
  signal?: AbortSignal
}

/** Runs the answering side of one pairing exchange; never throws. */
export async function answerPairing<E>(
  stream: Stream,
  connection: Connection,
  options: AnswerOptions<E>,
): Promise<void> {
  const framed = new Framed(stream)
  const joiner = connection.remotePeer.toString()
  const { log, book } = options
  const audit = (
    outcome: 'paired' | 'refused' | 'failed',
    fields: { name?: string; reason?: string },
  ): void => options.observer?.pairing({ role: options.role ?? 'inviter', outcome, peer: joiner, ...fields })
  let held: E | undefined
  let judged = false
  try {
    const hello = await framed.read(['hello'], { signal: options.signal })
    if (hello.type === 'error') {
      return
    }
    if (hello.v !== PAIRING_VERSION) {
      await framed.refuse('bad-message')
      return
    }
    const pake =
      hello.pake === undefined
        ? undefined
        : { share: hello.pake, nonce: hello.nonce, inviter: options.localPeerId }
    const opened = book.open(hello.code, joiner, new Date(), pake)
    if (!opened.ok) {
      const fields = { peer: joiner, reason: opened.reason, remaining: opened.remaining }
      // Any stranger can name a code that is not there, as often as it likes: a line for the
      // logs, not a warning in the inviter's terminal. Everything else needed the real code id.
      log[opened.reason === 'unknown-code' ? 'info' : 'warn']('pairing refused', fields)
      audit('refused', { reason: opened.reason })
      await framed.refuse(opened.reason, opened.remaining)
      return
    }
    held = opened.entry
    const nonces = { inviter: freshNonce(), joiner: hello.nonce }
    const ids = { inviter: options.localPeerId, joiner }
    await framed.send({
      type: 'challenge',
      nonce: nonces.inviter,
      ...(opened.share === undefined ? {} : { pake: opened.share }),
    })
    const proof = await framed.read(['proof'], { signal: options.signal })
    if (proof.type === 'error') {
      return
    }
    judged = true
    if (!macEquals(proof.mac, proofMac(opened.key, 'joiner', ids, nonces))) {
      const { remaining, burned } = book.fail(opened.entry, joiner)
      // The audit tells the three apart: one more wrong proof, this peer shut out, the code gone.
      const outcome = burned ? 'burned' : remaining === 0 ? 'shut-out' : 'wrong-proof'
      log.warn('wrong pairing proof', { peer: joiner, remaining, outcome })
      audit('refused', { reason: outcome })
      await framed.refuse(remaining === 0 ? 'burned' : 'wrong-proof', remaining)
      return
    }
    const accepted: Joiner = { peerId: joiner, name: usableName(proof.name) }
    let extras: AcceptExtras
    try {
      extras = await book.accept(opened.entry, accepted)
    } catch (err) {
      log.error('pairing failed after the proof', { peer: joiner, error: err as Error })
      audit('failed', { reason: (err as Error).name })
      await framed.refuse(
        err instanceof CodeExpiredError ? 'expired' : err instanceof CodeUsedError ? 'used' : 'failed',
      )
      return
    }
    await framed.send({ type: 'accept', mac: proofMac(opened.key, 'inviter', ids, nonces), ...extras })
    log.info('peer paired', { peer: joiner, name: accepted.name })
    audit('paired', accepted.name === undefined ? {} : { name: accepted.name })
    // The joiner says `done` when it has written its side (for a group: when it stops waiting
    // for the others); it may also just go away. Either ends the introductions.
    const ended = new AbortController()
    const done = framed
      .read(['done'], { signal: ended.signal, timeoutMs: 2 ** 31 - 1 })
      .catch(() => {})
      .finally(() => ended.abort())
    if (book.afterAccept !== undefined) {
      const signal = AbortSignal.any([
        ended.signal,
        ...(options.signal === undefined ? [] : [options.signal]),
      ])
      await book.afterAccept(opened.entry, (m) => framed.send(m), signal).catch(() => {})
    }
    const timer = setTimeout(() => ended.abort(), STEP_TIMEOUT_MS)
    await done
    clearTimeout(timer)
  } catch (err) {
    log.debug('pairing exchange ended', { peer: joiner, error: err as Error })
  } finally {
    if (held !== undefined && !judged) {
      book.release(held)
    }
    await framed.close()
  }
}

export interface InviteSessionOptions {
  token: Uint8Array
  expires: Date
  /**
   * Commits a proven joiner: authorize it, record its name, sponsor it at the relay. Runs once;
   * what it returns goes into the accept.
   */
  onJoin: (joiner: Joiner) => Promise<AcceptExtras>
  /**
   * `peer` made its last allowed wrong proof: it is refused from now on, while the code stays
   * open for everyone else. Called once per peer, so the inviter can be told.
   */
  onShutOut?: (peer: string) => void
  /**
   * A wrong try at the short code; `remaining` tries are left before it burns (at 0 it just did:
   * the long code stays good). Called on every one, so the inviter can be told.
   */
  onShortFailure?: (peer: string, remaining: number) => void
}

/** Which of an invite's codes an exchange proves: the long one (its token) or the short one. */
export type InviteEntry = 'invite' | 'short'

/** The state of one `peerup invite` code. */
export type InviteState = 'open' | 'busy' | 'used' | 'burned'

/** The code book of a single-use invite. */
export class InviteSession implements CodeBook<InviteEntry> {
  readonly #options: InviteSessionOptions
  readonly #keys: ReturnType<typeof deriveKeys>
  #state: InviteState = 'open'
  readonly #wrong = new WrongProofs()
  #short: { code: ShortCode; id: string } | undefined
  #shortFailures = 0
  /**
   * A short-code exchange is under way. Apart from `#state`'s `busy`: the short code's id is
   * public (the nameplate's), so anyone may start an exchange with it and let it run to its
   * deadline; that must not keep the long code, whose id only its holder knows, busy too.
   */
  #shortBusy = false
  readonly #joined = Promise.withResolvers<Joiner>()

  constructor(options: InviteSessionOptions) {
    this.#options = options
    this.#keys = deriveKeys(options.token)
    // Nobody may be awaiting it yet: a burned code rejects it before `joined` is read.
    this.#joined.promise.catch(() => {})
  }

  /** `open`, `busy` (an exchange is under way), `used` or `burned`. */
  get state(): InviteState {
    return this.#state
  }

  /** Resolves with the joiner once one has paired; rejects with {@link CodeUsedError} when burned. */
  get joined(): Promise<Joiner> {
    return this.#joined.promise
  }

  /**
   * Takes `code` as well, from now on: the relay gave the invite its nameplate. The short code
   * follows its own rule: {@link MAX_SHORT_CODE_FAILURES} wrong tries in all burn it (and only it).
   */
  offerShort(code: ShortCode): void {
    this.#short = { code, id: shortCodeId(code.nameplate) }
    this.#shortFailures = 0
  }

  /** Whether the short code was burned by wrong tries. */
  get shortBurned(): boolean {
    return this.#shortFailures >= MAX_SHORT_CODE_FAILURES
  }

  open(codeId: string, joiner: string, now: Date, pake?: PakeHello): Opened<InviteEntry> {
    if (this.#short !== undefined && codeId === this.#short.id) {
      return this.#openShort(this.#short.code, joiner, now, pake)
    }
    // Before anything else: whoever does not know the code id learns nothing of this code's state
    // from the answer, and costs it nothing (a 64-bit id derived from the token is not guessed online).
    if (codeId !== this.#keys.codeId) return { ok: false, reason: 'unknown-code' }
    if (this.#state === 'used' || this.#state === 'burned') return { ok: false, reason: this.#state }
    if (now.getTime() >= this.#options.expires.getTime()) return { ok: false, reason: 'expired' }
    if (this.#wrong.shutOut(joiner)) return { ok: false, reason: 'burned', remaining: 0 }
    if (this.#state === 'busy') return { ok: false, reason: 'busy' }
    this.#state = 'busy'
    return { ok: true, entry: 'invite', key: this.#keys.key }
  }

  #openShort(code: ShortCode, joiner: string, now: Date, pake: PakeHello | undefined): Opened<InviteEntry> {
    if (this.#state === 'used' || this.#state === 'burned') return { ok: false, reason: this.#state }
    if (now.getTime() >= this.#options.expires.getTime()) return { ok: false, reason: 'expired' }
    if (this.shortBurned) return { ok: false, reason: 'burned', remaining: 0 }
    if (this.#shortBusy) return { ok: false, reason: 'busy' }
    if (pake === undefined) return { ok: false, reason: 'bad-message' }
    const party = new CPaceParty(
      'responder',
      shortCodeCPace(code, { inviter: pake.inviter, joiner }, pake.nonce),
    )
    const isk = party.finish(Uint8Array.from(Buffer.from(pake.share, 'hex')))
    // A share that is no group element (or the identity) tests no password: refused, not counted.
    if (isk === undefined) return { ok: false, reason: 'bad-message' }
    this.#shortBusy = true
    return {
      ok: true,
      entry: 'short',
      key: pakeProofKey(isk),
      share: Buffer.from(party.share).toString('hex'),
    }
  }

  fail(entry: InviteEntry, joiner: string): ProofFailure {
    if (entry === 'short') {
      // Every wrong try counts, whoever makes it: the words are what a guesser is after, and
      // fresh peer ids cost nothing.
      this.#shortFailures++
      this.#shortBusy = false
      const remaining = Math.max(MAX_SHORT_CODE_FAILURES - this.#shortFailures, 0)
      this.#options.onShortFailure?.(joiner, remaining)
      return { remaining, burned: remaining === 0 }
    }
    const failure = this.#wrong.record(joiner)
    if (this.#state === 'used') {
      // The short code paired someone meanwhile: the invite is over either way.
      return failure
    }
    if (failure.burned) {
      this.#state = 'burned'
      this.#joined.reject(
        new CodeUsedError(
          `the pairing code was burned after ${this.#wrong.total} wrong proofs from ${this.#wrong.peers} peer${this.#wrong.peers === 1 ? '' : 's'}`,
          {
            hint: 'someone who has seen the code (or a broken peerup) kept proving it wrong; make a new one with `peerup invite` and share it only with the person you mean',
          },
        ),
      )
      return failure
    }
    this.#state = 'open'
    if (failure.remaining === 0) {
      this.#options.onShutOut?.(joiner)
    }
    return failure
  }

  async accept(entry: InviteEntry, joiner: Joiner): Promise<AcceptExtras> {
    this.release(entry)
    // The other code may have paired someone while this exchange ran: one invite, one joiner.
    if (this.#state === 'used' || this.#state === 'burned') {
      throw new CodeUsedError('the code was used already')
    }
    if (Date.now() >= this.#options.expires.getTime()) {
      throw new CodeExpiredError('the code expired during the exchange')
    }
    // Used from here on, even if writing fails below: a code is never good twice.
    this.#state = 'used'
    try {
      const extras = await this.#options.onJoin(joiner)
      this.#joined.resolve(joiner)
      return extras
    } catch (err) {
      this.#joined.reject(err)
      throw err
    }
  }

  release(entry: InviteEntry): void {
    if (entry === 'short') {
      this.#shortBusy = false
    } else if (this.#state === 'busy') {
      this.#state = 'open'
    }
  }
}
