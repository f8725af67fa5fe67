/**
 * The web dashboard (docs/ui.md): a small static app the daemon serves on a loopback TCP address
 * (`ui.listen_address`), and the daemon's own API routes beside it — the same handlers as on
 * `peerup.sock`, only guarded differently. A browser cannot send the socket's bearer cookie, so
 * this listener has a login of its own: `peerup ui` asks for a one-time token (good for 60 s,
 * only its hash kept here), the page posts it and gets a session cookie (HttpOnly,
 * SameSite=Strict). Every request must name this listener in `Host` (DNS rebinding), a request
 * that changes anything must carry this listener's `Origin`, and every answer is `no-store`
 * under a CSP that runs no inline script. Why each of these: docs/decisions/0014-web-dashboard.md.
 *
 * @packageDocumentation
 */

import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import * as fs from 'node:fs'
import type * as http from 'node:http'
import { createRequire } from 'node:module'
import type { AddressInfo } from 'node:net'
import * as path from 'node:path'
import * as sea from 'node:sea'
import { ROUTES } from '../api/index.ts'
import { DEFAULT_UI_PORT } from '../config/schema.ts'
import { ConflictError } from '../errors.ts'
import { formatHostPort, parseHostPort } from '../util/address.ts'
import type { Component } from '../util/components.ts'
import { ApiError, createLocalApiServer, type Route } from '../util/local-api.ts'
import { listenFailure } from '../util/port.ts'
import { closeHttpServer } from '../util/socket.ts'
import { VERSION } from '../version.ts'
import type { DaemonComponents } from './run.ts'
import { statusOf } from './server.ts'

/** How long a login link printed by `peerup ui` is good for. */
export const LOGIN_TOKEN_TTL_MS = 60_000

/** How long a browser stays logged in (the daemon forgets every session when it stops). */
export const SESSION_TTL_MS = 12 * 60 * 60_000

/** Login links not used yet that are kept; an older one is dropped for a new one. */
const MAX_PENDING_LOGINS = 16

/** Sessions kept; logging in once more drops the oldest. */
const MAX_SESSIONS = 64

/** The session cookie's name. */
export const SESSION_COOKIE = 'peerup_ui'

/**
 * Sent with every answer. No inline script or style runs (the app is files of this listener),
 * nothing is framed, no page or answer is cached (the answers hold peer ids, addresses and invite
 * codes), no Referer leaves the page.
 */
export const UI_HEADERS: Readonly<Record<string, string>> = {
  'Cache-Control': 'no-store',
  'Content-Security-Policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'X-Frame-Options': 'DENY',
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Resource-Policy': 'same-origin',
}

/** The app's files: its name on the listener, the SEA asset it is built into, its type. */
const ASSETS: ReadonlyArray<{ path: string; asset: string; type: string }> = [
  { path: '/', asset: 'index.html', type: 'text/html; charset=utf-8' },
  { path: '/login', asset: 'index.html', type: 'text/html; charset=utf-8' },
  { path: '/app.js', asset: 'app.js', type: 'text/javascript; charset=utf-8' },
  { path: '/app.css', asset: 'app.css', type: 'text/css; charset=utf-8' },
  // The QR library `peerup invite` draws with in the terminal, as the browser imports it.
  { path: '/uqr.mjs', asset: 'uqr.mjs', type: 'text/javascript; charset=utf-8' },
]

/**
 * One of the app's files: a SEA asset in the single executable (build.mjs embeds them), the file
 * beside this module when running from source.
 */
export function uiAsset(name: string): string {
  if (sea.isSea()) {
    return sea.getAsset(`ui/${name}`, 'utf8')
  }
  if (name === 'uqr.mjs') {
    // The package's `require` entry is dist/index.cjs; the browser wants the ES module beside it.
    const cjs = createRequire(import.meta.url).resolve('uqr')
    return fs.readFileSync(path.join(path.dirname(cjs), 'index.mjs'), 'utf8')
  }
  return fs.readFileSync(path.join(import.meta.dirname, 'ui', name), 'utf8')
}

