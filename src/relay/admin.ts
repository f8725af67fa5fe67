/**
 * The relay's admin socket: `relay.sock` in the relay's directory (0600 in a 0700 directory),
 * guarded by a cookie in `.relay-cookie` exactly as the daemon's local API is (docs/decisions/0000-inherited.md, the
 * same building blocks). `peerup relay pair` talks to it; nothing on the network can.
 *
 * Routes: `POST /v1/pair` `{count, ttl_ms}` → a new group and its codes (shown once);
 * `GET /v1/pair` → the groups; `DELETE /v1/pair/{group}` → revoke a group's unused codes.
 *
 * @packageDocumentation
 */

import * as path from 'node:path'
import { UsageError } from '../errors.ts'
import type { Logger } from '../log/index.ts'
import { removeCookie, writeCookie } from '../util/cookie.ts'
import { createLocalApiServer } from '../util/local-api.ts'
import { LocalHttpClient } from '../util/local-http.ts'
import { listenOnSocket } from '../util/socket.ts'
import { VERSION } from '../version.ts'
import type { GroupInfo, NewGroup, RelayPairing } from './pairing.ts'

/** Files of the admin socket, in the relay's directory. */
export const RELAY_ADMIN_FILES = { socket: 'relay.sock', cookie: '.relay-cookie' } as const

/** Longest group lifetime `relay pair` accepts. */
export const MAX_GROUP_TTL_MS = 7 * 24 * 3_600_000

/** A running admin socket. */
export interface RelayAdmin {
  socketPath: string
  close(): Promise<void>
}

/** Starts the admin socket of a running relay. */
export async function startRelayAdmin(options: {
  dir: string
  pairing: RelayPairing
  log: Logger
}): Promise<RelayAdmin> {
  const socketPath = path.join(options.dir, RELAY_ADMIN_FILES.socket)
  const cookieFile = path.join(options.dir, RELAY_ADMIN_FILES.cookie)
  let cookie: string | undefined
  const server = createLocalApiServer({
    version: VERSION,
    cookieFileName: RELAY_ADMIN_FILES.cookie,
    cookie: () => cookie,
    onAccess: (r) =>
      options.log.debug('admin request', { method: r.method, route: r.route, status: r.status }),
    routes: [
      {
        method: 'POST',
        path: '/v1/pair',
        handler: async ({ body }) => {
          const b = (body ?? {}) as { count?: unknown; ttl_ms?: unknown }
          const count = b.count
          const ttlMs = b.ttl_ms
          if (
            typeof count !== 'number' ||
            typeof ttlMs !== 'number' ||
            ttlMs < 1000 ||
            ttlMs > MAX_GROUP_TTL_MS
          ) {
            throw new UsageError('give count (1–100) and ttl_ms (1 s to 7 days)')
          }
          const created: NewGroup = await options.pairing.createGroup({ count, ttlMs })
          return { data: created, status: 201 }
        },
      },
      {
        method: 'GET',
        path: '/v1/pair',
        handler: async () => ({ data: options.pairing.listGroups() }),
      },
      {
        method: 'DELETE',
        path: '/v1/pair/:group',
        handler: async ({ params }) => ({ data: await options.pairing.revokeGroup(params.group ?? '') }),
      },
    ],
  })
  const close = await listenOnSocket(server, socketPath, { what: 'a relay' })
  // The cookie is written only once the socket is secured (docs/decisions/0000-inherited.md), and rotated every start.
  cookie = await writeCookie(cookieFile)
  return {
    socketPath,
    close: async () => {
      cookie = undefined
      await removeCookie(cookieFile)
      await close()
    },
  }
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

  /** Creates a group of `count` single-use codes. */
  createGroup(count: number, ttlMs: number): Promise<NewGroup> {
    return this.#http.request<NewGroup>('POST', '/v1/pair', { count, ttl_ms: ttlMs })
  }

  /** Lists the groups. */
  listGroups(): Promise<GroupInfo[]> {
    return this.#http.request<GroupInfo[]>('GET', '/v1/pair')
  }

  /** Revokes a group's unused codes. */
  revokeGroup(id: string): Promise<GroupInfo> {
    return this.#http.request<GroupInfo>('DELETE', `/v1/pair/${encodeURIComponent(id)}`)
  }
}
