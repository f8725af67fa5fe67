/**
 * Resumable sessions (docs/decisions/0006-sessions.md): a proxied connection is a session with an
 * id, and the libp2p stream under it is only its current link. Both sides keep what they sent until
 * the other acknowledges it (at most a window, which is also the flow control), and when the link
 * goes — a reset, a relay restart, a NAT that forgot the connection — both keep their local sockets
 * open, the side that opened the session attaches it again over whatever connection it can get,
 * and each side sends again from where the other says its reading stands. Nothing is lost,
 * repeated or reordered; past the grace period both local sockets are reset.
 *
 * Positions count the bytes of one direction, plus one for its FIN: an ACK of `n` says the first
 * `n` were delivered to the local end (written to the local socket). ATTACH frames carry where the
 * sender's reading stands, so each side knows where the other's sending resumes.
 *
 * @packageDocumentation
 */

import { Uint8ArrayList } from 'uint8arraylist'
import type { SessionCountsState } from '../api/index.ts'
import { PeerupError } from '../errors.ts'
import type { Logger } from '../log/index.ts'
import { backoffDelayMs, sleep } from '../util/retry.ts'
import type { ByteEnd, Chunk, EndEvents } from './end.ts'
import { RemoteResetError, TransferInterruptedError } from './errors.ts'
import {
  type Attach,
  ackFrame,
  attachFrame,
  dataFrame,
  type Frame,
  FrameQueue,
  FrameReader,
  finFrame,
  SESSION_ID_BYTES,
} from './frames.ts'
import { type Link, type LinkEvents, SESSION_MAX_FRAME_BYTES, sendReset } from './link.ts'

/** Bytes a side may have sent and not had acknowledged: the memory a session may hold each way. */
export const SESSION_WINDOW_BYTES = 4 * 1024 * 1024

/** How long a session waits for its link to come back before both local sockets are reset. */
export const DEFAULT_RESUME_GRACE_MS = 120_000

/** How long delivered bytes may wait for their ACK when fewer than a quarter window came. */
const ACK_DELAY_MS = 20

/** With bytes in flight and no ACK for this long, the link is probed; if the probe fails, severed. */
const STALL_MS = 5_000

/** The other side refused to attach the session: it does not know it, or will not serve it. */
export class SessionRefusedError extends PeerupError {
  override name = 'SessionRefusedError'
}

/** The link did not come back within the grace period. */
export class SessionExpiredError extends PeerupError {
  override name = 'SessionExpiredError'
}

/** The other side broke the session's protocol. */
export class SessionProtocolError extends PeerupError {
  override name = 'SessionProtocolError'
}

/** A new session id: 16 random bytes. */
export function newSessionId(): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(SESSION_ID_BYTES))
}

/** A session id as text, for logs and as a map key. */
export function sessionIdText(id: Uint8Array): string {
  return Buffer.from(id).toString('hex')
}

/**
 * The opening side's handshake on a fresh link: sends ATTACH and resolves with where the other
 * side's reading stands, once it answered with ATTACH; a RESET answer is a {@link SessionRefusedError}.
 * The link then holds what follows until the session listens.
 */
export function handshake(link: Link, attach: Attach, signal: AbortSignal): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    let settled = false
    const done = (err: Error | undefined, received?: number): void => {
      // Aborting the link below reports its going again: only the first outcome counts.
      if (settled) {
        return
      }
      settled = true
      signal.removeEventListener('abort', onAbort)
      if (err === undefined) {
        link.hold()
        resolve(received as number)
      } else {
        reject(err)
        link.abort(err)
      }
    }
    const onAbort = (): void => done(signal.reason instanceof Error ? signal.reason : new Error('aborted'))
    signal.addEventListener('abort', onAbort, { once: true })
    link.listen({
      frame: (frame) => {
        if (frame.type === 'attach' && Buffer.from(frame.id).equals(Buffer.from(attach.id))) {
          done(undefined, frame.received)
        } else if (frame.type === 'reset') {
          done(new SessionRefusedError(frame.reason))
        } else {
          done(new SessionProtocolError(`expected ATTACH, got ${frame.type.toUpperCase()}`))
        }
      },
      drain: () => {},
      gone: (err) => done(err ?? new TransferInterruptedError('the link closed during the handshake')),
    })
    if (signal.aborted) {
      onAbort()
      return
    }
    link.send(attachFrame(attach))
  })
}

