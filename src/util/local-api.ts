/**
 * A small HTTP/1.1 server for a local API on a Unix socket (the daemon's, the relay's admin
 * socket), in the manner of Tailscale's LocalAPI: a flat route table, a bearer cookie checked in
 * constant time, browsers kept out (`Origin`/`Referer` refused: a web page can make a browser talk
 * to a local socket through a proxy, never with those headers absent), request bodies capped,
 * slow clients cut off, connections capped, and one response shape — `{"data": …}` or `{"error": "…", "hint": "…"}` —
 * or plain text for `Accept: text/plain`. The web dashboard's loopback listener (src/daemon/ui.ts)
 * is the same server with a guard of its own (`authorize`) in place of the cookie and the browser
 * refusal.
 *
 * @packageDocumentation
 */

import * as http from 'node:http'
import type { Duplex } from 'node:stream'
import { ConflictError, NotFoundError, PeerupError, UsageError } from '../errors.ts'
import { bearerMatches } from './cookie.ts'

/** Largest request body accepted (docs/local-api.md). */
export const MAX_BODY_BYTES = 1024 * 1024

/** A client must send its headers within this of connecting (or of its previous answer). */
export const HEADERS_TIMEOUT_MS = 5_000

/** A client must send its whole request within this (responses such as `events` may last longer). */
export const REQUEST_TIMEOUT_MS = 15_000

/**
 * Most connections open at once; more are closed as they come. Only the socket's owner can connect
 * (0600 in a 0700 directory), so this guards against a runaway script, not a stranger: normal use
 * is one connection per CLI command, per `status --watch` and per ssh session through the daemon
 * (`POST /v1/dial` keeps its connection). 256 is far above that and a quarter of the common
 * 1024-descriptor soft limit, so a flood cannot take the descriptors the node needs for its peers.
 */
export const MAX_API_CONNECTIONS = 256

/** The limits a local API holds its clients to (tests shorten them). */
export interface ApiLimits {
  headersTimeoutMs: number
  requestTimeoutMs: number
  maxConnections: number
}

/** The limits of every local API unless a test says otherwise. */
export const API_LIMITS: Readonly<ApiLimits> = {
  headersTimeoutMs: HEADERS_TIMEOUT_MS,
  requestTimeoutMs: REQUEST_TIMEOUT_MS,
  maxConnections: MAX_API_CONNECTIONS,
}

/** An error with the HTTP status it is answered with. */
export class ApiError extends PeerupError {
  override name = 'ApiError'
  readonly status: number

  constructor(status: number, message: string, options: { hint?: string; cause?: unknown } = {}) {
    super(message, options)
    this.status = status
  }
}

export interface ApiRequest {
  method: string
  /** The matched route pattern, like `/v1/auth/:peer` (for metrics: bounded cardinality). */
  route: string
  params: Record<string, string>
  query: URLSearchParams
  /** The parsed JSON body (`undefined` without one). */
  body: unknown
  req: http.IncomingMessage
  /** Aborted when the client goes away. */
  signal: AbortSignal
}

/** What a handler returns: data for the envelope, or a response it writes itself (streams). */
export type ApiResult = { data: unknown; status?: number } | { stream: (res: http.ServerResponse) => void }

export interface Route {
  method: 'GET' | 'POST' | 'DELETE'
  /** `/v1/auth/:peer`: segments starting with `:` are parameters. */
  path: string
  handler: (r: ApiRequest) => Promise<ApiResult>
  /** Plain-text rendering for `Accept: text/plain`; without it the JSON is sent. */
  text?: (data: never) => string
}

/** An `Upgrade` route: the socket is handed over raw once the request is authorized. */
export interface UpgradeRoute {
  path: string
  /** The value of the `Upgrade` header the route speaks. */
  protocol: string
  handler: (r: Omit<ApiRequest, 'body'>, socket: Duplex, head: Buffer) => Promise<void>
}

/** One answered request, for metrics and the audit log. */
export interface AccessRecord {
  method: string
  route: string
  status: number
  durationMs: number
}

