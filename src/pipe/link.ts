/**
 * What a resumable session (src/pipe/session.ts) runs over for a while: a link that carries its
 * frames — a libp2p stream on `/peerup/session/1.0.0`, or, in tests, an in-memory pair. A link can
 * go away at any time (a reset, a relay restart, a NAT that forgot the connection); the session
 * outlives it and moves to the next.
 *
 * @packageDocumentation
 */

import type { Duplex } from 'node:stream'
import type { Stream, StreamCloseEvent, StreamMessageEvent } from '@libp2p/interface'
import type { Uint8ArrayList } from 'uint8arraylist'
import type { Chunk } from './end.ts'
import { FrameError } from './errors.ts'
import { FRAME, type Frame, FrameParser, resetFrame } from './frames.ts'
import { Listeners } from './listeners.ts'
import { resetSocket, writeChunk } from './node.ts'

/** The protocol of resumable sessions: one for every service, named in the first frame. */
export const SESSION_PROTOCOL = '/peerup/session/1.0.0'

/** Largest DATA payload of a session frame. */
export const SESSION_MAX_FRAME_BYTES = 256 * 1024

export interface LinkEvents {
  frame(frame: Frame): void
  /** The link takes sends again after one returned false. */
  drain(): void
  /** The link is gone (`err` when it failed rather than closed): nothing more comes or goes. */
  gone(err?: Error): void
}

export interface Link {
  /** The remote peer id, which authenticated the link. */
  readonly peer: string
  /** Sends frames; false asks to wait for `drain`. Throws once the link is gone. */
  send(frames: Chunk): boolean
  /**
   * From now on, reports go to `events`; frames kept by {@link Link.hold} are handed over first —
   * unless `keepHolding`, when only the link's going is reported and frames stay kept.
   */
  listen(events: LinkEvents, keepHolding?: boolean): void
  /** Keeps arriving frames until the next {@link Link.listen}. */
  hold(): void
  /** Closes once what was sent has left; resolves then (or once the link was aborted instead). */
  close(): Promise<void>
  /** Resets the link; the other side sees it fail. */
  abort(err: Error): void
  /** Whether the connection under the link still answers; rejects when it does not. */
  probe?(signal: AbortSignal): Promise<void>
  /** Aborts the connection under the link (it stopped answering): every link over it goes. */
  sever?(err: Error): void
}

/** Tells the other side why with a RESET, then closes; a link that cannot send any more is aborted. */
export function sendReset(link: Link, err: Error): Promise<void> {
  try {
    link.send(resetFrame(err.message))
    return link.close()
  } catch {
    link.abort(err)
    return Promise.resolve()
  }
}

/** What a link can do to the connection under it. */
export interface StreamLinkOptions {
  probe?: (signal: AbortSignal) => Promise<void>
  sever?: (err: Error) => void
}

/** A libp2p stream on {@link SESSION_PROTOCOL} as a link. */
export function streamLink(stream: Stream, peer: string, options: StreamLinkOptions = {}): Link {
  return new StreamLink(stream, peer, options)
}

/**
 * A connected byte socket as a link: the TLS socket of a bulk link (src/p2p/bulk.ts), which carries
 * one session's frames on a TCP connection of its own. `peer` must be who authenticated it.
 */
export function socketLink(socket: Duplex, peer: string, options: StreamLinkOptions = {}): Link {
  return new SocketLink(socket, peer, options)
}

/** What every link does alike: parse frames, hold them until someone listens, report going once. */
abstract class FramedLink implements Link {
  readonly peer: string
  readonly #parser = new FrameParser(SESSION_MAX_FRAME_BYTES, [
    FRAME.DATA,
    FRAME.FIN,
    FRAME.RESET,
    FRAME.ATTACH,
    FRAME.ACK,
  ])
  protected readonly listeners = new Listeners()
  readonly #held: Frame[] = []
  protected events: LinkEvents | undefined
  #holding = true
  protected gone = false

  readonly probe: ((signal: AbortSignal) => Promise<void>) | undefined
  readonly sever: ((err: Error) => void) | undefined

  constructor(peer: string, options: StreamLinkOptions) {
    this.peer = peer
    this.probe = options.probe
    this.sever = options.sever
  }

  protected received(data: Uint8Array | Uint8ArrayList): void {
    let frames: Frame[]
    try {
      frames = this.#parser.push(data)
    } catch (err) {
      this.abort(err instanceof FrameError ? err : new FrameError('malformed session frame'))
      return
    }
    for (const frame of frames) {
      if (this.#holding) {
        this.#held.push(frame)
      } else {
        this.events?.frame(frame)
      }
    }
  }

  protected goneWith(err: Error | undefined): void {
    if (this.gone) {
      return
    }
    this.gone = true
    this.listeners.removeAll()
    this.events?.gone(err)
  }

  abstract send(frames: Chunk): boolean
  abstract close(): Promise<void>
  abstract abort(err: Error): void

  listen(events: LinkEvents, keepHolding = false): void {
    this.events = events
    this.#holding = keepHolding
    while (!this.#holding && this.#held.length > 0) {
      events.frame(this.#held.shift() as Frame)
    }
    if (this.gone) {
      events.gone()
    }
  }

  hold(): void {
    this.#holding = true
  }
}

class StreamLink extends FramedLink {
  readonly #stream: Stream

  constructor(stream: Stream, peer: string, options: StreamLinkOptions) {
    super(peer, options)
    this.#stream = stream
    this.listeners
      .listen(stream, 'message', (evt: StreamMessageEvent) => this.received(evt.data))
      .listen(stream, 'drain', () => this.events?.drain())
      // The other side closing its half before the session is done is the link going away too.
      .listen(stream, 'end', () => this.goneWith(undefined))
      .listen(stream, 'close', (evt: StreamCloseEvent) => this.goneWith(evt.error))
    if (stream.readStatus === 'paused') {
      stream.resume()
    }
  }

  send(frames: Chunk): boolean {
    return this.#stream.send(frames)
  }

  close(): Promise<void> {
    this.listeners.removeAll()
    this.gone = true
    return this.#stream.close().catch((err: unknown) => this.#stream.abort(err as Error))
  }

  abort(err: Error): void {
    // Reported first: aborting the stream emits its own 'end' and 'close' at once.
    this.goneWith(err)
    this.#stream.abort(err)
  }
}

class SocketLink extends FramedLink {
  readonly #socket: Duplex

  constructor(socket: Duplex, peer: string, options: StreamLinkOptions) {
    super(peer, options)
    this.#socket = socket
    this.listeners
      .on(socket, 'data', (chunk: Buffer) => this.received(chunk))
      .on(socket, 'drain', () => this.events?.drain())
      .on(socket, 'end', () => this.goneWith(undefined))
      .on(socket, 'error', (err: Error) => this.goneWith(err))
      .on(socket, 'close', () => this.goneWith(undefined))
    // Late errors of a socket we let go must not become uncaught exceptions.
    socket.on('error', () => {})
  }

  send(frames: Chunk): boolean {
    if (this.gone || this.#socket.destroyed) {
      throw new FrameError('the link is gone')
    }
    return writeChunk(this.#socket, frames)
  }

  close(): Promise<void> {
    this.listeners.removeAll()
    this.gone = true
    const socket = this.#socket
    return new Promise<void>((resolve) => {
      if (socket.destroyed) {
        resolve()
        return
      }
      socket.once('close', () => resolve())
      // What the other side still sends is not read any more; the socket closes once it ended too.
      socket.resume()
      socket.end()
    })
  }

  abort(err: Error): void {
    this.goneWith(err)
    resetSocket(this.#socket)
  }
}
