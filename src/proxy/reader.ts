/**
 * Reading a client's handshake (SOCKS5, an HTTP CONNECT request: src/proxy/socks.ts,
 * src/proxy/http-connect.ts) off its socket: exactly the bytes it needs, whatever came after them
 * given back to the socket, so that nothing a client sends before its answer is lost when the
 * pipe takes over.
 *
 * @packageDocumentation
 */

import type * as net from 'node:net'
import { PeerupError } from '../errors.ts'

/** What a client asked the gateway to connect to. */
export interface GatewayTarget {
  /** A domain name, or the text of an IPv4/IPv6 address. */
  host: string
  port: number
  /** The username the client authenticated with, when authentication was on. */
  user?: string
}

/** Options of a gateway handshake (SOCKS5 or HTTP CONNECT). */
export interface HandshakeOptions {
  /** Username and password a client must give (RFC 1929, or Basic); none asked when absent. */
  credentials?: { user: string; password: string }
  /** Bound of the whole handshake. */
  signal: AbortSignal
}

/**
 * A handshake that failed; `answer` is what the client was already told, if anything: a SOCKS
 * reply code, an HTTP status.
 */
export class HandshakeError extends PeerupError {
  override name = 'HandshakeError'
  readonly answer: number | undefined

  constructor(message: string, answer?: number) {
    super(message)
    this.answer = answer
  }
}

/**
 * Reads exact byte counts (or up to a delimiter) from a socket, and gives back what it read
 * beyond them. It resumes the socket (a listener hands it over paused); {@link giveBack} pauses it
 * again.
 */
export class HandshakeReader {
  readonly #socket: net.Socket
  readonly #signal: AbortSignal
  readonly #fail: (message: string) => Error
  #buffered: Buffer = Buffer.alloc(0)
  #wake: (() => void) | undefined
  #failed: Error | undefined
  readonly #onData = (chunk: Buffer): void => {
    this.#buffered = this.#buffered.length === 0 ? chunk : Buffer.concat([this.#buffered, chunk])
    this.#wake?.()
  }
  readonly #onEnd = (): void => {
    this.#failed ??= this.#fail('the client closed the connection during the handshake')
    this.#wake?.()
  }
  readonly #onError = (err: Error): void => {
    this.#failed ??= this.#fail(`the client's connection failed during the handshake: ${err.message}`)
    this.#wake?.()
  }
  readonly #onAbort = (): void => {
    this.#failed ??= this.#fail('the handshake took too long')
    this.#wake?.()
  }

  /** `fail` makes the error of a handshake that cannot go on (the client left, `signal` fired). */
  constructor(socket: net.Socket, signal: AbortSignal, fail: (message: string) => Error) {
    this.#socket = socket
    this.#signal = signal
    this.#fail = fail
    socket.on('data', this.#onData)
    socket.on('end', this.#onEnd)
    socket.on('error', this.#onError)
    signal.addEventListener('abort', this.#onAbort, { once: true })
    if (signal.aborted) {
      this.#onAbort()
    }
    socket.resume()
  }

  /** The next `n` bytes. */
  async bytes(n: number): Promise<Buffer> {
    await this.#until(() => this.#buffered.length >= n)
    const out = this.#buffered.subarray(0, n)
    this.#buffered = this.#buffered.subarray(n)
    return out
  }

  /**
   * The bytes up to and including `delimiter`; `tooLong` is thrown when `max` bytes came without
   * it.
   */
  async upTo(delimiter: string, max: number, tooLong: () => Error): Promise<Buffer> {
    let at = -1
    await this.#until(() => {
      at = this.#buffered.indexOf(delimiter)
      if ((at < 0 ? this.#buffered.length : at + delimiter.length) > max) {
        throw tooLong()
      }
      return at >= 0
    })
    return this.bytes(at + delimiter.length)
  }

  async #until(ready: () => boolean): Promise<void> {
    while (!ready()) {
      if (this.#failed !== undefined) {
        throw this.#failed
      }
      await new Promise<void>((resolve) => {
        this.#wake = resolve
      })
      this.#wake = undefined
    }
  }

  /** Puts what was read beyond the handshake back at the head of the socket's stream, paused. */
  giveBack(): void {
    this.stop()
    this.#socket.pause()
    if (this.#buffered.length > 0) {
      this.#socket.unshift(this.#buffered)
      this.#buffered = Buffer.alloc(0)
    }
  }

  /** Stops listening to the socket and the signal. */
  stop(): void {
    this.#socket.off('data', this.#onData)
    this.#socket.off('end', this.#onEnd)
    this.#socket.off('error', this.#onError)
    this.#signal.removeEventListener('abort', this.#onAbort)
  }
}
