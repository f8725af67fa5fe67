/**
 * Moves bytes between a local byte stream (a TCP socket, or stdin/stdout) and a libp2p stream, with
 * backpressure both ways, half-close both ways, and a reset on both sides when either fails.
 *
 * The libp2p v3 stream API has traps this module works around (PITFALLS.md "Streams"): it reads with
 * the `'message'` event plus `pause()`/`resume()` because `for await` over a stream applies no
 * backpressure, and it waits for the `'drain'` event because `stream.onDrain()` stops working after
 * its first use.
 *
 * @packageDocumentation
 */

import type { Duplex, Readable, Writable } from 'node:stream'
import type { Stream, StreamCloseEvent, StreamMessageEvent } from '@libp2p/interface'
import type { Logger } from '../log/index.ts'
import { LocalClosedError, TransferInterruptedError } from './errors.ts'
import {
  creditFrame,
  dataFrame,
  FLOW_CREDIT_BATCH_BYTES,
  FLOW_MAX_FRAME_BYTES,
  FLOW_WINDOW_BYTES,
  FrameParser,
  finFrame,
  isFlowControlled,
} from './flow.ts'

/**
 * A byte direction, seen from the local side: `'in'` came from the remote peer (stream → local),
 * `'out'` went to the remote peer (local → stream).
 */
export type Direction = 'in' | 'out'

/** Options of {@link bridge} and {@link proxyStdio}. */
export interface BridgeOptions {
  /** Where progress and failures are logged (debug level; callers log the outcome). */
  log?: Logger
  /** Aborting resets both sides at once. */
  signal?: AbortSignal
  /** Called for every chunk moved, for byte counters. Must not throw. */
  onBytes?: (direction: Direction, n: number) => void
  /**
   * Frame the bytes with credit-based flow control (src/proxy/flow.ts). Default: when the stream's
   * protocol is a `/fc/` one, which is how both ends agree on it.
   */
  flowControl?: boolean
}

/** How a bridged connection ended. */
export interface BridgeResult {
  /** Bytes received from the remote peer and written locally. */
  bytesIn: number
  /** Bytes read locally and sent to the remote peer. */
  bytesOut: number
  /** True when the connection was reset (by either side, or by the signal) rather than finished. */
  reset: boolean
  /** Why it was reset. */
  error?: Error
}

/** The local half of a bridge: where bytes for the stream come from and where its bytes go. */
export interface LocalEnd {
  /** Read in flowing mode; paused while the stream cannot take more. */
  readable: Readable
  /** Written with `write()`; the stream is paused while this needs a drain. */
  writable: Writable
  /** Tears the local side down after a failure so its user sees an error, not a clean end. */
  reset(err: Error): void
}

/**
 * Joins a TCP socket and a libp2p stream until both directions have ended or either side failed.
 * The socket is switched to `allowHalfOpen` (a client that shuts down its write side must still
 * receive the reply), and is reset with a TCP RST on failure so its peer never mistakes a truncated
 * transfer for a complete one. Never rejects: failures are reported in the result.
 */
export function bridge(socket: Duplex, stream: Stream, options: BridgeOptions = {}): Promise<BridgeResult> {
  // Without it Node ends our write side as soon as the client half-closes, cutting the reply.
  socket.allowHalfOpen = true
  return join(
    {
      readable: socket,
      writable: socket,
      reset: () => resetSocket(socket),
    },
    stream,
    options,
  )
}

/**
 * Destroys a socket so that its peer sees a reset: a TCP RST when it is a `net.Socket`, a plain
 * `destroy()` for other duplexes. `destroy()` on a TCP socket would send a FIN, which a client takes
 * for a clean end of a possibly truncated transfer.
 */
export function resetSocket(socket: Duplex): void {
  // A destroyed socket may still emit an error (ERR_SOCKET_CLOSED from resetAndDestroy on a socket
  // without a handle); nobody else listens any more, and an unhandled 'error' would crash the process.
  socket.on('error', ignore)
  const tcp = socket as Duplex & {
    resetAndDestroy?: () => void
    _handle?: unknown
    _writableState?: { finalCalled?: boolean }
  }
  if (typeof tcp.resetAndDestroy !== 'function' || tcp._handle == null) {
    socket.destroy()
    return
  }
  // Between end() issuing the TCP shutdown and its completion, libuv refuses the reset
  // (uv_tcp_close_reset → EINVAL) and Node 24 then marks the handle closing without closing it: no
  // 'close' event ever, and the process spins at 100% CPU when it exits. The shutdown completes
  // within one loop iteration (end() only reaches it once all writes were flushed), so reset after.
  if (tcp._writableState?.finalCalled === true && !socket.writableFinished) {
    socket.once('finish', () => resetSocket(socket))
    return
  }
  tcp.resetAndDestroy()
}

