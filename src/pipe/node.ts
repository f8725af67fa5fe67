/**
 * Ends over Node streams: a TCP socket (a client of `peerup proxy`, the local service of an exposed
 * one) and stdin/stdout (`proxy --stdio`, an ssh ProxyCommand).
 *
 * @packageDocumentation
 */

import type * as net from 'node:net'
import type { Duplex, Readable, Writable } from 'node:stream'
import type { ByteEnd, Chunk, EndEvents } from './end.ts'
import { LocalClosedError } from './errors.ts'
import { Listeners } from './listeners.ts'

/**
 * A socket as an end. It is switched to `allowHalfOpen` (a client that shuts down its write side
 * must still receive the reply), and reset with a TCP RST on failure so its peer never mistakes a
 * truncated transfer for a complete one.
 */
export function socketEnd(socket: Duplex, name = socketName(socket)): ByteEnd {
  // Without it Node ends our write side as soon as the client half-closes, cutting the reply.
  socket.allowHalfOpen = true
  return new StreamsEnd(socket, socket, () => resetSocket(socket), name)
}

/**
 * stdin and stdout as an end. On failure both are destroyed (stdout without an `'end'`, so a reader
 * sees a broken pipe rather than a clean end). `process.stdout.end()` does not close file
 * descriptor 1: a reader of our stdout sees EOF only when the process exits, so the caller should
 * exit as soon as the pipe settles.
 */
export function stdioEnd(stdin: Readable, stdout: Writable): ByteEnd {
  const reset = (): void => {
    stdin.on('error', ignore)
    stdout.on('error', ignore)
    stdin.destroy()
    stdout.destroy()
  }
  return new StreamsEnd(stdin, stdout, reset, 'stdio')
}

/**
 * Ends a socket after what was written to it (an answer that refuses the client) and lets it go:
 * what the client still sends is discarded, and one that does not close its side within
 * `graceMs` is reset.
 */
export function endAfterAnswer(socket: net.Socket, graceMs = 5_000): void {
  socket.on('error', ignore)
  const timer = setTimeout(() => resetSocket(socket), graceMs)
  timer.unref()
  socket.once('close', () => clearTimeout(timer))
  // allowHalfOpen: the client's end does not close ours by itself.
  socket.once('end', () => socket.destroy())
  socket.resume()
  socket.end()
}

/**
 * Destroys a socket so that its peer sees a reset: a TCP RST when it is a `net.Socket`, a plain
 * `destroy()` for other duplexes. `destroy()` on a TCP socket would send a FIN, which a client takes
 * for a clean end of a possibly truncated transfer.
 */
export function resetSocket(socket: Duplex): void {
  // A destroyed socket may still emit an error (ERR_SOCKET_CLOSED from resetAndDestroy on a socket
  // without a handle); nobody else listens any more, and an unhandled 'error' would crash the process.
  // Once only, however often it is called before the socket goes.
  socket.off('error', ignore).on('error', ignore)
  // A TLS socket's handle cannot be reset (resetAndDestroy throws ERR_INVALID_HANDLE_TYPE), and
  // resetting the TCP socket under it crashed Node 24.21 (SIGSEGV in SSL_read, from
  // TLSWrap::ClearOut, when a read was under way: the TLS state freed under the stream that still
  // calls into it, nodejs/node#62967). It is destroyed instead, outside the read callback we may be
  // in: its peer sees the connection end without TLS's close_notify, which what runs over it (a
  // bulk link's session frames, src/pipe/link.ts) tells from a clean end.
  // (`encrypted` is always true on a TLSSocket and absent elsewhere: the check needs no node:tls,
  // which an idle daemon does not load, docs/decisions/0018-daemon-idle-memory.md.)
  if ((socket as Duplex & { encrypted?: unknown }).encrypted === true) {
    setImmediate(() => socket.destroy())
    return
  }
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

/** Writes a chunk; every piece of a list at once (one writev, not one write each). */
export function writeChunk(writable: Writable, chunk: Chunk): boolean {
  if (chunk instanceof Uint8Array) {
    return writable.write(chunk)
  }
  writable.cork()
  let more = true
  for (const buf of chunk) {
    more = writable.write(buf)
  }
  writable.uncork()
  return more
}

function socketName(socket: Duplex): string {
  const s = socket as Duplex & { remoteAddress?: string; remotePort?: number }
  return s.remoteAddress === undefined ? 'socket' : `tcp ${s.remoteAddress}:${s.remotePort}`
}

/** An end reading `readable` (in flowing mode) and writing `writable`; they may be one duplex. */
class StreamsEnd implements ByteEnd {
  readonly name: string
  readonly #readable: Readable
  readonly #writable: Writable
  readonly #reset: () => void
  readonly #listeners = new Listeners()
  #events: EndEvents | undefined
  #readEnded = false
  #writeFinished = false
  #resetDone = false

  constructor(readable: Readable, writable: Writable, reset: () => void, name: string) {
    this.#readable = readable
    this.#writable = writable
    this.#reset = reset
    this.name = name
  }

  start(events: EndEvents): void {
    this.#events = events
    const r = this.#readable
    const w = this.#writable
    const onError = (err: Error): void => this.#events?.error(err)
    this.#listeners
      .on(r, 'data', (chunk: Buffer | string) =>
        this.#events?.data(typeof chunk === 'string' ? Buffer.from(chunk) : chunk),
      )
      .on(r, 'end', () => this.#onEnd())
      .on(r, 'error', onError)
      // A socket closes cleanly only after both its halves ended; a 'close' before that means it
      // was destroyed under us, and writes to it would vanish without an error or a 'drain'. A
      // clean close after both ends is no reason to fail: the other end may still be flushing.
      .on(r, 'close', (hadError?: boolean) => {
        if (hadError === true || !this.#readEnded) {
          this.#events?.error(new LocalClosedError('local connection closed before it sent its end'))
        }
      })
      .on(w, 'close', (hadError?: boolean) => {
        if (hadError === true || !this.#writeFinished) {
          this.#events?.error(
            new LocalClosedError('local connection closed before the remote finished sending'),
          )
        }
      })
      .on(w, 'drain', () => this.#events?.drain())
      .on(w, 'finish', () => {
        this.#writeFinished = true
        this.#events?.finish()
      })
    if ((w as unknown) !== r) {
      this.#listeners.on(w, 'error', onError)
    }
    if (r.destroyed || w.destroyed) {
      events.error(new LocalClosedError('local side was already closed'))
      return
    }
    if (r.readableEnded) {
      // Its 'end' came before we listened and will not repeat.
      queueMicrotask(() => this.#onEnd())
    }
    r.resume()
  }

  #onEnd(): void {
    if (!this.#readEnded) {
      this.#readEnded = true
      this.#events?.end()
    }
  }

  pause(): void {
    this.#readable.pause()
  }

  resume(): void {
    if (!this.#readEnded) {
      this.#readable.resume()
    }
  }

  write(chunk: Chunk): boolean {
    return writeChunk(this.#writable, chunk)
  }

  end(): void {
    this.#writable.end()
  }

  reset(): void {
    if (!this.#resetDone) {
      this.#resetDone = true
      this.#reset()
    }
  }

  detach(): void {
    this.#events = undefined
    this.#listeners.removeAll()
    // Late errors from a side we gave up on must not become uncaught exceptions.
    this.#readable.on('error', ignore)
    this.#writable.on('error', ignore)
  }
}

function ignore(): void {}
