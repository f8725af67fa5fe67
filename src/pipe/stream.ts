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
import { creditFrame, dataFrame, FRAME, type Frame, FrameParser, finFrame } from './frames.ts'

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
  return isFlowControlled(stream.protocol) ? flowStreamEnd(stream) : rawStreamEnd(stream)
}

/**
 * What both kinds share: the events of the stream, and its `close()` guarded — muxer.close()
 * (libp2p.stop(), connection pruning, closing a revoked peer's connections) calls close() on every
 * stream: a FIN, which the remote cannot tell from the clean end of a complete transfer. A close we
 * did not ask for is turned into a failure, which the pipe answers with a reset.
 */
class StreamAdapter {
  readonly stream: Stream
  events: EndEvents | undefined
  readonly #close: Stream['close']
  readonly #guarded: Stream['close']

  /** `done`: whether both directions of the stream have ended, when a close is no cut. */
  constructor(stream: Stream, done: () => boolean) {
    this.stream = stream
    this.#close = stream.close
    this.#guarded = async (options) => {
      if (done()) {
        return this.#close.call(stream, options)
      }
      this.events?.error(new TransferInterruptedError('the connection was closed during the transfer'))
    }
    stream.close = this.#guarded
  }

  /** Half-closes the stream ourselves: FIN after what is queued; resolves once flushed. */
  close(): Promise<void> {
    return this.#close.call(this.stream)
  }

  detach(): void {
    this.events = undefined
    if (this.stream.close === this.#guarded) {
      this.stream.close = this.#close
    }
  }
}

