/**
 * A libp2p stream as an end: raw (yamux over TCP or a relay, where a paused stream stops granting
 * window) or flow-controlled (WebRTC, which cannot be paused).
 *
 * The libp2p v3 stream API has traps these adapters work around (docs/decisions/0005-data-plane.md):
 * data is read with the `'message'` event plus `pause()`/`resume()` because `for await` over a
 * stream applies no backpressure; the `'drain'` event is awaited because `stream.onDrain()` stops
 * working after its first use; and a `close()` the muxer makes when its connection goes away
 * (a FIN, which the far side cannot tell from a complete transfer) is turned into a reset.
 *
 * @packageDocumentation
 */

import type { Stream, StreamCloseEvent, StreamMessageEvent } from '@libp2p/interface'
import type { ByteEnd, Chunk, EndEvents } from './end.ts'
import { FrameError, TransferInterruptedError } from './errors.ts'
import { creditFrame, dataFrame, FRAME, type Frame, FrameParser, FrameReader, finFrame } from './frames.ts'
import { Listeners } from './listeners.ts'

/** Bytes a side may send ahead of the credit it was granted. Below the stream's read buffer limit. */
export const FLOW_WINDOW_BYTES = 4 * 1024 * 1024

/** Credit is granted back once this much was handed on (fewer, larger CREDIT frames). */
export const FLOW_CREDIT_BATCH_BYTES = FLOW_WINDOW_BYTES / 4

/** Largest DATA payload in one flow-controlled frame. */
export const FLOW_MAX_FRAME_BYTES = 256 * 1024

/** The protocol of a service with flow control. */
export function flowControlledProtocol(service: string): string {
  return `/peerup/${service}/fc/1.0.0`
}

/** Whether a negotiated protocol is a flow-controlled service protocol. */
export function isFlowControlled(protocol: string | undefined): boolean {
  return protocol !== undefined && /^\/peerup\/[^/]+\/fc\/1\.0\.0$/.test(protocol)
}

/** A service stream as an end: flow-controlled when its protocol says so, raw otherwise. */
export function serviceStreamEnd(stream: Stream): ByteEnd {
  return isFlowControlled(stream.protocol) ? new FlowStreamEnd(stream) : rawStreamEnd(stream)
}

/**
 * What both kinds share: the stream's events, and its `close()` guarded — muxer.close()
 * (libp2p.stop(), connection pruning, closing a revoked peer's connections) calls close() on every
 * stream: a FIN, which the remote cannot tell from the clean end of a complete transfer. A close we
 * did not ask for, before both directions ended, is turned into a failure, which the pipe answers
 * with a reset.
 */
abstract class StreamEnd extends FrameReader {
  readonly name: string
  protected readonly stream: Stream
  protected events: EndEvents | undefined
  readonly #listeners = new Listeners()
  readonly #close: Stream['close']
  readonly #guarded: Stream['close']

  constructor(stream: Stream) {
    super()
    this.stream = stream
    this.name = `stream ${stream.protocol ?? ''}`.trim()
    this.#close = stream.close
    this.#guarded = async (options) => {
      if (this.bothEnded()) {
        return this.#close.call(stream, options)
      }
      this.events?.error(new TransferInterruptedError('the connection was closed during the transfer'))
    }
    stream.close = this.#guarded
  }

  /** Whether both directions of the stream have ended, when a close is no cut. */
  protected abstract bothEnded(): boolean
  protected abstract onMessage(evt: StreamMessageEvent): void
  protected abstract onDrain(): void
  protected abstract onEnd(): void
  protected abstract onClose(evt: StreamCloseEvent): void

  start(events: EndEvents): void {
    this.events = events
    this.#listeners
      .listen(this.stream, 'message', (evt: StreamMessageEvent) => this.onMessage(evt))
      .listen(this.stream, 'drain', () => this.onDrain())
      .listen(this.stream, 'end', () => this.onEnd())
      .listen(this.stream, 'close', (evt: StreamCloseEvent) => this.onClose(evt))
    // The stream may have finished or failed before we were called (a short request with its
    // FIN arriving while the service was dialled): its events will not repeat.
    if (this.stream.status === 'reset' || this.stream.status === 'aborted') {
      events.error(new TransferInterruptedError(`stream was already ${this.stream.status}`))
      return
    }
    this.started()
  }

  /** What a kind does once listening. */
  protected abstract started(): void

  // A raw stream queues nothing here: the stream itself holds what arrives while it is paused.
  protected deliver(): void {}

  /** Half-closes the stream ourselves: FIN after what is queued; `finish` once flushed. */
  protected closeStream(): void {
    this.#close.call(this.stream).then(
      () => this.events?.finish(),
      // close() rejects when the stream closes before the queued data was flushed.
      (err: unknown) =>
        this.events?.error(
          new TransferInterruptedError('stream closed before local data was sent', { cause: err }),
        ),
    )
  }

  // abort() is a no-op when the stream is already reset or closed, so the remote's own reset is
  // not echoed back.
  reset(err: Error): void {
    this.stream.abort(err)
  }

  detach(): void {
    this.events = undefined
    this.#listeners.removeAll()
    if (this.stream.close === this.#guarded) {
      this.stream.close = this.#close
    }
  }
}

