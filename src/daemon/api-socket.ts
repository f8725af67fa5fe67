/**
 * The daemon's local API as two components. {@link DaemonApiSocket} comes first in the daemon's
 * list: it claims `peerup.sock` before anything touches the network, so a second daemon on the
 * same config stops there; until the routes are in, every request is refused (there is no cookie
 * yet). {@link DaemonApi} comes last: it puts the routes in and writes the cookie once everything
 * they use runs, and at stop refuses new connections and tells the watchers the daemon stops.
 *
 * @packageDocumentation
 */

import type { Component } from '../util/components.ts'
import { removeCookie, writeCookie } from '../util/cookie.ts'
import { type ApiLimits, createLocalApiServer, type Route, type UpgradeRoute } from '../util/local-api.ts'
import { listenOnSocket } from '../util/socket.ts'
import { VERSION } from '../version.ts'
import type { DaemonComponents } from './run.ts'
import { daemonRoutes, type NetworkSelect, statusOf } from './server.ts'

/** What {@link DaemonApiSocket} uses; `observer` is read at each request. */
type DaemonApiSocketComponents = Pick<DaemonComponents, 'observer' | 'log'>

export interface DaemonApiSocketInit {
  socketPath: string
  cookieFile: string
  /** The API's timeouts and connection cap (default `API_LIMITS`; tests shorten them). */
  limits?: Partial<ApiLimits> | undefined
}

/**
 * The API server on its Unix socket. `stop()` removes the cookie only when this daemon wrote it: a
 * second daemon refused at the socket must not delete the first one's.
 */
export class DaemonApiSocket implements Component {
  /** The route table as served, filled by {@link DaemonApiSocket.open}. */
  readonly routes: Route[] = []
  readonly upgrades: UpgradeRoute[] = []
  readonly socketPath: string
  readonly cookieFile: string
  readonly #server: ReturnType<typeof createLocalApiServer>
  #cookie: string | undefined
  #cookieWritten = false
  #closeSocket: (() => Promise<void>) | undefined

  constructor(components: DaemonApiSocketComponents, init: DaemonApiSocketInit) {
    this.socketPath = init.socketPath
    this.cookieFile = init.cookieFile
    const { log } = components
    this.#server = createLocalApiServer({
      routes: this.routes,
      upgrades: this.upgrades,
      cookie: () => this.#cookie,
      version: VERSION,
      statusOf,
      ...(init.limits === undefined ? {} : { limits: init.limits }),
      onAccess: (a) => {
        components.observer.apiAccess(a.method, a.route, a.status, a.durationMs)
        log.debug('api request', { method: a.method, path: a.route, status: a.status })
      },
    })
  }

  /** Claims the socket (refused when another daemon answers on it). */
  async start(): Promise<void> {
    this.#closeSocket = await listenOnSocket(this.#server, this.socketPath, { what: 'a peerup daemon' })
  }

  /**
   * Serves `table` and writes a new cookie. Called once the socket is ours and everything the
   * routes use runs, so a cookie on disk always goes with a daemon that answers; rotated at every
   * start.
   */
  async open(table: { routes: Route[]; upgrades: UpgradeRoute[] }): Promise<void> {
    this.routes.push(...table.routes)
    this.upgrades.push(...table.upgrades)
    this.#cookie = await writeCookie(this.cookieFile)
    this.#cookieWritten = true
  }

  /** Takes no new connections; those open are still answered until `stop()`. */
  refuseNew(): void {
    this.#server.close()
  }

  /** Closes the socket and every connection, then removes the cookie this daemon wrote. */
  async stop(): Promise<void> {
    const closeSocket = this.#closeSocket
    this.#closeSocket = undefined
    if (closeSocket !== undefined) {
      const closing = closeSocket()
      // Event streams and keep-alive connections would hold close() open forever.
      this.#server.closeAllConnections()
      await closing
    }
    if (this.#cookieWritten) {
      this.#cookieWritten = false
      await removeCookie(this.cookieFile)
    }
  }
}

/** What {@link DaemonApi} serves; read at start. */
interface DaemonApiComponents {
  api: DaemonApiSocket
  /** The daemon's networks: each request is served from the one it selects. */
  networks: { select: NetworkSelect; publishStopping(): void }
}

/**
 * The daemon's routes (src/daemon/server.ts) on its API socket, each request served from the
 * network it selects (`?network=`); at stop the watchers (`GET /v1/events`) are told, so their
 * streams end.
 */
export class DaemonApi implements Component {
  readonly #components: DaemonApiComponents

  constructor(components: DaemonApiComponents) {
    this.#components = components
  }

  async start(): Promise<void> {
    const { api, networks } = this.#components
    await api.open(daemonRoutes(networks.select))
  }

  stop(): void {
    this.#components.api.refuseNew()
    this.#components.networks.publishStopping()
  }
}
