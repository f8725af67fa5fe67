/**
 * The byte stream of `POST /v1/dial` after `101 Switching Protocols`, framed so that its end says
 * how it ended. A Unix socket has no RST: closing it looks like a clean end to the other side, so
 * a transfer cut by a failure on the far side would pass for a complete one. Each frame is a
 * 5-byte header — type (1 byte) and payload length (4 bytes, big endian) — then the payload:
 *
 * - `DATA`: bytes of the service;
 * - `FIN`: this direction ended cleanly (half-close; the other direction goes on);
 * - `RESET`: the connection failed; the payload is a one-line reason. Nothing follows.
 *
 * {@link framedEnd} turns a socket speaking this into a readable/writable pair with the usual
 * semantics (end = FIN, destroy with an error = RESET), with backpressure both ways.
 *
 * @packageDocumentation
 */

import type { Duplex } from 'node:stream'
import { Readable, Writable } from 'node:stream'
import { Uint8ArrayList } from 'uint8arraylist'

/** Frame types. */
export const FRAME_DATA = 0
export const FRAME_FIN = 1
export const FRAME_RESET = 2

const HEADER_BYTES = 5
/** The largest payload a frame may carry; larger writes are split. */
export const MAX_FRAME_PAYLOAD = 1024 * 1024

/** The other side reset the connection. */
export class RemoteResetError extends Error {
  override name = 'RemoteResetError'
  readonly code = 'ECONNRESET'
}

/** The socket under the frames ended without a FIN or RESET frame: cut, not finished. */
export class FramingCutError extends Error {
  override name = 'FramingCutError'
  readonly code = 'ECONNRESET'
}

function header(type: number, length: number): Buffer {
  const h = Buffer.allocUnsafe(HEADER_BYTES)
  h.writeUInt8(type, 0)
  h.writeUInt32BE(length, 1)
  return h
}

/** A socket seen through the frames. */
export interface FramedEnd {
  /** The bytes the other side sent; ends at its FIN, errors at its RESET or a cut. */
  readable: Readable
  /** Bytes to send; `end()` sends a FIN. */
  writable: Writable
  /** Sends a RESET with `reason` (unless the socket is gone) and tears everything down. */
  reset(reason: Error): void
}

/** Frames `socket` (after the HTTP upgrade; `head` = bytes that came with the 101). */
export function framedEnd(socket: Duplex, head?: Buffer): FramedEnd {
  const pending = new Uint8ArrayList()
  if (head !== undefined && head.length > 0) {
    pending.append(Buffer.from(head))
  }
  let gotFin = false
  let finSent = false
  let gotReset = false
  // Both directions ended cleanly: the socket's job is done.
  const maybeClose = (): void => {
    if (gotFin && finSent && !socket.destroyed) {
      socket.end()
    }
  }
  let wantMore = true

  const readable = new Readable({
    highWaterMark: MAX_FRAME_PAYLOAD,
    read() {
      wantMore = true
      socket.resume()
    },
  })

  // Received bytes are kept as a list of chunks, so a 1 MiB frame arriving in 64 KiB socket reads
  // is copied once when complete, not again with every read; and a whole frame is handed on in one
  // piece, since every write on the far side becomes its own yamux frame and noise message.
  const parse = (): void => {
    while (pending.byteLength >= HEADER_BYTES && !gotFin && !gotReset) {
      const type = pending.get(0)
      const length = pending.getUint32(1)
      if (length > MAX_FRAME_PAYLOAD || type > FRAME_RESET) {
        gotReset = true
        readable.destroy(new FramingCutError('malformed frame from the daemon'))
        socket.destroy()
        return
      }
      if (pending.byteLength < HEADER_BYTES + length) {
        break
      }
      const bytes = pending.subarray(HEADER_BYTES, HEADER_BYTES + length)
      const payload = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
      pending.consume(HEADER_BYTES + length)
      if (type === FRAME_DATA) {
        wantMore = readable.push(payload)
      } else if (type === FRAME_FIN) {
        gotFin = true
        readable.push(null)
        maybeClose()
      } else {
        gotReset = true
        readable.destroy(new RemoteResetError(payload.toString('utf8') || 'the connection was reset'))
        writable.destroy()
        socket.destroy()
      }
    }
    if (!wantMore) {
      socket.pause()
    }
  }

  socket.on('data', (chunk: Buffer) => {
    pending.append(chunk)
    parse()
  })
  socket.on('end', () => {
    if (!gotFin && !gotReset) {
      readable.destroy(new FramingCutError('the connection ended without saying how'))
    }
  })
  socket.on('error', (err) => {
    if (!gotReset) {
      readable.destroy(err)
      writable.destroy(err)
    }
  })
  socket.on('close', () => {
    if (!gotFin && !gotReset && !readable.destroyed) {
      readable.destroy(new FramingCutError('the connection closed without saying how'))
    }
  })

  const send = (type: number, payload: Buffer | undefined, cb: (err?: Error | null) => void): void => {
    if (socket.destroyed || !socket.writable) {
      cb(new FramingCutError('the connection is gone'))
      return
    }
    socket.cork()
    socket.write(header(type, payload?.length ?? 0))
    const ok = payload === undefined || payload.length === 0 ? true : socket.write(payload)
    socket.uncork()
    if (ok && socket.writableLength < MAX_FRAME_PAYLOAD) {
      cb()
    } else {
      socket.once('drain', () => cb())
    }
  }

  const writable = new Writable({
    highWaterMark: MAX_FRAME_PAYLOAD,
    write(chunk: Buffer, _enc, cb) {
      if (chunk.length <= MAX_FRAME_PAYLOAD) {
        send(FRAME_DATA, chunk, cb)
        return
      }
      // Split big writes; only the last one waits.
      let offset = 0
      const next = (err?: Error | null): void => {
        if (err != null || offset >= chunk.length) {
          cb(err)
          return
        }
        const part = chunk.subarray(offset, offset + MAX_FRAME_PAYLOAD)
        offset += part.length
        send(FRAME_DATA, part, next)
      }
      next()
    },
    final(cb) {
      send(FRAME_FIN, undefined, (err) => {
        finSent = err == null
        cb(err)
        maybeClose()
      })
    },
  })

  let resetDone = false
  return {
    readable,
    writable,
    reset: (reason) => {
      if (resetDone) {
        return
      }
      resetDone = true
      if (!socket.destroyed && socket.writable && !gotReset) {
        const text = Buffer.from(reason.message.split('\n')[0] ?? 'reset')
        socket.write(header(FRAME_RESET, text.length))
        socket.end(text)
      } else {
        socket.destroy()
      }
      if (!readable.destroyed) {
        readable.destroy()
      }
      if (!writable.destroyed) {
        writable.destroy()
      }
    },
  }
}