/** A raw stream: the stream's own pause, drain and half-close carry backpressure and ends. */
export function rawStreamEnd(stream: Stream): ByteEnd {
  return new RawStreamEnd(stream)
}

class RawStreamEnd extends StreamEnd implements ByteEnd {
  #ended = false
  #endCalled = false
  #pausedByUs = false
  #resuming = false
  #pauseAfterResume = false

  protected bothEnded(): boolean {
    return this.#ended && this.#endCalled
  }

  protected started(): void {
    if (this.stream.readableEnded) {
      queueMicrotask(() => this.onEnd())
    }
    // Callers keep the stream paused while they set up (the service dials its local address
    // first); the 'message' listener now dispatches what it buffered meanwhile.
    if (this.stream.readStatus === 'paused') {
      this.#resumeStream()
    }
  }

  // resume() dispatches the buffered data first and tells yamux to grant window after: a pause()
  // from inside that dispatch is overridden, yamux keeps granting window to a paused stream, and
  // the stream resets itself with StreamBufferError (@libp2p/utils 7.4.1,
  // AbstractMessageStream.resume). So a pause wanted during resume() is applied once it returned.
  #resumeStream(): void {
    this.#resuming = true
    try {
      this.stream.resume()
    } finally {
      this.#resuming = false
    }
    if (this.#pauseAfterResume) {
      this.#pauseAfterResume = false
      // The dispatch may also have drained the last data after a FIN: the readable end is closed.
      if (this.stream.readStatus === 'readable') {
        this.stream.pause()
      }
    }
  }

  protected onMessage(evt: StreamMessageEvent): void {
    this.events?.data(evt.data)
  }

  protected onDrain(): void {
    this.events?.drain()
  }

  protected onEnd(): void {
    const status = this.stream.status
    // abort() and a remote reset emit 'end' just before their 'close' event, which carries the error.
    if (this.#ended || status === 'reset' || status === 'aborted') {
      return
    }
    // 'end' also fires when the connection under the stream closes without a FIN on this stream;
    // the stream is then 'closed' although we never half-closed it. That is a cut, not an end.
    if (status === 'closed' && !this.#endCalled) {
      this.events?.error(
        new TransferInterruptedError('the connection closed before the remote finished sending'),
      )
      return
    }
    this.#ended = true
    this.events?.end()
  }

  protected onClose(evt: StreamCloseEvent): void {
    if (evt.error != null) {
      this.events?.error(evt.error)
    } else if (!this.#endCalled) {
      // A clean close while we could still send means the connection went away under us. Once we
      // half-closed, close() settles the outcome (it rejects if data was lost).
      this.events?.error(
        new TransferInterruptedError('the connection closed while the local side was still sending'),
      )
    }
  }

  override pause(): void {
    if (this.#pausedByUs) {
      return
    }
    this.#pausedByUs = true
    // While paused yamux withholds window updates, so the remote stops after one window: the
    // data waiting here is bounded by MAX_STREAM_WINDOW_BYTES (src/p2p/constants.ts).
    if (this.#resuming) {
      this.#pauseAfterResume = true
    } else {
      this.stream.pause()
    }
  }

  override resume(): void {
    if (!this.#pausedByUs) {
      return
    }
    this.#pausedByUs = false
    // resume() throws once the readable end closed (remote FIN seen and buffer drained).
    if (this.stream.readStatus === 'paused') {
      this.#resumeStream()
    }
  }

  // send() queues the chunk either way; false means "wait for 'drain'". The stream's own write
  // buffer is unbounded, so the pause this asks for is what bounds memory.
  write(chunk: Chunk): boolean {
    return this.stream.send(chunk)
  }

  // close() is the half-close: FIN after the queued data, the stream stays readable.
  end(): void {
    this.#endCalled = true
    this.closeStream()
  }
}

/**
 * A flow-controlled stream (`/peerup/<name>/fc/1.0.0`), for connections without backpressure of
 * their own: a WebRTC stream cannot be paused (`sendPause()` is a no-op in @libp2p/webrtc 6), so a
 * fast sender and a slow reader would pile bytes up until the stream resets itself. Bytes travel in
 * DATA frames; each side may send {@link FLOW_WINDOW_BYTES} before its first CREDIT and grants
 * credit back as the bytes it received are handed on, so at most one window per direction is ever
 * in flight or buffered. A direction ends with a FIN frame (the stream's own half-close cannot be
 * used: credit must still flow back after it); once both FINs crossed, the stream is closed.
 */