export interface LocalApiOptions {
  routes: Route[]
  upgrades?: UpgradeRoute[]
  /** The current cookie; `undefined` while starting (every request is then refused). */
  cookie: () => string | undefined
  /**
   * Replaces the cookie and browser checks: why a request is refused, or undefined to serve it.
   * The web dashboard's listener (src/daemon/ui.ts) serves browsers, with a login of its own.
   */
  authorize?: (req: http.IncomingMessage) => ApiError | undefined
  /** Headers sent with every answer (the dashboard's no-store, CSP and framing rules). */
  headers?: Readonly<Record<string, string>>
  /** The cookie file's name, for the hint of a 401 (default `.daemon-cookie`). */
  cookieFileName?: string
  /** Sent as `X-Peerup-Version`, so a client can warn about a version mismatch. */
  version: string
  /** Maps a thrown error to a status (defaults: ApiError's own, usage 400, not found 404, conflict 409, else 500). */
  statusOf?: (err: unknown) => number | undefined
  onAccess?: (record: AccessRecord) => void
  /** Defaults: {@link API_LIMITS}. */
  limits?: Partial<ApiLimits>
}

/** Our errors answered with a status of their own (an ApiError carries its own). */
const ERROR_STATUS: Array<[new (message: string) => Error, number]> = [
  [UsageError, 400],
  [NotFoundError, 404],
  [ConflictError, 409],
]

/**
 * The status an error is answered with: `custom`'s, else an ApiError's own, usage 400, not found
 * 404, conflict 409, anything else 500.
 */
export function errorStatus(err: unknown, custom?: (err: unknown) => number | undefined): number {
  const status =
    err instanceof ApiError ? err.status : ERROR_STATUS.find(([type]) => err instanceof type)?.[1]
  return custom?.(err) ?? status ?? 500
}

/** Creates the server (not listening yet: see `listenOnSocket`). */
export function createLocalApiServer(options: LocalApiOptions): http.Server {
  const limits: ApiLimits = { ...API_LIMITS, ...options.limits }
  // Node's own timeouts are checked only every connectionsCheckingInterval (30 s) and never for a
  // connection that has not sent a byte: kept as a backstop, enforced per connection below.
  const server = http.createServer({
    requestTimeout: limits.requestTimeoutMs,
    headersTimeout: limits.headersTimeoutMs,
  })
  server.keepAliveTimeout = 5_000
  server.maxConnections = limits.maxConnections
  const deadlines = new WeakMap<object, Deadlines>()
  server.on('connection', (socket: Duplex) => {
    const d = new Deadlines(socket, limits)
    deadlines.set(socket, d)
    socket.once('close', () => d.clear())
    d.arm()
  })

  server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) =>
    answerRequest(options, deadlines, req, res),
  )
  server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) =>
    answerUpgrade(options, deadlines, req, socket, head),
  )
  return server
}

/** One request: refused before any route runs, or answered by its route. */
function answerRequest(
  options: LocalApiOptions,
  deadlines: WeakMap<object, Deadlines>,
  req: http.IncomingMessage,
  res: http.ServerResponse,
): void {
  deadlines.get(req.socket)?.requestStarted(req, res)
  const access = accessReporter(options, req)
  let route = 'unmatched'
  res.setHeader('X-Peerup-Version', options.version)
  for (const [name, value] of Object.entries(options.headers ?? {})) {
    res.setHeader(name, value)
  }
  const finish = (): void => access(route, res.statusCode)
  res.once('finish', finish)
  res.once('close', () => {
    if (!res.writableFinished) {
      finish()
    }
  })
  const wantsText = /\btext\/plain\b/.test(req.headers.accept ?? '')
  const fail = (err: unknown): void => {
    const status = errorStatus(err, options.statusOf)
    if (status === 413) {
      // The rest of an oversized body is not read: the connection cannot be reused.
      res.setHeader('Connection', 'close')
    }
    const message =
      status >= 500 && !(err instanceof PeerupError)
        ? `internal error: ${(err as Error)?.message}`
        : (err as Error).message
    sendError(res, status, message, errorFields(err), wantsText)
  }
  const refusal = (options.authorize ?? ((r) => refuse(r, options)))(req)
  if (refusal !== undefined) {
    // Drain nothing: the connection is closed after the answer.
    res.setHeader('Connection', 'close')
    fail(refusal)
    return
  }
  const url = new URL(req.url ?? '/', 'http://local')
  const match = matchRoute(options.routes, req.method ?? '', url.pathname)
  if (match === undefined) {
    fail(new ApiError(404, `no route ${req.method} ${url.pathname}`))
    return
  }
  if (match === 'method') {
    fail(new ApiError(405, `${req.method} is not allowed on ${url.pathname}`))
    return
  }
  route = match.route.path
  const controller = new AbortController()
  res.once('close', () => controller.abort(new Error('client went away')))
  readBody(req)
    .then((body) =>
      match.route.handler({
        method: req.method ?? '',
        route,
        params: match.params,
        query: url.searchParams,
        body,
        req,
        signal: controller.signal,
      }),
    )
    .then((result) => {
      if ('stream' in result) {
        result.stream(res)
        return
      }
      const status = result.status ?? 200
      if (wantsText && match.route.text !== undefined) {
        const text = match.route.text(result.data as never)
        res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8' })
        res.end(text.endsWith('\n') ? text : `${text}\n`)
        return
      }
      sendJson(res, status, { data: result.data ?? null })
    })
    .catch(fail)
}

