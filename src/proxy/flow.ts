/**
 * Credit-based flow control for service streams that have no backpressure of their own: WebRTC
 * data channels. On yamux (TCP, relayed) a paused stream stops granting window and the sender
 * stops; a WebRTC stream cannot be paused (`sendPause()` is a no-op in @libp2p/webrtc 6), so a
 * fast sender and a slow local service would pile bytes up until the stream resets itself.
 *
 * On such a connection the service is opened as `/peerup/<name>/fc/1.0.0` and its bytes travel
 * in frames: `DATA` (payload), `CREDIT` (a u32: that many more bytes may be sent) and `FIN` (this
 * direction ended; the stream's own half-close cannot be used, since credit must still flow back
 * after it). Each side
 * may send {@link FLOW_WINDOW_BYTES} before its first credit, and grants credit back as the bytes
 * it received are written out locally — so at most one window per direction is ever in flight or
 * buffered, whatever the reader's speed. Once both FINs crossed, the stream is closed; a reset is
 * the stream's abort(), as without framing.
 *
 * @packageDocumentation
 */

import { Uint8ArrayList } from 'uint8arraylist'

/** Bytes a side may send ahead of the credit it was granted. Below the stream's read buffer limit. */
export const FLOW_WINDOW_BYTES = 4 * 1024 * 1024

/** Credit is granted back once this much was written out locally (fewer, larger CREDIT frames). */
export const FLOW_CREDIT_BATCH_BYTES = FLOW_WINDOW_BYTES / 4

/** Largest DATA payload in one frame. */
export const FLOW_MAX_FRAME_BYTES = 256 * 1024

const HEADER_BYTES = 5
const FRAME_DATA = 0
const FRAME_CREDIT = 1
const FRAME_FIN = 2

/** The protocol of a service with flow control. */
export function flowControlledProtocol(service: string): string {
  return `/peerup/${service}/fc/1.0.0`
}

/** Whether a negotiated protocol is a flow-controlled service protocol. */
export function isFlowControlled(protocol: string | undefined): boolean {
  return protocol !== undefined && /^\/peerup\/[^/]+\/fc\/1\.0\.0$/.test(protocol)
}

/** A DATA frame around `payload` (no copy of the payload). */
export function dataFrame(payload: Uint8Array): Uint8ArrayList {
  const header = new Uint8Array(HEADER_BYTES)
  new DataView(header.buffer).setUint32(1, payload.byteLength)
  header[0] = FRAME_DATA
  return new Uint8ArrayList(header, payload)
}

/** A CREDIT frame granting `n` bytes. */
export function creditFrame(n: number): Uint8Array {
  const frame = new Uint8Array(HEADER_BYTES + 4)
  const view = new DataView(frame.buffer)
  frame[0] = FRAME_CREDIT
  view.setUint32(1, 4)
  view.setUint32(HEADER_BYTES, n)
  return frame
}

/** A FIN frame: no more DATA in this direction. */
export function finFrame(): Uint8Array {
  const frame = new Uint8Array(HEADER_BYTES)
  frame[0] = FRAME_FIN
  return frame
}

/** A parsed frame. */
export type Frame =
  | { type: 'data'; payload: Uint8Array }
  | { type: 'credit'; bytes: number }
  | { type: 'fin' }

/** Thrown for bytes that are not frames (a peer speaking another protocol, or corruption). */
export class FlowFrameError extends Error {
  override name = 'FlowFrameError'
}

/** Cuts a byte stream into frames, across message boundaries. */
export class FrameParser {
  readonly #buf = new Uint8ArrayList()

  /** Adds received bytes and returns the frames they complete. */
  push(data: Uint8Array | Uint8ArrayList): Frame[] {
    this.#buf.append(data)
    const frames: Frame[] = []
    while (this.#buf.byteLength >= HEADER_BYTES) {
      const type = this.#buf.get(0)
      const length = this.#buf.getUint32(1)
      if (
        type > FRAME_FIN ||
        length > FLOW_MAX_FRAME_BYTES ||
        (type === FRAME_CREDIT && length !== 4) ||
        (type === FRAME_FIN && length !== 0)
      ) {
        throw new FlowFrameError('malformed flow-control frame')
      }
      if (this.#buf.byteLength < HEADER_BYTES + length) {
        break
      }
      if (type === FRAME_DATA) {
        frames.push({ type: 'data', payload: this.#buf.subarray(HEADER_BYTES, HEADER_BYTES + length) })
      } else if (type === FRAME_FIN) {
        frames.push({ type: 'fin' })
      } else {
        frames.push({ type: 'credit', bytes: this.#buf.getUint32(HEADER_BYTES) })
      }
      this.#buf.consume(HEADER_BYTES + length)
    }
    return frames
  }
}