/** What {@link DaemonUi} uses; each is read at start. */
type DaemonUiComponents = Pick<DaemonComponents, 'api' | 'runtime' | 'observer' | 'log'>

const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex')

/** Drops the entries of `map` whose time is past, then the oldest while it holds `max` or more. */
function prune(map: Map<string, number>, now: number, max: number): void {
  for (const [key, expires] of map) {
    if (expires <= now) {
      map.delete(key)
    }
  }
  for (const key of map.keys()) {
    if (map.size < max) {
      break
    }
    map.delete(key)
  }
}

/** The value of cookie `name` in a `Cookie` header. */
function cookieValue(header: string | undefined, name: string): string | undefined {
  for (const part of (header ?? '').split(';')) {
    const eq = part.indexOf('=')
    if (eq > 0 && part.slice(0, eq).trim() === name) {
      return part.slice(eq + 1).trim()
    }
  }
  return undefined
}

/**
 * The dashboard's listener: off (start and stop do nothing) while `ui.listen_address` is empty.
 * Starts after the API's routes are in (it serves the same table) and stops before them.
 */
export class DaemonUi implements Component {
  readonly #components: DaemonUiComponents
  #server: http.Server | undefined
  /** `host:port` it listens on, once started. */
  #address: string | undefined
  /** The `Host` values this listener answers to. */
  #hosts = new Set<string>()
  /** sha256 of a login token → when it expires (ms since the epoch). */
  readonly #logins = new Map<string, number>()
  /** sha256 of a session cookie → when it expires. */
  readonly #sessions = new Map<string, number>()

  constructor(components: DaemonUiComponents) {
    this.#components = components
  }

  /** `host:port` the dashboard listens on, or undefined when it is off. */
  get address(): string | undefined {
    return this.#address
  }