/** One upgrade request: refused, or the socket handed to its route. */
function answerUpgrade(
  options: LocalApiOptions,
  deadlines: WeakMap<object, Deadlines>,
  req: http.IncomingMessage,
  socket: Duplex,
  head: Buffer,
): void {
  // The request is in; what follows on the socket is the route's own protocol, for as long as it lasts.
  deadlines.get(socket)?.clear()
  const access = accessReporter(options, req)
  const url = new URL(req.url ?? '/', 'http://local')
  const route = (options.upgrades ?? []).find((u) => u.path === url.pathname)
  const answer = (status: number, message: string, fields: { hint?: string; name?: string } = {}): void => {
    const body = JSON.stringify({ error: message, ...fields })
    socket.end(
      `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ''}\r\nContent-Type: application/json\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\nX-Peerup-Version: ${options.version}\r\nConnection: close\r\n\r\n${body}`,
    )
    access(route?.path ?? 'unmatched', status)
  }
  socket.on('error', () => {})
  const refusal = (options.authorize ?? ((r) => refuse(r, options)))(req)
  if (refusal !== undefined) {
    answer(refusal.status, refusal.message, refusal.hint === undefined ? {} : { hint: refusal.hint })
    return
  }
  if (route === undefined || req.headers.upgrade?.toLowerCase() !== route.protocol) {
    answer(404, `no upgrade route ${url.pathname} for ${req.headers.upgrade ?? 'no protocol'}`)
    return
  }
  const controller = new AbortController()
  socket.once('close', () => controller.abort(new Error('client went away')))
  route
    .handler(
      {
        method: req.method ?? '',
        route: route.path,
        params: {},
        query: url.searchParams,
        req,
        signal: controller.signal,
      },
      socket,
      head,
    )
    .then(() => access(route.path, 101))
    .catch((err: unknown) => {
      if (socket.writable) {
        answer(errorStatus(err, options.statusOf), (err as Error).message, errorFields(err))
      } else {
        socket.destroy()
      }
    })
}

/**
 * The two deadlines of the request a connection is due to send: its headers within
 * `headersTimeoutMs`, all of it within `requestTimeoutMs`, both counted from the connect (or from
 * the previous answer on a kept-alive connection). A connection that misses one is destroyed; once a
 * request is in, its answer may take as long as it takes (an event stream, an invite).
 */
class Deadlines {
  readonly #socket: Duplex
  readonly #limits: ApiLimits
  #headers: NodeJS.Timeout | undefined
  #request: NodeJS.Timeout | undefined
  /** Requests whose answer is not finished (more than one when a client pipelines). */
  #open = 0

  constructor(socket: Duplex, limits: ApiLimits) {
    this.#socket = socket
    this.#limits = limits
  }

  /** Starts both clocks for the next request. */
  arm(): void {
    this.clear()
    const cut = (): void => {
      this.clear()
      this.#socket.destroy()
    }
    this.#headers = setTimeout(cut, this.#limits.headersTimeoutMs).unref()
    this.#request = setTimeout(cut, this.#limits.requestTimeoutMs).unref()
  }

