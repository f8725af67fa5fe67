/**
 * The answering side of a pairing: {@link answerPairing} runs the exchange of
 * src/invite/protocol.ts on one stream against a {@link CodeBook} that knows the codes (one for
 * `peerup invite`, many for a relay's group codes). {@link InviteSession} is the book of one
 * `peerup invite`: a single-use code that burns after {@link MAX_FAILED_PROOFS} wrong proofs,
 * refuses itself once expired by *this* machine's clock, and says who joined.
 *
 * @packageDocumentation
 */

import type { Connection, Stream } from '@libp2p/interface'
import type { Logger } from '../log/index.ts'
import type { Observer } from '../metrics/observer.ts'
import { CodeExpiredError, CodeUsedError } from './errors.ts'
import { usableName } from './names.ts'
import {
  deriveKeys,
  Framed,
  freshNonce,
  MAX_FAILED_PROOFS,
  macEquals,
  PAIRING_VERSION,
  type PairingMessage,
  proofMac,
  type RefusalReason,
  STEP_TIMEOUT_MS,
} from './protocol.ts'

/** What the accept message carries besides the MAC. */
export type AcceptExtras = Omit<Extract<PairingMessage, { type: 'accept' }>, 'type' | 'mac'>

/** The joiner, once it has proven the token. */
export interface Joiner {
  peerId: string
  /** The name it gave itself, made valid (or undefined). */
  name: string | undefined
}

/** The result of looking a code up at hello. */
export type Opened<E> =
  | { ok: true; entry: E; key: Uint8Array }
  | { ok: false; reason: RefusalReason; remaining?: number }

/** The codes an answering side knows. */
export interface CodeBook<E> {
  /** Called at hello: the entry to prove against, or why not (this may count as a failure). */
  open(codeId: string, joiner: string, now: Date): Opened<E>
  /** A wrong proof for `entry`: returns the attempts left (0: burned). */
  fail(entry: E): number
  /** The proof was right: commit (authorize, sponsor…) and return what the accept carries. */
  accept(entry: E, joiner: Joiner): Promise<AcceptExtras>
  /** After the accept was sent: a relay group streams introductions here until the group is full. */
  afterAccept?(entry: E, send: (m: PairingMessage) => Promise<void>, signal: AbortSignal): Promise<void>
  /** The exchange ended before the proof was judged: the entry is free again. */
  release(entry: E): void
}

