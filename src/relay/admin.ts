/**
 * The relay's admin socket: `relay.sock` in the relay's directory (0600 in a 0700 directory),
 * guarded by a cookie in `.relay-cookie` exactly as the daemon's local API is (docs/local-api.md;
 * the same building blocks, src/util/socket.ts and src/util/cookie.ts). `peerup relay pair`
 * talks to it; nothing on the network can.
 *
 * Routes: `POST /v1/pair` `{count, ttl_ms}` → a new group and its codes (shown once);
 * `GET /v1/pair` → the groups; `DELETE /v1/pair/{group}` → revoke a group's unused codes.
 *
 * @packageDocumentation
 */

import * as path from 'node:path'
import { UsageError } from '../errors.ts'
import type { Logger } from '../log/index.ts'
import type { Component } from '../util/components.ts'
import { removeCookie, writeCookie } from '../util/cookie.ts'
import { createLocalApiServer, type Route } from '../util/local-api.ts'
import { LocalHttpClient } from '../util/local-http.ts'
import { listenOnSocket } from '../util/socket.ts'
import { VERSION } from '../version.ts'
import type { GroupInfo, NewGroup, RelayPairingService } from './pairing.ts'

/** Files of the admin socket, in the relay's directory. */
export const RELAY_ADMIN_FILES = { socket: 'relay.sock', cookie: '.relay-cookie' } as const

/** What the admin socket asks of the relay's pairing. */
type RelayPairing = Pick<RelayPairingService, 'createGroup' | 'listGroups' | 'revokeGroup'>

/** Longest group lifetime `relay pair` accepts. */
export const MAX_GROUP_TTL_MS = 7 * 24 * 3_600_000

/**
 * The admin socket of a running relay, its files ({@link RELAY_ADMIN_FILES}) in the relay's `dir`:
 * `start()` claims the socket and then writes the cookie, `stop()` removes the cookie and closes
 * the socket.
 */
export class RelayAdminServer implements Component {
  readonly socketPath: string
  readonly #cookieFile: string
  readonly #components: { pairing: RelayPairing; log: Logger }
  #cookie: string | undefined
  #close: (() => Promise<void>) | undefined

  constructor(components: { pairing: RelayPairing; log: Logger }, init: { dir: string }) {
    this.#components = components
    this.socketPath = path.join(init.dir, RELAY_ADMIN_FILES.socket)
    this.#cookieFile = path.join(init.dir, RELAY_ADMIN_FILES.cookie)
  }

  async start(): Promise<void> {
    const server = createLocalApiServer({
      version: VERSION,
      cookieFileName: RELAY_ADMIN_FILES.cookie,
      cookie: () => this.#cookie,
      onAccess: (r) =>
        this.#components.log.debug('admin request', { method: r.method, route: r.route, status: r.status }),
      routes: adminRoutes(this.#components.pairing),
    })
    this.#close = await listenOnSocket(server, this.socketPath, { what: 'a relay' })
    // The cookie is written only once the socket is ours, so that a cookie on disk always goes
    // with the relay answering on the socket; it is rotated at every start.
    this.#cookie = await writeCookie(this.#cookieFile)
  }

  async stop(): Promise<void> {
    const close = this.#close
    this.#close = undefined
    if (close === undefined) {
      return
    }
    this.#cookie = undefined
    await removeCookie(this.#cookieFile)
    await close()
  }
}

/** The admin API: make, list and revoke groups. */
function adminRoutes(pairing: RelayPairing): Route[] {
  return [
    {
      method: 'POST',
      path: '/v1/pair',
      handler: async ({ body }) => {
        const { count, ttl_ms: ttlMs } = (body ?? {}) as { count?: unknown; ttl_ms?: unknown }
        if (
          typeof count !== 'number' ||
          typeof ttlMs !== 'number' ||
          ttlMs < 1000 ||
          ttlMs > MAX_GROUP_TTL_MS
        ) {
          throw new UsageError('give count (1–100) and ttl_ms (1 s to 7 days)')
        }
        return { data: await pairing.createGroup({ count, ttlMs }), status: 201 }
      },
    },
    {
      method: 'GET',
      path: '/v1/pair',
      handler: async () => ({ data: pairing.listGroups() }),
    },
    {
      method: 'DELETE',
      path: '/v1/pair/:group',
      handler: async ({ params }) => ({ data: await pairing.revokeGroup(params.group ?? '') }),
    },
  ]
}

/** The client `peerup relay pair` uses. */
export class RelayAdminClient {
  readonly #http: LocalHttpClient

  constructor(dir: string) {
    this.#http = new LocalHttpClient({
      socketPath: path.join(dir, RELAY_ADMIN_FILES.socket),
      cookieFile: path.join(dir, RELAY_ADMIN_FILES.cookie),
      what: 'the relay',
      startHint: 'start it with `peerup relay serve` (group codes are made by the running relay)',
    })
  }

  createGroup(count: number, ttlMs: number): Promise<NewGroup> {
    return this.#http.request<NewGroup>('POST', '/v1/pair', { count, ttl_ms: ttlMs })
  }

  listGroups(): Promise<GroupInfo[]> {
    return this.#http.request<GroupInfo[]>('GET', '/v1/pair')
  }

  /** Revokes a group's unused codes. */
  revokeGroup(id: string): Promise<GroupInfo> {
    return this.#http.request<GroupInfo>('DELETE', `/v1/pair/${encodeURIComponent(id)}`)
  }
}
