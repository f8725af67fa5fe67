/**
 * The one frame codec of the data plane. A frame is a 5-byte header — type (1 byte) and payload
 * length (4 bytes, big endian) — then the payload:
 *
 * - `DATA`: bytes of the connection;
 * - `FIN`: this direction ended cleanly (a half-close; the other direction goes on);
 * - `RESET`: the connection failed; the payload is a one-line reason. Nothing follows;
 * - `CREDIT`: a u32, that many more bytes may be sent (flow control).
 *
 * Frames carry what a transport cannot say itself: a Unix socket has no RST, so the daemon's dial
 * socket (src/pipe/framed.ts) says with FIN or RESET how it ended; a WebRTC stream cannot be paused,
 * so a service over one is flow-controlled with CREDIT (src/pipe/stream.ts).
 *
 * @packageDocumentation
 */

import { Uint8ArrayList } from 'uint8arraylist'
import { FrameError } from './errors.ts'

/** Frame types. */
export const FRAME = { DATA: 0, FIN: 1, RESET: 2, CREDIT: 3 } as const

/** Bytes of a frame header. */
export const FRAME_HEADER_BYTES = 5

/** A parsed frame. */
export type Frame =
  | { type: 'data'; payload: Uint8ArrayList }
  | { type: 'fin' }
  | { type: 'reset'; reason: string }
  | { type: 'credit'; bytes: number }

function header(type: number, length: number): Uint8Array {
  const h = new Uint8Array(FRAME_HEADER_BYTES)
  h[0] = type
  new DataView(h.buffer).setUint32(1, length)
  return h
}

/** A DATA frame around `payload` (no copy of the payload). */
export function dataFrame(payload: Uint8Array | Uint8ArrayList): Uint8ArrayList {
  return new Uint8ArrayList(header(FRAME.DATA, payload.byteLength), payload)
}

/** A FIN frame. */
export function finFrame(): Uint8Array {
  return header(FRAME.FIN, 0)
}

/** A RESET frame saying why, in one line. */
export function resetFrame(reason: string): Uint8Array {
  const text = new TextEncoder().encode((reason.split('\n')[0] ?? '').slice(0, 512) || 'reset')
  const frame = new Uint8Array(FRAME_HEADER_BYTES + text.byteLength)
  frame.set(header(FRAME.RESET, text.byteLength))
  frame.set(text, FRAME_HEADER_BYTES)
  return frame
}

/** A CREDIT frame granting `n` more bytes. */
export function creditFrame(n: number): Uint8Array {
  const frame = new Uint8Array(FRAME_HEADER_BYTES + 4)
  frame.set(header(FRAME.CREDIT, 4))
  new DataView(frame.buffer).setUint32(FRAME_HEADER_BYTES, n)
  return frame
}

/** Cuts a byte stream into frames, across chunk boundaries. */
export class FrameParser {
  readonly #buf = new Uint8ArrayList()
  readonly #maxPayload: number
  readonly #types: ReadonlySet<number>

  /**
   * @param maxPayload - the largest DATA payload accepted
   * @param types - the frame types this connection may carry (the others are a protocol error)
   */
  constructor(maxPayload: number, types: ReadonlyArray<(typeof FRAME)[keyof typeof FRAME]>) {
    this.#maxPayload = maxPayload
    this.#types = new Set(types)
  }

  /** Adds received bytes and returns the frames they complete; throws a FrameError on garbage. */
  push(data: Uint8Array | Uint8ArrayList): Frame[] {
    this.#buf.append(data)
    const frames: Frame[] = []
    while (this.#buf.byteLength >= FRAME_HEADER_BYTES) {
      const type = this.#buf.get(0)
      const length = this.#buf.getUint32(1)
      if (
        !this.#types.has(type) ||
        (type === FRAME.DATA && length > this.#maxPayload) ||
        (type === FRAME.FIN && length !== 0) ||
        (type === FRAME.CREDIT && length !== 4) ||
        (type === FRAME.RESET && length > 4096)
      ) {
        throw new FrameError('malformed frame')
      }
      if (this.#buf.byteLength < FRAME_HEADER_BYTES + length) {
        break
      }
      const end = FRAME_HEADER_BYTES + length
      if (type === FRAME.DATA) {
        // A list of the received chunks, not a copy: a 1 MiB frame that came in 64 KiB reads is
        // copied once, by whoever needs it contiguous.
        frames.push({ type: 'data', payload: this.#buf.sublist(FRAME_HEADER_BYTES, end) })
      } else if (type === FRAME.FIN) {
        frames.push({ type: 'fin' })
      } else if (type === FRAME.RESET) {
        frames.push({
          type: 'reset',
          reason: new TextDecoder().decode(this.#buf.subarray(FRAME_HEADER_BYTES, end)),
        })
      } else {
        frames.push({ type: 'credit', bytes: this.#buf.getUint32(FRAME_HEADER_BYTES) })
      }
      this.#buf.consume(end)
    }
    return frames
  }
}

/**
 * Frames received and not yet handed on: they go on in order, and only while the reader wants
 * them (a paused reader leaves them queued). A FIN is noted as soon as it is parsed, so that the
 * transport ending right after it is not taken for a cut while the FIN still waits here.
 */
export class FrameQueue {
  readonly #frames: Frame[] = []
  /** The reader asked to wait. */
  paused = false
  /** A FIN has been received (it may still be queued). */
  finParsed = false

  /** Queues frames as they were parsed. */
  push(frames: Frame[]): void {
    for (const frame of frames) {
      this.finParsed ||= frame.type === 'fin'
      this.#frames.push(frame)
    }
  }

  /** Hands frames to `take` while not paused and `take` does not return false. */
  drain(take: (frame: Frame) => boolean | undefined): void {
    while (!this.paused && this.#frames.length > 0) {
      if (take(this.#frames.shift() as Frame) === false) {
        return
      }
    }
  }
}
