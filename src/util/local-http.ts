/**
 * The client half of a local API on a Unix socket (src/util/local-api.ts): reads the cookie,
 * sends `Authorization: Bearer`, unwraps `{data}` and turns `{error, hint}` and connection
 * failures into named errors that say what to do.
 *
 * @packageDocumentation
 */

import * as http from 'node:http'
import type { Socket } from 'node:net'
import { createInterface } from 'node:readline'
import { text as readAll } from 'node:stream/consumers'
import { ConflictError, NotFoundError, PeerupError, UsageError } from '../errors.ts'
import { CookieMissingError, readCookie } from './cookie.ts'

/** Nothing answers on the socket (or no cookie): the daemon is not running. */
export class DaemonNotRunningError extends PeerupError {
  override name = 'DaemonNotRunningError'
}

export class ApiResponseError extends PeerupError {
  override name = 'ApiResponseError'
  readonly status: number

  constructor(status: number, message: string, options: { hint?: string } = {}) {
    super(message, options)
    this.status = status
  }
}

export interface LocalHttpClientOptions {
  socketPath: string
  cookieFile: string
  /** What answers there, for messages: `the daemon`, `the relay`. */
  what: string
  /** How to start it, for the hint of {@link DaemonNotRunningError}. */
  startHint: string
  /** Called with the server's version from each response. */
  onServerVersion?: (version: string) => void
}

export class LocalHttpClient {
  readonly #options: LocalHttpClientOptions
  #cookie: string | undefined

  constructor(options: LocalHttpClientOptions) {
    this.#options = options
  }

