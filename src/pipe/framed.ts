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
import { dataFrame, FRAME, type Frame, FrameParser, finFrame, resetFrame } from './frames.ts'

/** The largest payload of one frame; larger writes are split. */
export const MAX_DIAL_FRAME_PAYLOAD = 1024 * 1024

/** `socket` (after the HTTP upgrade; `head`: bytes that came with it) as an end. */
export function framedEnd(socket: Duplex, head?: Buffer, name = 'daemon dial socket'): ByteEnd {
  const parser = new FrameParser(MAX_DIAL_FRAME_PAYLOAD, [FRAME.DATA, FRAME.FIN, FRAME.RESET])
  const received: Frame[] = []
  let events: EndEvents | undefined
  let paused = false
  let gotFin = false
  // A FIN parsed but not yet handed on (the reader paused): the socket's end after it is no cut.
  let finParsed = false
  let gotReset = false
  let finSent = false
  let wantDrain = false
  let resetDone = false

  // Both directions ended cleanly: the socket's job is done.
  const maybeEndSocket = (): void => {
    if (gotFin && finSent && !socket.destroyed) {
      socket.end()
    }
  }
  const fail = (err: Error): void => {
    gotReset = true
    events?.error(err)
  }
  // Frames are handed on in order, and only while the reader wants them.
  const deliver = (): void => {
    while (!paused && received.length > 0 && !gotReset) {
      const frame = received.shift() as Frame
      if (frame.type === 'data') {
        events?.data(frame.payload)
      } else if (frame.type === 'fin') {
        gotFin = true
        events?.end()
        maybeEndSocket()
      } else if (frame.type === 'reset') {
        fail(new RemoteResetError(frame.reason || 'the connection was reset'))
      }
    }
    if (paused) {
      socket.pause()
    }
  }
  const onData = (chunk: Buffer): void => {
    try {
      for (const frame of parser.push(chunk)) {
        finParsed ||= frame.type === 'fin'
        received.push(frame)
      }
    } catch {
      fail(new FramingCutError('malformed frame on the dial socket'))
      socket.destroy()
      return
    }
    deliver()
  }
  const onEnd = (): void => {
    if (!finParsed && !gotReset) {
      fail(new FramingCutError('the dial socket ended without saying how'))
    }
  }
  // Closed before both directions ended: what was still to be sent or received is lost.
  const onClose = (): void => {
    if (!gotReset && (!finParsed || !finSent)) {
      fail(new FramingCutError('the dial socket closed without saying how'))
    }
  }
  const onError = (err: Error): void => {
    if (!gotReset) {
      fail(err)
    }
  }
  const onDrain = (): void => {
    if (wantDrain) {
      wantDrain = false
      events?.drain()
    }
  }

  return {
    name,
    start(e) {
      events = e
      socket.on('data', onData)
      socket.on('end', onEnd)
      socket.on('close', onClose)
      socket.on('error', onError)
      socket.on('drain', onDrain)
      if (head !== undefined && head.length > 0) {
        onData(head)
      }
      socket.resume()
    },
    pause() {
      paused = true
      socket.pause()
    },
    resume() {
      paused = false
      deliver()
      if (!paused && !socket.destroyed) {
        socket.resume()
      }
    },
    write(chunk: Chunk) {
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
      wantDrain = true
      return false
    },
    end() {
      if (socket.destroyed || !socket.writable) {
        fail(new FramingCutError('the dial socket is gone'))
        return
      }
      socket.write(finFrame(), (err) => {
        if (err != null) {
          return
        }
        finSent = true
        events?.finish()
        maybeEndSocket()
      })
    },
    reset(reason) {
      if (resetDone) {
        return
      }
      resetDone = true
      if (!socket.destroyed && socket.writable && !gotReset) {
        socket.end(resetFrame(reason.message))
      } else {
        socket.destroy()
      }
    },
    detach() {
      events = undefined
      socket.off('data', onData)
      socket.off('end', onEnd)
      socket.off('close', onClose)
      socket.off('error', onError)
      socket.off('drain', onDrain)
      socket.on('error', () => {})
    },
  }
}
