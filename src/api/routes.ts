/**
 * Every route of the daemon's API under `/v1/`, bound to the schemas of what it takes and what it
 * answers. The server (src/daemon/api.ts) checks every request against its route's `input` and
 * hands the handler the checked value; the client (src/client/local.ts) and the in-process client
 * are typed by the same table, so a route's contract is written exactly once.
 *
 * @packageDocumentation
 */

import { z } from 'zod'
import { connectionsResponse } from './connections.ts'
import { networkName, peerRef, proxyName, serviceName, text } from './names.ts'
import * as s from './schemas.ts'

/** The `Upgrade` protocol of the dial route: after `101` the socket carries the service's bytes in frames. */
export const DIAL_PROTOCOL = 'peerup-stream'

/**
 * The query parameter every route takes to say which of the daemon's networks it is about
 * (docs/local-api.md); without it, the one `peerup network use` chose, else the main one.
 */
export const NETWORK_PARAM = 'network'

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

/** A route on `method path` that takes `input` and answers with `output` as its `data`. */
function route<M extends RouteSpec['method'], I extends z.ZodObject, O extends z.ZodType>(
  method: M,
  path: string,
  input: I,
  output: O,
) {
  return { method, path, input, output }
}

const byProxy = z.object({ name: proxyName })

/** Every route, by name. */
export const ROUTES = {
  status: route('GET', '/v1/status', none, s.statusResponse),
  services: route('GET', '/v1/services', none, z.array(s.serviceState)),
  peers: {
    ...route('GET', '/v1/peers', z.object({ all: flag.optional() }), z.array(s.peerState)),
    query: ['all'],
  },
  paths: route('GET', '/v1/paths', none, z.array(s.pathState)),
  connections: route('GET', '/v1/connections', none, connectionsResponse),
  authList: route('GET', '/v1/auth', none, z.array(s.authEntry)),
  authAdd: { ...route('POST', '/v1/auth', s.authAddRequest, s.authChangeResponse), creates: true },
  authRemove: route('DELETE', '/v1/auth/:peer', z.object({ peer: peerRef }), s.authChangeResponse),
  ping: { ...route('POST', '/v1/ping', s.pingRequest, s.pingResponse), lines: s.pingLine },
  traceroute: route('POST', '/v1/traceroute', s.tracerouteRequest, s.tracerouteResponse),
  resolve: route('GET', '/v1/resolve/:name', z.object({ name: peerRef }), s.resolveResponse),
  connectList: route('GET', '/v1/connect', none, z.array(s.proxyState)),
  connectAdd: { ...route('POST', '/v1/connect', s.connectRequest, s.proxyState), creates: true },
  connectRemove: route('DELETE', '/v1/connect/:id', z.object({ id: text('a proxy id') }), s.removedResponse),
  proxyList: route('GET', '/v1/proxies', none, z.array(s.persistentProxyState)),
  proxyAdd: { ...route('POST', '/v1/proxies', s.proxyAddRequest, s.persistentProxyState), creates: true },
  proxyRemove: route('DELETE', '/v1/proxies/:name', byProxy, s.removedResponse),
  proxyEnable: route('POST', '/v1/proxies/:name/enable', byProxy, s.persistentProxyState),
  proxyDisable: route('POST', '/v1/proxies/:name/disable', byProxy, s.persistentProxyState),
  exposeAdd: { ...route('POST', '/v1/expose', s.exposeRequest, s.serviceState), creates: true },
  exposeRemove: route('DELETE', '/v1/expose/:name', z.object({ name: serviceName }), s.removedResponse),
  networkList: route('GET', '/v1/networks', none, z.array(s.networkState)),
  networkAdd: { ...route('POST', '/v1/networks', s.networkRequest, s.networkState), creates: true },
  networkRemove: route('DELETE', '/v1/networks/:name', z.object({ name: networkName }), s.removedResponse),
  uiLogin: route('POST', '/v1/ui/login', none, s.uiLoginResponse),
  shutdown: route('POST', '/v1/shutdown', none, z.object({ stopping: z.literal(true) })),
  events: { method: 'GET', path: '/v1/events', input: none, lines: s.daemonEvent },
  invite: { method: 'POST', path: '/v1/invite', input: s.inviteRequest, lines: s.inviteLine },
  // A proxy listener that lives as long as this request: `peerup proxy PEER SERVICE PORT`.
  connectHold: {
    method: 'POST',
    path: '/v1/connect/hold',
    input: s.connectRequest,
    lines: s.connectHoldLine,
  },
  // A SOCKS5 (and HTTP CONNECT) gateway that lives as long as this request: `peerup socks`.
  socksHold: {
    method: 'POST',
    path: '/v1/socks/hold',
    input: s.socksHoldRequest,
    lines: s.socksHoldLine,
  },
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