  async start(): Promise<void> {
    const { api, runtime, observer, log } = this.#components
    const listen = runtime.config.ui.listen_address
    if (listen === '') {
      return
    }
    const routes: Route[] = [
      ...this.#appRoutes(),
      // The API as on the socket, less the route that makes login links: a login makes another
      // only through `peerup ui`, from someone who can read the socket's cookie.
      ...api.routes.filter((r) => r.path !== ROUTES.uiLogin.path),
    ]
    const server = createLocalApiServer({
      routes,
      upgrades: [],
      cookie: () => undefined,
      authorize: (req) => this.#refusal(req),
      headers: UI_HEADERS,
      version: VERSION,
      statusOf,
      onAccess: (a) => {
        observer.apiAccess(a.method, a.route, a.status, a.durationMs)
        log.debug('ui request', { method: a.method, path: a.route, status: a.status })
      },
    })
    const { host, port } = parseHostPort(listen)
    try {
      // Rejects with the listen error (a port in use), as 'error' comes instead of 'listening'.
      await once(server.listen(port, host), 'listening')
    } catch (err) {
      const failure = listenFailure({ host, port }, err as NodeJS.ErrnoException)
      // Which key to change: the daemon does not start without its dashboard once it is asked for.
      failure.message = `ui.listen_address: ${failure.message}`
      throw failure
    }
    const bound = (server.address() as AddressInfo).port
    this.#server = server
    this.#address = formatHostPort(host, bound)
    this.#hosts = new Set([this.#address, `localhost:${bound}`])
    log.info('dashboard served', { listen: this.#address })
  }

  async stop(): Promise<void> {
    const server = this.#server
    this.#server = undefined
    this.#address = undefined
    this.#logins.clear()
    this.#sessions.clear()
    if (server !== undefined) {
      await closeHttpServer(server)
    }
  }

  /**
   * A new one-time login link: the token in the fragment, which the browser sends to no server
   * (no log, no Referer sees it); only its hash is kept, until it is used or expires.
   */
  newLogin(): { url: string; expires: string } {
    if (this.#address === undefined) {
      throw new ConflictError('the web dashboard is off on this daemon', {
        hint: `set ui.listen_address: 127.0.0.1:${DEFAULT_UI_PORT} in config.yaml and restart the daemon`,
      })
    }
    const now = Date.now()
    prune(this.#logins, now, MAX_PENDING_LOGINS)
    const token = randomBytes(32).toString('base64url')
    const expires = now + LOGIN_TOKEN_TTL_MS
    this.#logins.set(sha256(token), expires)
    return { url: `http://${this.#address}/login#${token}`, expires: new Date(expires).toISOString() }
  }

  /** The app's files and the login exchange. */
  #appRoutes(): Route[] {
    const files: Route[] = ASSETS.map(({ path: at, asset, type }) => {
      const body = uiAsset(asset)
      return {
        method: 'GET',
        path: at,
        handler: async () => ({
          stream: (res) =>
            res.writeHead(200, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body) }).end(body),
        }),
      }
    })
    const login: Route = {
      method: 'POST',
      path: '/login',
      handler: async (r) => {
        const token = (r.body as { token?: unknown } | undefined)?.token
        if (typeof token !== 'string' || !this.#useLogin(token)) {
          throw new ApiError(401, 'this login link is used, expired or wrong', {
            hint: 'run `peerup ui` for a new one',
          })
        }
        const now = Date.now()
        prune(this.#sessions, now, MAX_SESSIONS)
        const session = randomBytes(32).toString('base64url')
        this.#sessions.set(sha256(session), now + SESSION_TTL_MS)
        const cookie =
          `${SESSION_COOKIE}=${session}; HttpOnly; SameSite=Strict; Path=/; ` +
          `Max-Age=${SESSION_TTL_MS / 1000}`
        return { stream: (res) => res.writeHead(204, { 'Set-Cookie': cookie }).end() }
      },
    }
    return [...files, login]
  }

  /** Spends a login token: true once for a token that was given and has not expired. */
  #useLogin(token: string): boolean {
    const key = sha256(token)
    const expires = this.#logins.get(key)
    this.#logins.delete(key)
    return expires !== undefined && expires > Date.now()
  }

  /** Why a request is refused before any route runs, or undefined. */
  #refusal(req: http.IncomingMessage): ApiError | undefined {
    const host = req.headers.host?.toLowerCase()
    if (host === undefined || !this.#hosts.has(host)) {
      // A page on another name that resolves here (DNS rebinding) sends its own name.
      return new ApiError(403, 'wrong Host header: the dashboard answers only under its own address', {
        hint: `open http://${this.#address}/`,
      })
    }
    const site = req.headers['sec-fetch-site']
    if (site !== undefined && site !== 'same-origin' && site !== 'none') {
      return new ApiError(403, 'requests from other sites are refused')
    }
    // A browser sends Origin with every request that can change something; a page of another
    // origin cannot forge it. A GET without one is a navigation or a same-origin fetch.
    const origin = req.headers.origin
    const reads = req.method === 'GET' || req.method === 'HEAD'
    if ((origin !== undefined || !reads) && origin !== `http://${host}`) {
      return new ApiError(403, 'wrong or missing Origin header: only the dashboard itself may send this')
    }
    const pathname = new URL(req.url ?? '/', 'http://local').pathname
    if (pathname.startsWith('/v1/') && !this.#hasSession(req)) {
      return new ApiError(401, 'not logged in to the dashboard', {
        hint: 'open the link `peerup ui` prints',
      })
    }
    return undefined
  }

  #hasSession(req: http.IncomingMessage): boolean {
    const session = cookieValue(req.headers.cookie, SESSION_COOKIE)
    if (session === undefined) {
      return false
    }
    const expires = this.#sessions.get(sha256(session))
    return expires !== undefined && expires > Date.now()
  }
}