/** Options of {@link answerPairing}. */
export interface AnswerOptions<E> {
  localPeerId: string
  book: CodeBook<E>
  log: Logger
  /** Pairing attempts go to the audit log through it; `role` says who answered. */
  observer?: Observer
  role?: 'inviter' | 'relay'
  now?: () => Date
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
  const now = options.now ?? (() => new Date())
  const { log, book } = options
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
    const opened = book.open(hello.code, joiner, now())
    if (!opened.ok) {
      log.warn('pairing refused', { peer: joiner, reason: opened.reason, remaining: opened.remaining })
      options.observer?.pairing({
        role: options.role ?? 'inviter',
        outcome: 'refused',
        peer: joiner,
        reason: opened.reason,
      })
      await framed.refuse(opened.reason, opened.remaining)
      return
    }
    held = opened.entry
    const nonces = { inviter: freshNonce(), joiner: hello.nonce }
    const ids = { inviter: options.localPeerId, joiner }
    await framed.send({ type: 'challenge', nonce: nonces.inviter })
    const proof = await framed.read(['proof'], { signal: options.signal })
    if (proof.type === 'error') {
      return
    }
    judged = true
    if (!macEquals(proof.mac, proofMac(opened.key, 'joiner', ids, nonces))) {
      const remaining = book.fail(opened.entry)
      log.warn('wrong pairing proof', { peer: joiner, remaining })
      options.observer?.pairing({
        role: options.role ?? 'inviter',
        outcome: 'refused',
        peer: joiner,
        reason: remaining === 0 ? 'burned' : 'wrong-proof',
      })
      await framed.refuse(remaining === 0 ? 'burned' : 'wrong-proof', remaining)
      return
    }
    const accepted: Joiner = { peerId: joiner, name: usableName(proof.name) }
    let extras: AcceptExtras
    try {
      extras = await book.accept(opened.entry, accepted)
    } catch (err) {
      log.error('pairing failed after the proof', { peer: joiner, error: err as Error })
      options.observer?.pairing({
        role: options.role ?? 'inviter',
        outcome: 'failed',
        peer: joiner,
        reason: (err as Error).name,
      })
      await framed.refuse(
        err instanceof CodeExpiredError ? 'expired' : err instanceof CodeUsedError ? 'used' : 'failed',
      )
      return
    }
    await framed.send({ type: 'accept', mac: proofMac(opened.key, 'inviter', ids, nonces), ...extras })
    log.info('peer paired', { peer: joiner, name: accepted.name })
    options.observer?.pairing({
      role: options.role ?? 'inviter',
      outcome: 'paired',
      peer: joiner,
      ...(accepted.name === undefined ? {} : { name: accepted.name }),
    })
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

/** Options of {@link InviteSession}. */
export interface InviteSessionOptions {
  token: Uint8Array
  expires: Date
  /**
   * Commits a proven joiner: authorize it, record its name, sponsor it at the relay. Runs once;
   * what it returns goes into the accept.
   */
  onJoin: (joiner: Joiner) => Promise<AcceptExtras>
}

/** The state of one `peerup invite` code. */
export type InviteState = 'open' | 'busy' | 'used' | 'burned'

/** The code book of a single-use invite. */
export class InviteSession implements CodeBook<'invite'> {
  readonly #codeId: string
  readonly #key: Uint8Array
  readonly #expires: Date
  readonly #onJoin: InviteSessionOptions['onJoin']
  #state: InviteState = 'open'
  #failures = 0
  readonly #joined = Promise.withResolvers<Joiner>()

  constructor(options: InviteSessionOptions) {
    const keys = deriveKeys(options.token)
    this.#codeId = keys.codeId
    this.#key = keys.key
    this.#expires = options.expires
    this.#onJoin = options.onJoin
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

  open(codeId: string, _joiner: string, now: Date): Opened<'invite'> {
    if (this.#state === 'used') return { ok: false, reason: 'used' }
    if (this.#state === 'burned') return { ok: false, reason: 'burned' }
    if (now.getTime() >= this.#expires.getTime()) return { ok: false, reason: 'expired' }
    if (this.#state === 'busy') return { ok: false, reason: 'busy' }
    if (codeId !== this.#codeId) {
      // Not this code: a guess (the id is derived from the token), so it counts like a wrong proof.
      const remaining = this.fail('invite')
      return { ok: false, reason: remaining === 0 ? 'burned' : 'wrong-proof', remaining }
    }
    this.#state = 'busy'
    return { ok: true, entry: 'invite', key: this.#key }
  }

  fail(_entry?: 'invite'): number {
    this.#failures++
    if (this.#failures >= MAX_FAILED_PROOFS) {
      this.#state = 'burned'
      this.#joined.reject(
        new CodeUsedError(`the pairing code was burned after ${MAX_FAILED_PROOFS} wrong attempts`, {
          hint: 'someone tried to join with a wrong code; make a new one with `peerup invite`',
        }),
      )
      return 0
    }
    this.#state = 'open'
    return MAX_FAILED_PROOFS - this.#failures
  }

  async accept(_entry: 'invite', joiner: Joiner): Promise<AcceptExtras> {
    if (Date.now() >= this.#expires.getTime()) {
      this.#state = 'open'
      throw new CodeExpiredError('the code expired during the exchange')
    }
    // Used from here on, even if writing fails below: a code is never good twice.
    this.#state = 'used'
    try {
      const extras = await this.#onJoin(joiner)
      this.#joined.resolve(joiner)
      return extras
    } catch (err) {
      this.#joined.reject(err)
      throw err
    }
  }

  release(): void {
    if (this.#state === 'busy') {
      this.#state = 'open'
    }
  }
}