/**
 * The bridge itself, for any local readable/writable pair (a socket, or stdin and stdout). Exported
 * for `stdio.ts`; use {@link bridge} for sockets.
 */
export function join(local: LocalEnd, stream: Stream, options: BridgeOptions = {}): Promise<BridgeResult> {
  const { readable, writable } = local
  const log = options.log
  const onBytes = options.onBytes
  const { promise, resolve } = Promise.withResolvers<BridgeResult>()

  let bytesIn = 0
  let bytesOut = 0
  let settled = false
  // local → stream: the local side sent EOF, we asked the stream to half-close, it did.
  let localEnded = false
  let outDone = false
  // stream → local: the remote sent FIN, we ended the local writable, it flushed.
  let remoteEnded = false
  let inDone = false
  // Backpressure state, one flag per direction.
  let waitingForStreamDrain = false
  let streamPausedByUs = false
  let resuming = false
  let pauseAfterResume = false
  // Flow control (src/proxy/flow.ts): bytes we may still send, bytes waiting for credit, bytes
  // written out locally since our last CREDIT.
  const fc = options.flowControl ?? isFlowControlled(stream.protocol)
  const parser = fc ? new FrameParser() : undefined
  let credit = FLOW_WINDOW_BYTES
  const pendingOut: Uint8Array[] = []
  let closeAfterFlush = false
  let consumedSinceCredit = 0

  const finish = (reset: boolean, error?: Error): void => {
    if (settled) {
      return
    }
    settled = true
    readable.off('data', onLocalData)
    readable.off('end', onLocalEnd)
    readable.off('error', onLocalError)
    readable.off('close', onReadableClose)
    writable.off('drain', onLocalDrain)
    writable.off('finish', onLocalFinish)
    writable.off('error', onLocalError)
    writable.off('close', onWritableClose)
    stream.removeEventListener('message', onStreamMessage)
    stream.removeEventListener('drain', onStreamDrain)
    stream.removeEventListener('end', onStreamEnd)
    stream.removeEventListener('close', onStreamClose)
    options.signal?.removeEventListener('abort', onAbort)
    if (stream.close === guardedClose) {
      stream.close = streamClose
    }
    // Late errors from a side we already gave up on must not become uncaught exceptions.
    readable.on('error', ignore)
    writable.on('error', ignore)
    resolve(error === undefined ? { bytesIn, bytesOut, reset } : { bytesIn, bytesOut, reset, error })
  }

  // muxer.close() (libp2p.stop(), connection pruning, closing a revoked peer's connections) calls
  // close() on every stream: a FIN, which the remote cannot tell from the clean end of a complete
  // transfer. A close we did not ask for is turned into a reset.
  const streamClose = stream.close
  let closingOurselves = false
  const guardedClose: Stream['close'] = async (closeOptions) => {
    if (!closingOurselves && !settled) {
      fail(new TransferInterruptedError('the connection was closed during the transfer'))
      return
    }
    return streamClose.call(stream, closeOptions)
  }
  stream.close = guardedClose

  const fail = (err: Error): void => {
    if (settled) {
      return
    }
    log?.debug('bridge reset', { error: err, bytes_in: bytesIn, bytes_out: bytesOut })
    // abort() is a no-op when the stream is already reset or closed, so the remote's own reset is
    // not echoed back.
    stream.abort(err)
    local.reset(err)
    finish(true, err)
  }

  const maybeDone = (): void => {
    if (!(outDone && inDone)) {
      return
    }
    if (!fc) {
      finish(false)
      return
    }
    // With flow control the ends were FIN frames (credit had to flow after them): both are done,
    // so the stream itself is closed now, after what is queued on it.
    closingOurselves = true
    stream.close().then(
      () => finish(false),
      (err: unknown) =>
        fail(new TransferInterruptedError('stream closed before local data was sent', { cause: err })),
    )
  }

  // ---- local → stream ----

  // With flow control: send what the credit allows, keep the rest, and hold the local side until
  // credit (and the stream's drain) lets more go.
  const flushOut = (): void => {
    while (pendingOut.length > 0 && credit > 0) {
      const chunk = pendingOut[0] as Uint8Array
      const n = Math.min(chunk.byteLength, credit, FLOW_MAX_FRAME_BYTES)
      credit -= n
      if (n === chunk.byteLength) {
        pendingOut.shift()
      } else {
        pendingOut[0] = chunk.subarray(n)
      }
      try {
        if (!stream.send(dataFrame(chunk.subarray(0, n)))) {
          waitingForStreamDrain = true
        }
      } catch (err) {
        fail(asError(err))
        return
      }
    }
    if (pendingOut.length > 0 || waitingForStreamDrain) {
      readable.pause()
      return
    }
    if (closeAfterFlush) {
      closeAfterFlush = false
      halfClose()
      return
    }
    if (!localEnded) {
      readable.resume()
    }
  }

  const onLocalData = (chunk: Buffer | string): void => {
    const buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk
    bytesOut += buf.byteLength
    onBytes?.('out', buf.byteLength)
    if (fc) {
      pendingOut.push(buf)
      flushOut()
      return
    }
    let more: boolean
    try {
      more = stream.send(buf)
    } catch (err) {
      fail(asError(err))
      return
    }
    // send() queued the chunk either way; false means "wait for 'drain' before the next one". The
    // stream's own write buffer is unbounded (maxWriteBufferLength defaults to Infinity), so this pause
    // is what bounds memory.
    if (!more) {
      waitingForStreamDrain = true
      readable.pause()
    }
  }

  const onStreamDrain = (): void => {
    if (waitingForStreamDrain) {
      waitingForStreamDrain = false
      if (fc) {
        flushOut()
      } else {
        readable.resume()
      }
    }
  }

  const onLocalEnd = (): void => {
    localEnded = true
    // Bytes still waiting for credit go first; the FIN follows them.
    if (fc && (pendingOut.length > 0 || waitingForStreamDrain)) {
      closeAfterFlush = true
      return
    }
    halfClose()
  }

  const halfClose = (): void => {
    if (fc) {
      try {
        stream.send(finFrame())
      } catch (err) {
        fail(asError(err))
        return
      }
      outDone = true
      maybeDone()
      return
    }
    closingOurselves = true
    // close() is the half-close: FIN after the queued data, the stream stays readable.
    stream.close().then(
      () => {
        outDone = true
        maybeDone()
      },
      // close() rejects when the stream closes before the queued data was flushed.
      (err: unknown) =>
        fail(new TransferInterruptedError('stream closed before local data was sent', { cause: err })),
    )
  }

  // ---- stream → local ----

  // With flow control the stream is never paused (it could not be: that is why it is framed);
  // credit is granted back as the payload is written out, which bounds what can arrive.
  const onFramedMessage = (data: StreamMessageEvent['data']): void => {
    let frames: ReturnType<FrameParser['push']>
    try {
      frames = (parser as FrameParser).push(data)
    } catch (err) {
      fail(asError(err))
      return
    }
    for (const frame of frames) {
      if (frame.type === 'credit') {
        credit += frame.bytes
        flushOut()
        continue
      }
      if (frame.type === 'fin') {
        remoteEnded = true
        writable.end()
        continue
      }
      const n = frame.payload.byteLength
      bytesIn += n
      onBytes?.('in', n)
      writable.write(frame.payload, (err) => {
        if (err != null || settled) {
          return
        }
        consumedSinceCredit += n
        if (consumedSinceCredit >= FLOW_CREDIT_BATCH_BYTES) {
          const grant = consumedSinceCredit
          consumedSinceCredit = 0
          try {
            stream.send(creditFrame(grant))
          } catch {
            // The stream is closing: nothing more will come that needs credit.
          }
        }
      })
    }
  }

  const onStreamMessage = (evt: StreamMessageEvent): void => {
    const data = evt.data
    if (fc) {
      onFramedMessage(data)
      return
    }
    bytesIn += data.byteLength
    onBytes?.('in', data.byteLength)
    let more = true
    if (data instanceof Uint8Array) {
      more = writable.write(data)
    } else {
      // A message is every frame that arrived since the last dispatch: one writev, not N writes.
      writable.cork()
      for (const buf of data) {
        more = writable.write(buf)
      }
      writable.uncork()
    }
    if (!more && !streamPausedByUs) {
      streamPausedByUs = true
      // While paused yamux withholds window updates, so the remote stops after one window: the data
      // waiting here is bounded by MAX_STREAM_WINDOW_BYTES (constants.ts).
      if (resuming) {
        pauseAfterResume = true
      } else {
        stream.pause()
      }
    }
  }

  // resume() dispatches the buffered data first and tells yamux to grant window after: a pause()
  // from inside that dispatch is overridden, yamux keeps granting window to a paused stream, and the
  // stream resets itself with StreamBufferError (@libp2p/utils 7.4.1, AbstractMessageStream.resume).
  // So a pause wanted during resume() is applied once resume() has returned.
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

  const onLocalDrain = (): void => {
    if (streamPausedByUs) {
      streamPausedByUs = false
      // resume() throws once the readable end closed (remote FIN seen and buffer drained).
      if (stream.readStatus === 'paused') {
        resumeStream()
      }
    }
  }

  const onStreamEnd = (): void => {
    if (remoteEnded) {
      return
    }
    if (fc) {
      // The remote's end is its FIN frame; the stream ending before it is a cut. (After it, the
      // stream ends when both sides closed it, which settles nothing more.)
      if (stream.status !== 'reset' && stream.status !== 'aborted') {
        fail(new TransferInterruptedError('the connection closed before the remote finished sending'))
      }
      return
    }
    // abort() and a remote reset emit 'end' just before their 'close' event, which carries the error.
    if (stream.status === 'reset' || stream.status === 'aborted') {
      return
    }
    // 'end' also fires when the connection under the stream closes without a FIN on this stream; the
    // stream is then 'closed' although we never half-closed it. That is a cut, not an end.
    if (stream.status === 'closed' && !localEnded) {
      fail(new TransferInterruptedError('the connection closed before the remote finished sending'))
      return
    }
    remoteEnded = true
    writable.end()
  }

  const onLocalFinish = (): void => {
    inDone = true
    maybeDone()
  }

  const onStreamClose = (evt: StreamCloseEvent): void => {
    if (evt.error != null) {
      fail(evt.error)
      return
    }
    if (fc) {
      // Both sides close the stream only once both are done: a close before is a cut.
      if (!(outDone && inDone)) {
        fail(new TransferInterruptedError('the stream closed before the transfer finished'))
      }
      return
    }
    // A clean close while the local side can still send means the connection went away under us.
    // When the local side already ended, close() settles the outcome (it rejects if data was lost).
    if (!localEnded) {
      fail(new TransferInterruptedError('the connection closed while the local side was still sending'))
    }
  }

  // ---- local failures ----

  const onLocalError = (err: Error): void => {
    fail(err)
  }

  // A socket closes cleanly only after both its halves ended; a 'close' before that means it was
  // destroyed under us, and writes to it would vanish without an error or a 'drain'. A clean close
  // after both ends is no reason to abort the stream: it may still be flushing what close() queued
  // (PITFALLS).
  const onReadableClose = (hadError?: boolean): void => {
    if (hadError === true || !localEnded) {
      fail(new LocalClosedError('local connection closed before it sent its end'))
    }
  }

  const onWritableClose = (hadError?: boolean): void => {
    if (hadError === true || !inDone) {
      fail(new LocalClosedError('local connection closed before the remote finished sending'))
    }
  }

  const onAbort = (): void => {
    fail(asError(options.signal?.reason ?? new Error('aborted')))
  }

  if (options.signal?.aborted === true) {
    onAbort()
    return promise
  }

  readable.on('data', onLocalData)
  readable.on('end', onLocalEnd)
  readable.on('error', onLocalError)
  readable.on('close', onReadableClose)
  if ((writable as unknown) !== readable) {
    writable.on('error', onLocalError)
  }
  writable.on('close', onWritableClose)
  writable.on('drain', onLocalDrain)
  writable.on('finish', onLocalFinish)
  stream.addEventListener('message', onStreamMessage)
  stream.addEventListener('drain', onStreamDrain)
  stream.addEventListener('end', onStreamEnd)
  stream.addEventListener('close', onStreamClose)
  options.signal?.addEventListener('abort', onAbort, { once: true })

  // The stream may have finished or failed before we were called (a short request with its FIN
  // arriving while the service was dialled): its events will not repeat.
  if (stream.status === 'reset' || stream.status === 'aborted') {
    fail(new TransferInterruptedError(`stream was already ${stream.status}`))
    return promise
  }
  if (readable.destroyed || writable.destroyed) {
    fail(new LocalClosedError('local side was already closed'))
    return promise
  }
  if (readable.readableEnded) {
    queueMicrotask(onLocalEnd)
  }
  if (stream.readableEnded) {
    queueMicrotask(onStreamEnd)
  }
  // Callers pause both sides while setting up (listener: socket until the stream opens; service:
  // stream until the local service answers). Adding the 'message' listener dispatches what the
  // stream buffered meanwhile.
  if (stream.readStatus === 'paused') {
    resumeStream()
  }
  readable.resume()
  return promise
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err))
}

function ignore(): void {}