export interface SessionInit {
  id: Uint8Array
  /** What it is, for logs. */
  name: string
  /** The opening side attaches the session again when its link goes; the accepting side waits. */
  role: 'opener' | 'acceptor'
  windowBytes?: number
  graceMs?: number
  /** The opening side's way to a new link to the same peer (any path), for {@link handshake}. */
  reconnect?: (signal: AbortSignal) => Promise<Link>
  /** Whether the link's connection still answers (a ping); a rejection severs it. */
  probe?: (link: Link, signal: AbortSignal) => Promise<void>
  /** How long bytes in flight may go unacknowledged before the link is probed (and the probe's bound). */
  stallMs?: number
  log?: Logger
  /** The session moved to another link, or lost its link (`attached: false`). */
  onLink?: (attached: boolean, err?: Error) => void
  /** The session is over (finished, reset or expired): it may be forgotten. */
  onDone?: (err?: Error) => void
  /**
   * Called once, when the bytes written and delivered together first reach `bytes`: a bulk
   * transfer, which the opener may move to a link of its own (src/p2p/bulk.ts).
   */
  volume?: { bytes: number; reached: () => void }
}

/** What one side's sessions are doing, and what they did since the node started. */
export type SessionCounts = SessionCountsState

/**
 * Counts what a side's sessions do: {@link SessionTally.watch} gives the callbacks of a
 * {@link SessionInit} that count its resumes and its expiry (and call the ones given).
 */
export class SessionTally {
  resumed = 0
  moved = 0
  expired = 0

  watch(init: Pick<SessionInit, 'onLink' | 'onDone'>): Required<Pick<SessionInit, 'onLink' | 'onDone'>> {
    let lost = false
    return {
      onLink: (attached, err) => {
        if (attached && lost) {
          this.resumed++
        }
        lost = !attached
        init.onLink?.(attached, err)
      },
      onDone: (err) => {
        if (err instanceof SessionExpiredError) {
          this.expired++
        }
        init.onDone?.(err)
      },
    }
  }

  /** The counts, with `sessions` the ones not over. */
  counts(sessions: Session[]): SessionCounts {
    const waiting = sessions.filter((s) => s.state === 'detached').length
    return { open: sessions.length, waiting, resumed: this.resumed, moved: this.moved, expired: this.expired }
  }
}

export class Session extends FrameReader implements ByteEnd {
  readonly id: Uint8Array
  readonly name: string
  readonly #init: SessionInit
  readonly #window: number
  #events: EndEvents | undefined
  #state: 'attached' | 'detached' | 'over' = 'detached'
  #link: Link | undefined
  #linkBlocked = false
  // What we send: bytes accepted from the local end and not yet acknowledged, from `#ackedBytes`.
  readonly #unacked = new Uint8ArrayList()
  #written = 0
  #sent = 0
  #acked = 0
  #endWanted = false
  #finSent = false
  #finAcked = false
  #wantDrain = false
  // What we receive: frames not yet handed to the local end, and where delivery stands.
  #delivered = 0
  /** Bytes until {@link SessionInit.volume} is reached; 0 once it was (or without one). */
  #volumeLeft: number
  #ackSent = 0
  #skip = 0
  #ended = false
  #ackTimer: NodeJS.Timeout | undefined
  #graceTimer: NodeJS.Timeout | undefined
  #stallTimer: NodeJS.Timeout | undefined
  #flushImmediate: NodeJS.Immediate | undefined
  #reconnecting: AbortController | undefined
  /** A move to another link is under way: losing the old one meanwhile is expected. */
  #moving = false

  constructor(init: SessionInit) {
    super()
    this.#init = init
    this.id = init.id
    this.name = init.name
    this.#window = init.windowBytes ?? SESSION_WINDOW_BYTES
    this.#volumeLeft = init.volume?.bytes ?? 0
  }