  clear(): void {
    clearTimeout(this.#headers)
    clearTimeout(this.#request)
    this.#headers = undefined
    this.#request = undefined
  }

  /** A request's headers are in: its body still has to arrive in time. */
  requestStarted(req: http.IncomingMessage, res: http.ServerResponse): void {
    clearTimeout(this.#headers)
    this.#headers = undefined
    this.#open++
    // 'end' comes once the body is read, or once Node drains what a handler left unread.
    req.once('end', () => {
      clearTimeout(this.#request)
      this.#request = undefined
      this.#next(req)
    })
    res.once('close', () => {
      this.#open--
      this.#next(req)
    })
  }

  /** Once nothing is being answered or received, the next request's clocks start. */
  #next(req: http.IncomingMessage): void {
    if (this.#open === 0 && req.complete && !this.#socket.destroyed) {
      this.arm()
    }
  }
}

/** Reports one request to `onAccess`, timed from now. */
function accessReporter(
  options: LocalApiOptions,
  req: http.IncomingMessage,
): (route: string, status: number) => void {
  const started = performance.now()
  return (route, status) =>
    options.onAccess?.({ method: req.method ?? '', route, status, durationMs: performance.now() - started })
}

/** Why a request is refused before any route runs, or undefined. */
function refuse(req: http.IncomingMessage, options: LocalApiOptions): ApiError | undefined {
  const cookie = options.cookie()
  if (req.headers.origin !== undefined || req.headers.referer !== undefined) {
    return new ApiError(403, 'requests from web pages are refused (Origin/Referer header present)')
  }
  if (cookie === undefined) {
    return new ApiError(503, 'still starting', { hint: 'try again in a moment' })
  }
  if (!bearerMatches(req.headers.authorization, cookie)) {
    return new ApiError(401, 'missing or wrong cookie', {
      hint: `send the cookie from the ${options.cookieFileName ?? '.daemon-cookie'} file beside the socket as \`Authorization: Bearer <cookie>\``,
    })
  }
  return undefined
}

function matchRoute(
  routes: Route[],
  method: string,
  pathname: string,
): { route: Route; params: Record<string, string> } | 'method' | undefined {
  const parts = pathname.split('/').filter((p) => p !== '')
  let methodMismatch = false
  for (const route of routes) {
    const pattern = route.path.split('/').filter((p) => p !== '')
    const params: Record<string, string> = {}
    const matches =
      pattern.length === parts.length &&
      pattern.every((want, i) => {
        const got = parts[i] as string
        if (!want.startsWith(':')) {
          return want === got
        }
        try {
          params[want.slice(1)] = decodeURIComponent(got)
          return true
        } catch {
          return false
        }
      })
    if (!matches) {
      continue
    }
    if (route.method !== method) {
      methodMismatch = true
      continue
    }
    return { route, params }
  }
  return methodMismatch ? 'method' : undefined
}

/** Reads a JSON body of at most {@link MAX_BODY_BYTES}. */
function readBody(req: http.IncomingMessage): Promise<unknown> {
  const tooLarge = (): ApiError => new ApiError(413, `request body over ${MAX_BODY_BYTES} bytes`)
  if (Number(req.headers['content-length'] ?? 0) > MAX_BODY_BYTES) {
    req.resume()
    return Promise.reject(tooLarge())
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    req.on('data', (chunk: Buffer) => {
      size += chunk.length
      if (size <= MAX_BODY_BYTES) {
        chunks.push(chunk)
      } else if (size - chunk.length <= MAX_BODY_BYTES) {
        // The first chunk over the limit: the rest is not read.
        req.pause()
        reject(tooLarge())
      }
    })
    req.once('error', reject)
    req.once('end', () => {
      if (size > MAX_BODY_BYTES) {
        return
      }
      if (size === 0) {
        resolve(undefined)
        return
      }
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')))
      } catch {
        reject(new ApiError(400, 'the request body is not valid JSON'))
      }
    })
  })
}

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const text = `${JSON.stringify(body)}\n`
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) })
  res.end(text)
}

/**
 * The hint and the name of one of our errors, for its body: the name lets the client raise the
 * same kind of error (a `UsageError` stays a usage error across the socket).
 */
export function errorFields(err: unknown): { hint?: string; name?: string } {
  if (!(err instanceof PeerupError) || err instanceof ApiError) {
    return {}
  }
  return { ...(err.hint === undefined ? {} : { hint: err.hint }), name: err.name }
}

function sendError(
  res: http.ServerResponse,
  status: number,
  message: string,
  fields: { hint?: string; name?: string },
  wantsText: boolean,
): void {
  if (res.headersSent) {
    res.destroy()
    return
  }
  if (wantsText) {
    res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8' })
    res.end(`${message}${fields.hint === undefined ? '' : ` — ${fields.hint}`}\n`)
    return
  }
  sendJson(res, status, { error: message, ...fields })
}