  async #auth(): Promise<string> {
    if (this.#cookie === undefined) {
      try {
        this.#cookie = await readCookie(this.#options.cookieFile)
      } catch (err) {
        if (err instanceof CookieMissingError && !/permission denied/.test(err.message)) {
          throw this.#notRunning(err)
        }
        throw err
      }
    }
    return `Bearer ${this.#cookie}`
  }

  #notRunning(cause: unknown): DaemonNotRunningError {
    return new DaemonNotRunningError(`${this.#options.what} is not running (${this.#options.socketPath})`, {
      hint: this.#options.startHint,
      cause,
    })
  }

  #connectionError(err: NodeJS.ErrnoException): Error {
    if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') {
      return this.#notRunning(err)
    }
    if (err.code === 'EACCES') {
      return new PeerupError(`cannot connect to ${this.#options.socketPath}: permission denied`, {
        hint: `run the command as the user ${this.#options.what} runs as`,
      })
    }
    return new PeerupError(`talking to ${this.#options.what} failed: ${err.message}`)
  }

  /** Sends a request and returns the `data` of the answer. */
  async request<T>(
    method: 'GET' | 'POST' | 'DELETE',
    path: string,
    body?: unknown,
    options: { signal?: AbortSignal } = {},
  ): Promise<T> {
    const res = await this.#send(method, path, body, options.signal)
    const text = await readAll(res)
    return unwrap<T>(res.statusCode ?? 0, text, this.#options.what)
  }

  /** Sends a request answered with NDJSON and yields each line, parsed, until the signal fires or the stream ends. */
  async *lines<T>(
    method: 'GET' | 'POST',
    path: string,
    body?: unknown,
    signal?: AbortSignal,
  ): AsyncGenerator<T> {
    const res = await this.#send(method, path, body, signal)
    if (res.statusCode !== 200) {
      unwrap(res.statusCode ?? 0, await readAll(res), this.#options.what)
    }
    const rl = createInterface({ input: res })
    try {
      for await (const line of rl) {
        if (line.trim() === '') {
          continue
        }
        const value = JSON.parse(line) as { type?: string; status?: number; error?: unknown }
        if (value.type === 'error' && typeof value.error === 'string') {
          // The stream's last line: what went wrong after it had begun.
          throw remoteError(value as { error: string }, value.status ?? 500)
        }
        yield value as T
      }
    } catch (err) {
      if (signal?.aborted === true) {
        return
      }
      throw err
    } finally {
      rl.close()
      res.destroy()
    }
  }

  /**
   * Sends an `Upgrade` request; on `101` resolves with the raw socket (and any bytes that came with
   * the answer), otherwise rejects with the API's error.
   */
  async upgrade(
    path: string,
    protocol: string,
    signal?: AbortSignal,
  ): Promise<{ socket: Socket; head: Buffer }> {
    const authorization = await this.#auth()
    return new Promise((resolve, reject) => {
      const req = http.request({
        socketPath: this.#options.socketPath,
        method: 'POST',
        path,
        headers: { Authorization: authorization, Connection: 'Upgrade', Upgrade: protocol },
        ...(signal === undefined ? {} : { signal }),
      })
      req.once('upgrade', (res, socket, head) => {
        this.#seen(res)
        resolve({ socket: socket as Socket, head })
      })
      req.once('response', (res) => {
        this.#seen(res)
        readAll(res)
          .then((text) => unwrap(res.statusCode ?? 0, text, this.#options.what))
          .then(() => reject(new PeerupError(`${this.#options.what} did not switch protocols`)), reject)
      })
      req.once('error', (err: NodeJS.ErrnoException) =>
        reject(signal?.aborted === true ? signal.reason : this.#connectionError(err)),
      )
      req.end()
    })
  }

  #seen(res: http.IncomingMessage): void {
    const v = res.headers['x-peerup-version']
    if (typeof v === 'string') {
      this.#options.onServerVersion?.(v)
    }
  }

  async #send(
    method: string,
    path: string,
    body: unknown,
    signal?: AbortSignal,
  ): Promise<http.IncomingMessage> {
    const authorization = await this.#auth()
    const payload = body === undefined ? undefined : JSON.stringify(body)
    return new Promise((resolve, reject) => {
      const req = http.request(
        {
          socketPath: this.#options.socketPath,
          method,
          path,
          headers: {
            Authorization: authorization,
            Accept: 'application/json',
            ...(payload === undefined
              ? {}
              : { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(payload) }),
          },
          ...(signal === undefined ? {} : { signal }),
        },
        (res) => {
          this.#seen(res)
          resolve(res)
        },
      )
      req.once('error', (err: NodeJS.ErrnoException) =>
        reject(signal?.aborted === true ? signal.reason : this.#connectionError(err)),
      )
      req.end(payload)
    })
  }
}

function unwrap<T>(status: number, text: string, what: string): T {
  let parsed: { data?: T; error?: string; hint?: string; name?: string } | undefined
  try {
    parsed = JSON.parse(text) as typeof parsed
  } catch {
    parsed = undefined
  }
  if (status >= 200 && status < 300 && parsed !== undefined && 'data' in parsed) {
    return parsed.data as T
  }
  const error = parsed?.error ?? `${what} answered ${status}: ${text.slice(0, 200)}`
  throw remoteError({ ...parsed, error }, status)
}

/**
 * The error an answer (or a stream's error line) describes, as the same kind of error it was on the
 * other side where that kind is one everybody knows (a usage error keeps exit code 2); any other
 * is an ApiResponseError that carries its name.
 */
export function remoteError(
  body: { error: string; hint?: string; name?: string },
  status: number,
): PeerupError {
  const options = body.hint === undefined ? {} : { hint: body.hint }
  if (body.name !== undefined && Object.hasOwn(KNOWN_ERRORS, body.name)) {
    return new KNOWN_ERRORS[body.name as keyof typeof KNOWN_ERRORS](body.error, options)
  }
  const err = new ApiResponseError(status, body.error, options)
  if (body.name !== undefined) {
    err.name = body.name
  }
  return err
}

/** The errors a client raises as themselves, by name. */
const KNOWN_ERRORS = { UsageError, NotFoundError, ConflictError }