/** A raw stream: the stream's own pause, drain and half-close carry backpressure and ends. */
export function rawStreamEnd(stream: Stream): ByteEnd {
  let ended = false
  let endCalled = false
  const s = new StreamAdapter(stream, () => ended && endCalled)
  let pausedByUs = false
  let resuming = false
  let pauseAfterResume = false

  // resume() dispatches the buffered data first and tells yamux to grant window after: a pause()
  // from inside that dispatch is overridden, yamux keeps granting window to a paused stream, and
  // the stream resets itself with StreamBufferError (@libp2p/utils 7.4.1,
  // AbstractMessageStream.resume). So a pause wanted during resume() is applied once it returned.
  const resumeStream = (): void => {
    resuming = true
    try {
      stream.resume()
    } finally {
      resuming = false
    }
    if (pauseAfterResume) {
      pauseAfterResume = false
      // The dispatch may also have drained the last data after a FIN: the readable end is closed.
      if (stream.readStatus === 'readable') {
        stream.pause()
      }
    }
  }
  const onMessage = (evt: StreamMessageEvent): void => s.events?.data(evt.data)
  const onDrain = (): void => s.events?.drain()
  const onEnd = (): void => {
    if (ended) {
      return
    }
    // abort() and a remote reset emit 'end' just before their 'close' event, which carries the error.
    if (stream.status === 'reset' || stream.status === 'aborted') {
      return
    }
    // 'end' also fires when the connection under the stream closes without a FIN on this stream;
    // the stream is then 'closed' although we never half-closed it. That is a cut, not an end.
    if (stream.status === 'closed' && !endCalled) {
      s.events?.error(
        new TransferInterruptedError('the connection closed before the remote finished sending'),
      )
      return
    }
    ended = true
    s.events?.end()
  }
  const onClose = (evt: StreamCloseEvent): void => {
    if (evt.error != null) {
      s.events?.error(evt.error)
      return
    }
    // A clean close while we could still send means the connection went away under us. Once we
    // half-closed, close() settles the outcome (it rejects if data was lost).
    if (!endCalled) {
      s.events?.error(
        new TransferInterruptedError('the connection closed while the local side was still sending'),
      )
    }
  }

  return {
    name: `stream ${stream.protocol ?? ''}`.trim(),
    start(events) {
      s.events = events
      stream.addEventListener('message', onMessage)
      stream.addEventListener('drain', onDrain)
      stream.addEventListener('end', onEnd)
      stream.addEventListener('close', onClose)
      // The stream may have finished or failed before we were called (a short request with its
      // FIN arriving while the service was dialled): its events will not repeat.
      if (stream.status === 'reset' || stream.status === 'aborted') {
        events.error(new TransferInterruptedError(`stream was already ${stream.status}`))
        return
      }
      if (stream.readableEnded) {
        queueMicrotask(onEnd)
      }
      // Callers keep the stream paused while they set up (the service dials its local address
      // first); the 'message' listener now dispatches what it buffered meanwhile.
      if (stream.readStatus === 'paused') {
        resumeStream()
      }
    },
    pause() {
      if (pausedByUs) {
        return
      }
      pausedByUs = true
      // While paused yamux withholds window updates, so the remote stops after one window: the
      // data waiting here is bounded by MAX_STREAM_WINDOW_BYTES (src/p2p/constants.ts).
      if (resuming) {
        pauseAfterResume = true
      } else {
        stream.pause()
      }
    },
    resume() {
      if (!pausedByUs) {
        return
      }
      pausedByUs = false
      // resume() throws once the readable end closed (remote FIN seen and buffer drained).
      if (stream.readStatus === 'paused') {
        resumeStream()
      }
    },
    // send() queues the chunk either way; false means "wait for 'drain'". The stream's own write
    // buffer is unbounded, so the pause this asks for is what bounds memory.
    write: (chunk: Chunk) => stream.send(chunk),
    end() {
      endCalled = true
      // close() is the half-close: FIN after the queued data, the stream stays readable.
      s.close().then(
        () => s.events?.finish(),
        // close() rejects when the stream closes before the queued data was flushed.
        (err: unknown) =>
          s.events?.error(
            new TransferInterruptedError('stream closed before local data was sent', { cause: err }),
          ),
      )
    },
    // abort() is a no-op when the stream is already reset or closed, so the remote's own reset is
    // not echoed back.
    reset: (err) => stream.abort(err),
    detach() {
      s.detach()
      stream.removeEventListener('message', onMessage)
      stream.removeEventListener('drain', onDrain)
      stream.removeEventListener('end', onEnd)
      stream.removeEventListener('close', onClose)
    },
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
export function flowStreamEnd(stream: Stream): ByteEnd {
  const s = new StreamAdapter(stream, () => finSent && finReceived)
  const parser = new FrameParser(FLOW_MAX_FRAME_BYTES, [FRAME.DATA, FRAME.FIN, FRAME.CREDIT])
  const received: Frame[] = []
  const unsent: Chunk[] = []
  let credit = FLOW_WINDOW_BYTES
  let handedOn = 0
  let paused = false
  let waitingForDrain = false
  let wantDrain = false
  let endWanted = false
  let finSent = false
  let finReceived = false
  let finParsed = false
  let failed = false

  const fail = (err: Error): void => {
    failed = true
    s.events?.error(err)
  }
  const send = (data: Chunk): void => {
    if (!stream.send(data)) {
      waitingForDrain = true
    }
  }
  const maybeClose = (): void => {
    if (finSent && finReceived) {
      s.close().then(
        () => s.events?.finish(),
        (err: unknown) =>
          fail(new TransferInterruptedError('stream closed before local data was sent', { cause: err })),
      )
    }
  }
  // Sends what the credit allows; the rest waits for credit (and the stream's drain).
  const flush = (): void => {
    try {
      while (unsent.length > 0 && credit > 0 && !waitingForDrain) {
        const chunk = unsent[0] as Chunk
        const n = Math.min(chunk.byteLength, credit, FLOW_MAX_FRAME_BYTES)
        credit -= n
        if (n === chunk.byteLength) {
          unsent.shift()
          send(dataFrame(chunk))
        } else {
          unsent[0] = chunk.subarray(n)
          send(dataFrame(chunk.subarray(0, n)))
        }
      }
      if (unsent.length > 0 || waitingForDrain) {
        return
      }
      if (endWanted && !finSent) {
        stream.send(finFrame())
        finSent = true
        maybeClose()
      }
    } catch (err) {
      fail(err instanceof Error ? err : new Error(String(err)))
      return
    }
    if (wantDrain) {
      wantDrain = false
      s.events?.drain()
    }
  }
  // Hands received frames on while the reader wants them; credit goes back as bytes are handed on.
  const deliver = (): void => {
    while (!paused && received.length > 0 && !failed) {
      const frame = received.shift() as Frame
      if (frame.type === 'data') {
        handedOn += frame.payload.byteLength
        s.events?.data(frame.payload)
        if (handedOn >= FLOW_CREDIT_BATCH_BYTES && !finReceived) {
          const grant = handedOn
          handedOn = 0
          try {
            stream.send(creditFrame(grant))
          } catch {
            // The stream is closing: nothing more will come that needs credit.
          }
        }
      } else if (frame.type === 'fin') {
        finReceived = true
        s.events?.end()
        maybeClose()
      }
    }
  }
  const onMessage = (evt: StreamMessageEvent): void => {
    let frames: Frame[]
    try {
      frames = parser.push(evt.data)
    } catch (err) {
      fail(err instanceof FrameError ? err : new FrameError('malformed flow-control frame'))
      return
    }
    for (const frame of frames) {
      if (frame.type === 'credit') {
        credit += frame.bytes
      } else {
        finParsed ||= frame.type === 'fin'
        received.push(frame)
      }
    }
    deliver()
    flush()
  }
  const onDrain = (): void => {
    if (waitingForDrain) {
      waitingForDrain = false
      flush()
    }
  }
  const onEnd = (): void => {
    // The remote's end is its FIN frame; the stream ending before it is a cut. (After it, the
    // stream ends when both sides closed it, which settles nothing more.)
    if (!finParsed && stream.status !== 'reset' && stream.status !== 'aborted') {
      fail(new TransferInterruptedError('the connection closed before the remote finished sending'))
    }
  }
  const onClose = (evt: StreamCloseEvent): void => {
    if (evt.error != null) {
      fail(evt.error)
    } else if (!(finSent && finParsed)) {
      // Both sides close the stream only once both are done: a close before is a cut.
      fail(new TransferInterruptedError('the stream closed before the transfer finished'))
    }
  }

  return {
    name: `stream ${stream.protocol ?? ''}`.trim(),
    start(events) {
      s.events = events
      stream.addEventListener('message', onMessage)
      stream.addEventListener('drain', onDrain)
      stream.addEventListener('end', onEnd)
      stream.addEventListener('close', onClose)
      if (stream.status === 'reset' || stream.status === 'aborted') {
        fail(new TransferInterruptedError(`stream was already ${stream.status}`))
        return
      }
      // Never paused for backpressure (it could not be: that is why it is framed), but the caller
      // may have paused it while setting up.
      if (stream.readStatus === 'paused') {
        stream.resume()
      }
    },
    pause() {
      paused = true
    },
    resume() {
      paused = false
      deliver()
    },
    write(chunk) {
      unsent.push(chunk)
      flush()
      if (unsent.length > 0 || waitingForDrain) {
        wantDrain = true
        return false
      }
      return true
    },
    end() {
      endWanted = true
      flush()
    },
    reset: (err) => stream.abort(err),
    detach() {
      s.detach()
      stream.removeEventListener('message', onMessage)
      stream.removeEventListener('drain', onDrain)
      stream.removeEventListener('end', onEnd)
      stream.removeEventListener('close', onClose)
    },
  }
}
