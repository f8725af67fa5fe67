/**
 * Every route of the daemon's API under `/v1/`, bound to the schemas of what it takes and what it
 * answers. The server (src/daemon/api.ts) checks every request against its route's `input` and
 * hands the handler the checked value; the client (src/client/local.ts) and the in-process client
 * are typed by the same table, so a route's contract is written exactly once.
 *
 * @packageDocumentation
 */

import { z } from 'zod'
import { peerRef, proxyName, serviceName, text } from './names.ts'
import * as s from './schemas.ts'

/** The `Upgrade` protocol of the dial route: after `101` the socket carries the service's bytes in frames. */
export const DIAL_PROTOCOL = 'peerup-stream'

/** Bumped when a route changes incompatibly. */
export const API_VERSION = 1

export interface RouteSpec {
  method: 'GET' | 'POST' | 'DELETE'
  /** `:name` segments are URL-encoded parameters, part of the input. */
  path: string
  /** Path parameters, query and body together: what the handler receives, checked. */
  input: z.ZodObject
  /** The input keys that travel in the query string; the rest is path parameters and the body. */
  query?: readonly string[]
  /** The answer's `data`. */
  output?: z.ZodType
  /**
   * Lines of an NDJSON answer that streams as things happen. A route with both `output` and
   * `lines` answers with lines when asked with `?stream=true`.
   */
  lines?: z.ZodType
  /** Answered `201 Created`. */
  creates?: boolean
  /** An Upgrade route: after `101` the socket is handed over. */
  upgrade?: string
}

const none = z.object({})

/** `?all=true` as a flag. */
const flag = z
  .union([z.boolean(), z.enum(['true', 'false'])], { error: 'must be true or false' })
  .transform((v) => v === true || v === 'true')

export const ROUTES = {
  status: { method: 'GET', path: '/v1/status', input: none, output: s.statusResponse },
  services: { method: 'GET', path: '/v1/services', input: none, output: z.array(s.serviceState) },
  peers: {
    method: 'GET',
    path: '/v1/peers',
    input: z.object({ all: flag.optional() }),
    query: ['all'],
    output: z.array(s.peerState),
  },
  paths: { method: 'GET', path: '/v1/paths', input: none, output: z.array(s.pathState) },
  authList: { method: 'GET', path: '/v1/auth', input: none, output: z.array(s.authEntry) },
  authAdd: {
    method: 'POST',
    path: '/v1/auth',
    input: s.authAddRequest,
    output: s.authChangeResponse,
    creates: true,
  },
  authRemove: {
    method: 'DELETE',
    path: '/v1/auth/:peer',
    input: z.object({ peer: peerRef }),
    output: s.authChangeResponse,
  },
  ping: { method: 'POST', path: '/v1/ping', input: s.pingRequest, output: s.pingResponse, lines: s.pingLine },
  traceroute: {
    method: 'POST',
    path: '/v1/traceroute',
    input: s.tracerouteRequest,
    output: s.tracerouteResponse,
  },
  resolve: {
    method: 'GET',
    path: '/v1/resolve/:name',
    input: z.object({ name: peerRef }),
    output: s.resolveResponse,
  },
  connectList: { method: 'GET', path: '/v1/connect', input: none, output: z.array(s.proxyState) },
  connectAdd: {
    method: 'POST',
    path: '/v1/connect',
    input: s.connectRequest,
    output: s.proxyState,
    creates: true,
  },
  connectRemove: {
    method: 'DELETE',
    path: '/v1/connect/:id',
    input: z.object({ id: text('a proxy id') }),
    output: s.removedResponse,
  },
  proxyList: { method: 'GET', path: '/v1/proxies', input: none, output: z.array(s.persistentProxyState) },
  proxyAdd: {
    method: 'POST',
    path: '/v1/proxies',
    input: s.proxyAddRequest,
    output: s.persistentProxyState,
    creates: true,
  },
  proxyRemove: {
    method: 'DELETE',
    path: '/v1/proxies/:name',
    input: z.object({ name: proxyName }),
    output: s.removedResponse,
  },
  proxyEnable: {
    method: 'POST',
    path: '/v1/proxies/:name/enable',
    input: z.object({ name: proxyName }),
    output: s.persistentProxyState,
  },
  proxyDisable: {
    method: 'POST',
    path: '/v1/proxies/:name/disable',
    input: z.object({ name: proxyName }),
    output: s.persistentProxyState,
  },
  exposeAdd: {
    method: 'POST',
    path: '/v1/expose',
    input: s.exposeRequest,
    output: s.serviceState,
    creates: true,
  },
  exposeRemove: {
    method: 'DELETE',
    path: '/v1/expose/:name',
    input: z.object({ name: serviceName }),
    output: s.removedResponse,
  },
  shutdown: {
    method: 'POST',
    path: '/v1/shutdown',
    input: none,
    output: z.object({ stopping: z.literal(true) }),
  },
  events: { method: 'GET', path: '/v1/events', input: none, lines: s.daemonEvent },
  invite: { method: 'POST', path: '/v1/invite', input: s.inviteRequest, lines: s.inviteLine },
  dial: {
    method: 'POST',
    path: '/v1/dial',
    input: s.dialRequest,
    query: ['peer', 'service', 'waitMs'],
    upgrade: DIAL_PROTOCOL,
  },
} as const satisfies Record<string, RouteSpec>

export type RouteName = keyof typeof ROUTES

type Spec<K extends RouteName> = (typeof ROUTES)[K]

/** What a caller passes to a route. */
export type Input<K extends RouteName> = z.input<Spec<K>['input']>

/** What a route's handler receives: the input, checked (defaults filled in, names validated). */
export type Checked<K extends RouteName> = z.output<Spec<K>['input']>

/** Routes that answer with `data`. */
export type CallRoute = { [K in RouteName]: Spec<K> extends { output: z.ZodType } ? K : never }[RouteName]

/** Routes that answer with lines. */
export type LinesRoute = { [K in RouteName]: Spec<K> extends { lines: z.ZodType } ? K : never }[RouteName]

/** A route's `data`. */
export type Output<K extends CallRoute> =
  Spec<K> extends { output: infer O extends z.ZodType } ? z.output<O> : never

/** A line of a route that streams. */
export type Line<K extends LinesRoute> =
  Spec<K> extends { lines: infer L extends z.ZodType } ? z.output<L> : never

/** Where a route's input goes on the wire: path, query string and body. */
export function placeInput(
  spec: RouteSpec,
  input: Record<string, unknown>,
): { path: string; query: URLSearchParams; body: Record<string, unknown> | undefined } {
  const rest: Record<string, unknown> = { ...input }
  const path = spec.path.replace(/:(\w+)/g, (_m, key: string) => {
    const value = rest[key]
    delete rest[key]
    return encodeURIComponent(String(value ?? ''))
  })
  const query = new URLSearchParams()
  for (const key of spec.query ?? []) {
    if (rest[key] !== undefined) {
      query.set(key, String(rest[key]))
    }
    delete rest[key]
  }
  const body = spec.method === 'POST' && Object.keys(rest).length > 0 ? rest : undefined
  return { path, query, body }
}
