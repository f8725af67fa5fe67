/**
 * The daemon's dial socket as an end: after `POST /v1/dial` and `101 Switching Protocols`, the Unix
 * socket between a CLI command and the daemon carries frames (src/pipe/frames.ts: DATA, FIN,
 * RESET), because a Unix socket has no RST — closing it looks like a clean end to the other side,
 * so a transfer cut by a failure on the far side would pass for a complete one. Both the CLI and
 * the daemon see their side of the socket through this.
 *
 * @packageDocumentation
 */

import type { Duplex } from 'node:stream'
import type { ByteEnd, Chunk, EndEvents } from './end.ts'
import { FramingCutError, RemoteResetError } from './errors.ts'
import { dataFrame, FRAME, type Frame, FrameParser, FrameReader, finFrame, resetFrame } from './frames.ts'
import { Listeners } from './listeners.ts'

/** The largest payload of one frame; larger writes are split. */
export const MAX_DIAL_FRAME_PAYLOAD = 1024 * 1024

/** `socket` (after the HTTP upgrade; `head`: bytes that came with it) as an end. */
export function framedEnd(socket: Duplex, head?: Buffer): ByteEnd {
  return new FramedEnd(socket, head)
}

class FramedEnd extends FrameReader implements ByteEnd {
  readonly name = 'daemon dial socket'
  readonly #socket: Duplex
  readonly #head: Buffer | undefined
  readonly #parser = new FrameParser(MAX_DIAL_FRAME_PAYLOAD, [FRAME.DATA, FRAME.FIN, FRAME.RESET])
  readonly #listeners = new Listeners()
  #events: EndEvents | undefined
  #gotFin = false
  #gotReset = false
  #finSent = false
  #wantDrain = false
  #resetDone = false

  constructor(socket: Duplex, head: Buffer | undefined) {
    super()
    this.#socket = socket
    this.#head = head
  }

  start(events: EndEvents): void {
    this.#events = events
    const socket = this.#socket
    this.#listeners
      .on(socket, 'data', (chunk: Buffer) => this.#onData(chunk))
      .on(socket, 'end', () => {
        if (!this.received.finParsed && !this.#gotReset) {
          this.#fail(new FramingCutError('the dial socket ended without saying how'))
        }
      })
      // Closed before both directions ended: what was still to be sent or received is lost.
      .on(socket, 'close', () => {
        if (!this.#gotReset && (!this.received.finParsed || !this.#finSent)) {
          this.#fail(new FramingCutError('the dial socket closed without saying how'))
        }
      })
      .on(socket, 'error', (err: Error) => this.#gotReset || this.#fail(err))
      .on(socket, 'drain', () => {
        if (this.#wantDrain) {
          this.#wantDrain = false
          this.#events?.drain()
        }
      })
    if (this.#head !== undefined && this.#head.length > 0) {
      this.#onData(this.#head)
    }
    socket.resume()
  }

  #fail(err: Error): void {
    this.#gotReset = true
    this.#events?.error(err)
  }

  #onData(chunk: Buffer): void {
    try {
      this.received.push(this.#parser.push(chunk))
    } catch {
      this.#fail(new FramingCutError('malformed frame on the dial socket'))
      this.#socket.destroy()
      return
    }
    this.deliver()
  }

  // Frames are handed on in order, and only while the reader wants them.
  protected deliver(): void {
    this.received.drain((frame: Frame) => {
      if (frame.type === 'data') {
        this.#events?.data(frame.payload)
      } else if (frame.type === 'fin') {
        this.#gotFin = true
        this.#events?.end()
        this.#maybeEndSocket()
      } else if (frame.type === 'reset') {
        this.#fail(new RemoteResetError(frame.reason || 'the connection was reset'))
      }
      return !this.#gotReset
    })
    if (this.received.paused) {
      this.#socket.pause()
    }
  }

  // Both directions ended cleanly: the socket's job is done.
  #maybeEndSocket(): void {
    if (this.#gotFin && this.#finSent && !this.#socket.destroyed) {
      this.#socket.end()
    }
  }

  override pause(): void {
    super.pause()
    this.#socket.pause()
  }

  override resume(): void {
    super.resume()
    if (!this.received.paused && !this.#socket.destroyed) {
      this.#socket.resume()
    }
  }

  write(chunk: Chunk): boolean {
    const socket = this.#socket
    if (socket.destroyed || !socket.writable) {
      throw new FramingCutError('the dial socket is gone')
    }
    socket.cork()
    for (let offset = 0; offset < chunk.byteLength; offset += MAX_DIAL_FRAME_PAYLOAD) {
      const part =
        chunk.byteLength <= MAX_DIAL_FRAME_PAYLOAD
          ? chunk
          : chunk.subarray(offset, offset + MAX_DIAL_FRAME_PAYLOAD)
      for (const buf of dataFrame(part)) {
        socket.write(buf)
      }
    }
    socket.uncork()
    // More than the socket's high-water mark may wait: a frame is worth sending whole.
    if (socket.writableLength < MAX_DIAL_FRAME_PAYLOAD) {
      return true
    }
    this.#wantDrain = true
    return false
  }

  end(): void {
    const socket = this.#socket
    if (socket.destroyed || !socket.writable) {
      this.#fail(new FramingCutError('the dial socket is gone'))
      return
    }
    socket.write(finFrame(), (err) => {
      if (err == null) {
        this.#finSent = true
        this.#events?.finish()
        this.#maybeEndSocket()
      }
    })
  }

  reset(reason: Error): void {
    if (this.#resetDone) {
      return
    }
    this.#resetDone = true
    const socket = this.#socket
    if (!socket.destroyed && socket.writable && !this.#gotReset) {
      socket.end(resetFrame(reason.message))
    } else {
      socket.destroy()
    }
  }

  detach(): void {
    this.#events = undefined
    this.#listeners.removeAll()
    this.#socket.on('error', () => {})
  }
}