class FlowStreamEnd extends StreamEnd implements ByteEnd {
  readonly #parser = new FrameParser(FLOW_MAX_FRAME_BYTES, [FRAME.DATA, FRAME.FIN, FRAME.CREDIT])
  readonly #unsent: Chunk[] = []
  #credit = FLOW_WINDOW_BYTES
  #handedOn = 0
  #waitingForDrain = false
  #wantDrain = false
  #endWanted = false
  #finSent = false
  #finReceived = false
  #failed = false

  protected bothEnded(): boolean {
    return this.#finSent && this.#finReceived
  }

  // Never paused for backpressure (it could not be: that is why it is framed), but the caller may
  // have paused it while setting up.
  protected started(): void {
    if (this.stream.readStatus === 'paused') {
      this.stream.resume()
    }
  }

  #fail(err: Error): void {
    this.#failed = true
    this.events?.error(err)
  }

  #send(data: Chunk): void {
    if (!this.stream.send(data)) {
      this.#waitingForDrain = true
    }
  }

  #maybeClose(): void {
    if (this.bothEnded()) {
      this.closeStream()
    }
  }

  // Sends what the credit allows; the rest waits for credit (and the stream's drain).
  #flush(): void {
    try {
      while (this.#unsent.length > 0 && this.#credit > 0 && !this.#waitingForDrain) {
        const chunk = this.#unsent[0] as Chunk
        const n = Math.min(chunk.byteLength, this.#credit, FLOW_MAX_FRAME_BYTES)
        this.#credit -= n
        if (n === chunk.byteLength) {
          this.#unsent.shift()
          this.#send(dataFrame(chunk))
        } else {
          this.#unsent[0] = chunk.subarray(n)
          this.#send(dataFrame(chunk.subarray(0, n)))
        }
      }
      if (this.#unsent.length > 0 || this.#waitingForDrain) {
        return
      }
      if (this.#endWanted && !this.#finSent) {
        this.stream.send(finFrame())
        this.#finSent = true
        this.#maybeClose()
      }
    } catch (err) {
      this.#fail(err instanceof Error ? err : new Error(String(err)))
      return
    }
    if (this.#wantDrain) {
      this.#wantDrain = false
      this.events?.drain()
    }
  }

  // Hands received frames on while the reader wants them; credit goes back as bytes are handed on.
  protected override deliver(): void {
    this.received.drain((frame: Frame) => {
      if (frame.type === 'data') {
        this.#handedOn += frame.payload.byteLength
        this.events?.data(frame.payload)
        this.#grantCredit()
      } else if (frame.type === 'fin') {
        this.#finReceived = true
        this.events?.end()
        this.#maybeClose()
      }
      return !this.#failed
    })
  }

  #grantCredit(): void {
    if (this.#handedOn < FLOW_CREDIT_BATCH_BYTES || this.#finReceived) {
      return
    }
    const grant = this.#handedOn
    this.#handedOn = 0
    try {
      this.stream.send(creditFrame(grant))
    } catch {
      // The stream is closing: nothing more will come that needs credit.
    }
  }

  protected onMessage(evt: StreamMessageEvent): void {
    let frames: Frame[]
    try {
      frames = this.#parser.push(evt.data)
    } catch (err) {
      this.#fail(err instanceof FrameError ? err : new FrameError('malformed flow-control frame'))
      return
    }
    for (const frame of frames) {
      if (frame.type === 'credit') {
        this.#credit += frame.bytes
      }
    }
    this.received.push(frames.filter((f) => f.type !== 'credit'))
    this.deliver()
    this.#flush()
  }

  protected onDrain(): void {
    if (this.#waitingForDrain) {
      this.#waitingForDrain = false
      this.#flush()
    }
  }

  // The remote's end is its FIN frame; the stream ending before it is a cut. (After it, the stream
  // ends when both sides closed it, which settles nothing more.)
  protected onEnd(): void {
    const status = this.stream.status
    if (!this.received.finParsed && status !== 'reset' && status !== 'aborted') {
      this.#fail(new TransferInterruptedError('the connection closed before the remote finished sending'))
    }
  }

  protected onClose(evt: StreamCloseEvent): void {
    if (evt.error != null) {
      this.#fail(evt.error)
    } else if (!(this.#finSent && this.received.finParsed)) {
      // Both sides close the stream only once both are done: a close before is a cut.
      this.#fail(new TransferInterruptedError('the stream closed before the transfer finished'))
    }
  }

  write(chunk: Chunk): boolean {
    this.#unsent.push(chunk)
    this.#flush()
    if (this.#unsent.length > 0 || this.#waitingForDrain) {
      this.#wantDrain = true
      return false
    }
    return true
  }

  end(): void {
    this.#endWanted = true
    this.#flush()
  }
}