  /** Where the session stands: carried by a link, waiting for one, or over. */
  get state(): 'attached' | 'detached' | 'over' {
    return this.#state
  }

  get link(): Link | undefined {
    return this.#link
  }

  get attached(): boolean {
    return this.#state === 'attached'
  }

  // ---- the end of a pipe ----

  start(events: EndEvents): void {
    this.#events = events
    this.deliver()
  }

  write(chunk: Chunk): boolean {
    if (this.#state === 'over') {
      throw new TransferInterruptedError('the session is over')
    }
    this.#unacked.append(chunk)
    this.#written += chunk.byteLength
    this.#count(chunk.byteLength)
    this.#flushSoon()
    if (this.#written - this.#ackedBytes() < this.#window) {
      return true
    }
    this.#wantDrain = true
    return false
  }

  end(): void {
    this.#endWanted = true
    this.#flushSoon()
  }

  reset(err: Error): void {
    void this.#resetLink(err)
  }

  /** {@link Session.reset}, resolving once the RESET has left (or the link is gone). */
  async #resetLink(err: Error): Promise<void> {
    if (this.#state === 'over') {
      return
    }
    const link = this.#link
    this.#over(err)
    if (link !== undefined) {
      await sendReset(link, err)
    }
  }

  detach(): void {
    this.#events = undefined
  }

  /**
   * Ends the session from outside its pipe (its peer was revoked): the other side gets a RESET,
   * and the local end the error, so that its pipe resets the local socket too.
   */
  cut(err: Error): Promise<void> {
    const events = this.#state === 'over' ? undefined : this.#events
    const sent = this.#resetLink(err)
    events?.error(err)
    return sent
  }

  // ---- links ----

  /**
   * Runs the session over `link`, on which the handshake was made: `theirReceived` is where the
   * other side's reading stands, so sending resumes there.
   */
  attach(link: Link, theirReceived: number): void {
    if (this.#state === 'over') {
      link.abort(new SessionRefusedError('the session is over'))
      return
    }
    const most = this.#written + (this.#endWanted ? 1 : 0)
    if (theirReceived < this.#acked || theirReceived > most) {
      this.#fail(new SessionProtocolError(`the other side says it read ${theirReceived} of ${most}`))
      link.abort(new SessionProtocolError('inconsistent position'))
      return
    }
    this.#onAck(theirReceived)
    this.#sent = Math.min(theirReceived, this.#written)
    this.#finSent = theirReceived > this.#written
    this.#link = link
    this.#linkBlocked = false
    this.#state = 'attached'
    clearTimeout(this.#graceTimer)
    this.#graceTimer = undefined
    link.listen(this.#linkEvents(link))
    this.#init.onLink?.(true)
    // Tell where our reading stands at once: the other side may free what it kept.
    this.#sendAck()
    this.#flush()
    this.#armStall()
  }

  /**
   * The accepting side: the opener attached the session again over `link` (after a failure, or to
   * move it to a better path). The old link, if any, is dropped; what the opener says it read is
   * sent again from there.
   */
  resumeOn(link: Link, theirReceived: number): void {
    const old = this.#link
    if (old !== undefined) {
      this.#link = undefined
      old.listen(IGNORE)
      old.abort(new TransferInterruptedError('the session moved to another link'))
    }
    // Frames of the old link not yet delivered come again over the new one, from where our ATTACH
    // says our reading stands: nothing to skip.
    this.received = this.#requeue()
    this.#skip = 0
    link.send(attachFrame(this.#resuming()))
    this.attach(link, theirReceived)
  }

  /**
   * The opening side moves the session to `link` on purpose (a better path appeared): the
   * handshake runs while the old link still carries the session; what arrives over both is
   * counted once.
   */
  async moveTo(link: Link, signal: AbortSignal): Promise<void> {
    if (this.#state !== 'attached' || this.#moving) {
      link.abort(new TransferInterruptedError('the session is not attached'))
      return
    }
    const attach = this.#resuming()
    this.#moving = true
    let theirs: number
    try {
      theirs = await handshake(link, attach, signal)
    } catch (err) {
      this.#moving = false
      if (this.#state === 'attached' && this.#link === undefined) {
        // The old link went while the move failed: lost like any other.
        this.#lost(err instanceof Error ? err : new Error(String(err)))
      } else {
        // What was read while the ACKs waited for the move.
        this.#sendAck()
      }
      throw err
    }
    this.#moving = false
    // The session may have ended while the handshake ran (TypeScript cannot know across the await).
    if ((this.#state as Session['state']) === 'over') {
      link.abort(new TransferInterruptedError('the session is over'))
      return
    }
    const old = this.#link
    this.#link = undefined
    if (old !== undefined) {
      old.listen(IGNORE)
      old.close()
    }
    // The other side sends again from what we declared; what came since over the old link is not
    // delivered twice. Until those bytes came again, #sendAck stays quiet: an ACK of where our
    // reading stands now would let the other side drop bytes it has still to send us on this
    // link, so that we would skip as many of the bytes that follow them.
    this.received = this.#requeue()
    this.#skip = this.#delivered - attach.received
    this.attach(link, theirs)
  }

  /** What our ATTACH says when the session comes back: where our reading stands. */
  #resuming(): Attach {
    return { id: this.id, resume: true, received: this.#delivered, service: '' }
  }

  #linkEvents(link: Link): LinkEvents {
    return {
      frame: (frame) => this.#link === link && this.#onFrame(frame),
      drain: () => {
        if (this.#link === link) {
          this.#linkBlocked = false
          this.#flush()
        }
      },
      gone: (err) => this.#link === link && this.#lost(err),
    }
  }

  #onFrame(frame: Frame): void {
    if (frame.type === 'ack') {
      if (frame.position > this.#written + (this.#finSent ? 1 : 0)) {
        this.#fail(new SessionProtocolError('acknowledged more than was sent'))
        return
      }
      this.#onAck(frame.position)
      return
    }
    if (frame.type === 'reset') {
      this.#fail(new RemoteResetError(frame.reason || 'the session was reset'))
      return
    }
    if (frame.type === 'data' || frame.type === 'fin') {
      this.#take(frame)
      return
    }
    this.#fail(new SessionProtocolError(`unexpected ${frame.type.toUpperCase()} frame`))
  }

  /** Queues a received frame, minus what was delivered already over a previous link. */
  #take(frame: Frame): void {
    if (this.#skip > 0) {
      if (frame.type === 'fin') {
        this.#skip--
        if (this.#skip === 0) {
          this.#sendAck()
        }
        return
      }
      if (frame.type === 'data') {
        const n = Math.min(this.#skip, frame.payload.byteLength)
        this.#skip -= n
        if (this.#skip === 0) {
          // The other side is back where our reading stands: it may hear so.
          this.#sendAck()
        }
        if (n === frame.payload.byteLength) {
          return
        }
        this.received.push([{ type: 'data', payload: frame.payload.sublist(n) }])
        this.deliver()
        return
      }
    }
    this.received.push([frame])
    this.deliver()
  }

  /** Counts bytes moved towards {@link SessionInit.volume}; calls it (later, once) on reaching it. */
  #count(n: number): void {
    if (this.#volumeLeft > 0) {
      this.#volumeLeft -= n
      if (this.#volumeLeft <= 0) {
        this.#volumeLeft = 0
        queueMicrotask(() => this.#state !== 'over' && this.#init.volume?.reached())
      }
    }
  }

  /** A queue with the frames of the one received not yet delivered dropped: they come again. */
  #requeue(): FrameQueue {
    const next = new FrameQueue()
    next.paused = this.received.paused
    return next
  }

  protected deliver(): void {
    if (this.#events === undefined) {
      return
    }
    this.received.drain((frame) => {
      if (frame.type === 'data') {
        this.#delivered += frame.payload.byteLength
        this.#count(frame.payload.byteLength)
        this.#events?.data(frame.payload)
        this.#scheduleAck()
      } else if (frame.type === 'fin') {
        this.#delivered++
        this.#ended = true
        this.#events?.end()
        this.#sendAck()
        this.#maybeOver()
      }
      return this.#state !== 'over'
    })
  }

  #scheduleAck(): void {
    if (this.#delivered - this.#ackSent >= this.#window / 4) {
      this.#sendAck()
    } else {
      this.#ackTimer ??= setTimeout(() => this.#sendAck(), ACK_DELAY_MS)
    }
  }

  #sendAck(): void {
    clearTimeout(this.#ackTimer)
    this.#ackTimer = undefined
    // While moving, our ATTACH on the new link has told the other side where our reading stood:
    // an ACK past that on the old link, arriving first, would let it free bytes it must then send
    // again from there ("the other side says it read …"). attach() acknowledges once moved.
    // Nor while bytes we delivered already come again after a move (#skip): see moveTo.
    if (this.#link === undefined || this.#moving || this.#skip > 0 || this.#delivered === this.#ackSent) {
      return
    }
    try {
      this.#link.send(ackFrame(this.#delivered))
      this.#ackSent = this.#delivered
    } catch {
      // The link is going: the next ATTACH says where we stand.
    }
  }

  #ackedBytes(): number {
    return Math.min(this.#acked, this.#written)
  }

  #onAck(position: number): void {
    if (position <= this.#acked) {
      return
    }
    this.#unacked.consume(Math.min(position, this.#written) - this.#ackedBytes())
    this.#acked = position
    // What was acknowledged is not sent again (nor can it be: it is let go).
    this.#sent = Math.max(this.#sent, Math.min(position, this.#written))
    this.#armStall()
    if (this.#endWanted && position > this.#written && !this.#finAcked) {
      this.#finAcked = true
      this.#events?.finish()
      this.#maybeOver()
    }
    if (this.#wantDrain && this.#written - this.#ackedBytes() < this.#window) {
      this.#wantDrain = false
      this.#events?.drain()
    }
  }

  /**
   * Flushes once what the local end wrote in this turn of the event loop is in: the reads of one
   * poll phase go out as one frame rather than one each, and the stream under the link sends
   * fewer, larger messages (each costs a header, a noise message and, from the other side, a
   * window update).
   */
  #flushSoon(): void {
    this.#flushImmediate ??= setImmediate(() => {
      this.#flushImmediate = undefined
      this.#flush()
    })
  }

  /** Sends what was written and not yet sent over this link, then the FIN once everything is. */
  #flush(): void {
    const link = this.#link
    if (link === undefined || this.#state !== 'attached') {
      return
    }
    try {
      while (this.#sent < this.#written && !this.#linkBlocked) {
        const from = this.#sent - this.#ackedBytes()
        const to = Math.min(from + SESSION_MAX_FRAME_BYTES, this.#unacked.byteLength)
        this.#sent += to - from
        if (!link.send(dataFrame(this.#unacked.sublist(from, to)))) {
          this.#linkBlocked = true
        }
      }
      if (this.#endWanted && !this.#finSent && this.#sent === this.#written && !this.#linkBlocked) {
        this.#finSent = true
        link.send(finFrame())
      }
    } catch (err) {
      this.#lost(err instanceof Error ? err : new Error(String(err)))
      return
    }
    // More bytes in flight do not restart the clock: it runs from the oldest unacknowledged one.
    this.#armStall(false)
  }

  /**
   * With something in flight, the link must acknowledge within {@link STALL_MS} or be probed. The
   * clock restarts when an ACK comes or the link changes (`restart`), not when more is sent: a
   * local end that keeps writing (keystrokes, a transfer filling the window) into a dead path must
   * not keep pushing the probe back.
   */
  #armStall(restart = true): void {
    if (!restart && this.#stallTimer !== undefined) {
      return
    }
    clearTimeout(this.#stallTimer)
    this.#stallTimer = undefined
    const inFlight = this.#sent > this.#ackedBytes() || (this.#finSent && !this.#finAcked)
    const link = this.#link
    if (!inFlight || link === undefined || this.#init.probe === undefined) {
      return
    }
    const acked = this.#acked
    const stallMs = this.#init.stallMs ?? STALL_MS
    this.#stallTimer = setTimeout(() => {
      if (this.#link !== link || this.#acked !== acked) {
        this.#stallTimer = undefined
        return
      }
      // No acknowledgement for a while: a slow reader, or a dead path. A ping tells them apart.
      this.#init.probe?.(link, AbortSignal.timeout(stallMs)).then(
        () => this.#link === link && this.#armStall(),
        (err: unknown) => {
          this.#init.log?.info('session link does not answer, moving on', { session: this.name })
          const error = err instanceof Error ? err : new Error(String(err))
          // The connection itself stopped answering: every link over it goes, not only this one.
          link.sever?.(error)
          link.abort(error)
          if (this.#link === link) {
            this.#lost(error)
          }
        },
      )
    }, stallMs)
    this.#stallTimer.unref?.()
  }

  /** The link went: keep everything, wait for (or go and make) the next one. */
  #lost(err: Error | undefined): void {
    if (this.#state !== 'attached') {
      return
    }
    this.#link = undefined
    this.#linkBlocked = false
    this.received = this.#requeue()
    // The next ATTACH says where our reading stands now: the other side sends from there, and
    // what a move left to skip on this link will not come.
    this.#skip = 0
    if (this.#moving) {
      // The other side dropped the old link as it took the new one.
      return
    }
    this.#state = 'detached'
    clearTimeout(this.#ackTimer)
    this.#ackTimer = undefined
    clearTimeout(this.#stallTimer)
    this.#stallTimer = undefined
    this.#init.log?.info('session lost its link', {
      session: this.name,
      ...(err === undefined ? {} : { error: err }),
    })
    this.#init.onLink?.(false, err)
    const graceMs = this.#init.graceMs ?? DEFAULT_RESUME_GRACE_MS
    this.#graceTimer = setTimeout(
      () =>
        this.#fail(
          new SessionExpiredError(`the connection did not come back within ${Math.round(graceMs / 1000)} s`),
        ),
      graceMs,
    )
    if (this.#init.role === 'opener') {
      void this.#reconnect()
    }
  }

  /** The opening side: attaches again over whatever connection can be had, until the grace ends. */
  async #reconnect(): Promise<void> {
    const reconnect = this.#init.reconnect
    if (reconnect === undefined) {
      return
    }
    const controller = new AbortController()
    this.#reconnecting = controller
    for (let attempt = 1; this.#state === 'detached' && !controller.signal.aborted; attempt++) {
      try {
        const link = await reconnect(controller.signal)
        const theirs = await handshake(link, this.#resuming(), controller.signal)
        if (this.#state === 'detached') {
          this.attach(link, theirs)
        } else {
          link.abort(new TransferInterruptedError('the session is over'))
        }
        return
      } catch (err) {
        if (err instanceof SessionRefusedError) {
          this.#fail(err)
          return
        }
        this.#init.log?.debug('session could not attach again yet', {
          session: this.name,
          attempt,
          error: err instanceof Error ? err : new Error(String(err)),
        })
        await sleep(
          backoffDelayMs(attempt, { baseMs: 250, maxMs: 5_000, jitter: 0.2 }),
          controller.signal,
        ).catch(() => {})
      }
    }
  }

  #maybeOver(): void {
    if (this.#ended && this.#finAcked && this.#state === 'attached') {
      const link = this.#link
      this.#over()
      link?.close()
    }
  }

  #fail(err: Error): void {
    if (this.#state === 'over') {
      return
    }
    const link = this.#link
    this.#over(err)
    if (err instanceof SessionProtocolError && link !== undefined) {
      // The other side broke the protocol: it is told, not left to wait out its grace period.
      void sendReset(link, err)
    } else {
      link?.abort(err)
    }
    this.#events?.error(err)
  }

  /** Finished or failed: nothing more happens, and what the session held is let go. */
  #over(err?: Error): void {
    this.#state = 'over'
    this.#link = undefined
    this.#reconnecting?.abort()
    for (const timer of [this.#ackTimer, this.#graceTimer, this.#stallTimer]) {
      clearTimeout(timer)
    }
    clearImmediate(this.#flushImmediate)
    this.#flushImmediate = undefined
    this.#unacked.consume(this.#unacked.byteLength)
    this.received = this.#requeue()
    this.#init.onDone?.(err)
  }
}

const IGNORE: LinkEvents = { frame: () => {}, drain: () => {}, gone: () => {} }
