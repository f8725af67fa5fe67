/**
 * The one frame codec of the data plane. A frame is a 5-byte header — type (1 byte) and payload
 * length (4 bytes, big endian) — then the payload:
 *
 * - `DATA`: bytes of the connection;
 * - `FIN`: this direction ended cleanly (a half-close; the other direction goes on);
 * - `RESET`: the connection failed; the payload is a one-line reason. Nothing follows;
 * - `CREDIT`: a u32, that many more bytes may be sent (flow control);
 * - `ATTACH`: a resumable session's handshake (src/pipe/session.ts): its id, where the sender's
 *   reading stands, and for a new session the service;
 * - `ACK`: a u64, everything of a session up to that position was delivered.
 *
 * Frames carry what a transport cannot say itself: a Unix socket has no RST, so the daemon's dial
 * socket (src/pipe/framed.ts) says with FIN or RESET how it ended; a WebRTC stream cannot be paused,
 * so a service over one is flow-controlled with CREDIT (src/pipe/stream.ts).
 *
 * @packageDocumentation
 */

import { Uint8ArrayList } from 'uint8arraylist'
import { FrameError } from './errors.ts'

export const FRAME = { DATA: 0, FIN: 1, RESET: 2, CREDIT: 3, ATTACH: 4, ACK: 5 } as const

export const FRAME_HEADER_BYTES = 5

export type Frame =
  | { type: 'data'; payload: Uint8ArrayList }
  | { type: 'fin' }
  | { type: 'reset'; reason: string }
  | { type: 'credit'; bytes: number }
  | ({ type: 'attach' } & Attach)
  | { type: 'ack'; position: number }

export interface Attach {
  /** The session's id, 16 random bytes chosen by the side that opened it. */
  id: Uint8Array
  /** Re-attaching a session that exists (rather than opening a new one). */
  resume: boolean
  /** How much of the other side's stream this side has delivered (bytes, plus one for its FIN). */
  received: number
  /** The service a new session is for; empty in an answer and when resuming. */
  service: string
}

export const SESSION_ID_BYTES = 16

const ATTACH_VERSION = 1

/** A frame's header, and room after it for a payload of `room` bytes (written by the caller). */
function header(type: number, length: number, room = 0): Uint8Array {
  const h = new Uint8Array(FRAME_HEADER_BYTES + room)
  h[0] = type
  new DataView(h.buffer).setUint32(1, length)
  return h
}

/** A DATA frame around `payload` (no copy of the payload). */
export function dataFrame(payload: Uint8Array | Uint8ArrayList): Uint8ArrayList {
  return new Uint8ArrayList(header(FRAME.DATA, payload.byteLength), payload)
}

export function finFrame(): Uint8Array {
  return header(FRAME.FIN, 0)
}

/** A RESET frame saying why, in one line. */
export function resetFrame(reason: string): Uint8Array {
  const text = new TextEncoder().encode((reason.split('\n')[0] ?? '').slice(0, 512) || 'reset')
  const frame = header(FRAME.RESET, text.byteLength, text.byteLength)
  frame.set(text, FRAME_HEADER_BYTES)
  return frame
}

/** A CREDIT frame granting `n` more bytes. */
export function creditFrame(n: number): Uint8Array {
  const frame = header(FRAME.CREDIT, 4, 4)
  new DataView(frame.buffer).setUint32(FRAME_HEADER_BYTES, n)
  return frame
}

export function attachFrame(a: Attach): Uint8Array {
  const service = new TextEncoder().encode(a.service)
  const length = 2 + SESSION_ID_BYTES + 8 + service.byteLength
  const frame = header(FRAME.ATTACH, length, length)
  const at = FRAME_HEADER_BYTES
  frame[at] = ATTACH_VERSION
  frame[at + 1] = a.resume ? 1 : 0
  frame.set(a.id, at + 2)
  new DataView(frame.buffer).setBigUint64(at + 2 + SESSION_ID_BYTES, BigInt(a.received))
  frame.set(service, at + 2 + SESSION_ID_BYTES + 8)
  return frame
}

/** An ACK frame: everything up to `position` was delivered. */
export function ackFrame(position: number): Uint8Array {
  const frame = header(FRAME.ACK, 8, 8)
  new DataView(frame.buffer).setBigUint64(FRAME_HEADER_BYTES, BigInt(position))
  return frame
}

function parseAttach(payload: Uint8Array): Attach {
  if (
    payload.byteLength < 2 + SESSION_ID_BYTES + 8 ||
    payload[0] !== ATTACH_VERSION ||
    (payload[1] ?? 0) > 1
  ) {
    throw new FrameError('malformed ATTACH frame')
  }
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength)
  return {
    id: payload.slice(2, 2 + SESSION_ID_BYTES),
    resume: payload[1] === 1,
    received: Number(view.getBigUint64(2 + SESSION_ID_BYTES)),
    service: new TextDecoder().decode(payload.subarray(2 + SESSION_ID_BYTES + 8)),
  }
}

/** What {@link FrameParser.push} returns when the bytes complete no frame; never written to. */
const NO_FRAMES: Frame[] = []

/** Cuts a byte stream into frames, across chunk boundaries. */
export class FrameParser {
  readonly #buf = new Uint8ArrayList()
  readonly #maxPayload: number
  readonly #types: ReadonlySet<number>
  /** The header of the frame being gathered, read and checked once (a 256 KiB frame comes in many reads). */
  #type = -1
  #length = 0

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
    // Most reads complete no frame (a 256 KiB frame arrives in 16–64 KiB reads): they allocate nothing here.
    let frames = NO_FRAMES
    while (this.#buf.byteLength >= FRAME_HEADER_BYTES) {
      if (this.#type === -1) {
        const type = this.#buf.get(0)
        const length = this.#buf.getUint32(1)
        if (
          !this.#types.has(type) ||
          (type === FRAME.DATA && length > this.#maxPayload) ||
          (type === FRAME.FIN && length !== 0) ||
          (type === FRAME.CREDIT && length !== 4) ||
          (type === FRAME.RESET && length > 4096) ||
          (type === FRAME.ACK && length !== 8) ||
          (type === FRAME.ATTACH && length > 2 + SESSION_ID_BYTES + 8 + 64)
        ) {
          throw new FrameError('malformed frame')
        }
        this.#type = type
        this.#length = length
      }
      const type = this.#type
      const length = this.#length
      if (this.#buf.byteLength < FRAME_HEADER_BYTES + length) {
        break
      }
      if (frames === NO_FRAMES) {
        frames = []
      }
      this.#type = -1
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
      } else if (type === FRAME.CREDIT) {
        frames.push({ type: 'credit', bytes: this.#buf.getUint32(FRAME_HEADER_BYTES) })
      } else if (type === FRAME.ACK) {
        frames.push({ type: 'ack', position: Number(this.#buf.getBigUint64(FRAME_HEADER_BYTES)) })
      } else {
        frames.push({ type: 'attach', ...parseAttach(this.#buf.subarray(FRAME_HEADER_BYTES, end)) })
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

/**
 * An end that holds what it received in a {@link FrameQueue} until its reader wants it: the pipe's
 * `pause()`/`resume()` for every framed end (the daemon's dial socket, a flow-controlled stream, a
 * session), which differ only in what handing a frame on means ({@link FrameReader.deliver}).
 */
export abstract class FrameReader {
  protected received = new FrameQueue()

  pause(): void {
    this.received.paused = true
  }

  resume(): void {
    this.received.paused = false
    this.deliver()
  }

  /** Hands on what is queued, as far as the reader wants it. */
  protected abstract deliver(): void
}
