/**
 * The daemon's API over HTTP: each route of the contract (src/api/routes.ts) served from its
 * handler (src/daemon/routes/): the request checked against the route's `input` schema (a 400
 * that names the field otherwise), the answer as `{"data": …}`, as NDJSON lines for routes that
 * go on, as text for `Accept: text/plain` where the contract has a text form, and the dial route
 * as an upgraded socket carrying a service's bytes in frames.
 *
 * @packageDocumentation
 */

import { once } from 'node:events'
import type * as http from 'node:http'
import type { Duplex } from 'node:stream'
import {
  connectionsText,
  DIAL_PROTOCOL,
  NETWORK_PARAM,
  networkName,
  pathsText,
  peersText,
  proxiesText,
  ROUTES,
  type RouteName,
  type RouteSpec,
  servicesText,
  statusText,
  tracerouteText,
} from '../api/index.ts'
import { UsageError } from '../errors.ts'
import { framedEnd } from '../pipe/framed.ts'
import { pipe } from '../pipe/pipe.ts'
import {
  type ApiRequest,
  errorFields,
  errorStatus,
  type Route,
  type UpgradeRoute,
} from '../util/local-api.ts'
import {
  checkInput,
  type DaemonContext,
  type HandlerContext,
  type Handlers,
  handlersFor,
  reportOf,
  statusOf,
} from './routes/index.ts'

export type { DaemonContext } from './routes/index.ts'
export { statusOf } from './routes/index.ts'

/**
 * The network a request is about (its `?network=`, or undefined without one): its context and
 * handlers, or a not-found error naming where the networks are listed.
 */
export type NetworkSelect = (
  network: string | undefined,
) => Promise<{ ctx: DaemonContext; handlers: Handlers }>

/** The `?network=` of a request, checked (a 400 naming the rule otherwise). */
function selectorOf(query: URLSearchParams): string | undefined {
  const value = query.get(NETWORK_PARAM)
  if (value === null) {
    return undefined
  }
  const checked = networkName.safeParse(value)
  if (!checked.success) {
    throw new UsageError(`${NETWORK_PARAM}: ${checked.error.issues[0]?.message ?? 'invalid'}`)
  }
  return checked.data
}

/** Routes that read as text with `Accept: text/plain`. */
const TEXT: Partial<Record<RouteName, (data: never) => string>> = {
  status: statusText,
  peers: peersText,
  paths: pathsText,
  services: servicesText,
  connectList: proxiesText,
  traceroute: tracerouteText,
  connections: connectionsText,
}

/** A request's input: its body, the query keys the route takes, and its path parameters, checked. */
function checkedInput(spec: RouteSpec, r: Pick<ApiRequest, 'body' | 'params' | 'query'>): unknown {
  if (r.body !== undefined && (typeof r.body !== 'object' || r.body === null || Array.isArray(r.body))) {
    throw new UsageError('the request body must be a JSON object')
  }
  const raw: Record<string, unknown> = { ...(r.body as object | undefined) }
  for (const key of spec.query ?? []) {
    const value = r.query.get(key)
    if (value !== null) {
      raw[key] = value
    }
  }
  Object.assign(raw, r.params)
  return checkInput(spec, raw)
}

/** Writes `first` and the rest of `lines` as NDJSON, waiting when the client reads slowly. */
async function writeLines(
  res: http.ServerResponse,
  first: unknown,
  lines: AsyncIterator<unknown>,
): Promise<void> {
  res.writeHead(200, { 'Content-Type': 'application/x-ndjson', 'Cache-Control': 'no-store' })
  const write = async (line: unknown): Promise<void> => {
    if (!res.write(`${JSON.stringify(line)}\n`) && !res.destroyed) {
      await Promise.race([once(res, 'drain'), once(res, 'close')])
    }
  }
  try {
    await write(first)
    for (let next = await lines.next(); next.done !== true && !res.destroyed; next = await lines.next()) {
      await write(next.value)
    }
  } catch (err) {
    // Headers are out: the failure travels as the last line.
    const status = errorStatus(err, statusOf)
    await write({ type: 'error', status, error: (err as Error).message, ...errorFields(err) }).catch(() => {})
  } finally {
    await lines.return?.()
    res.end()
  }
}

/** One route of the contract served from its handler. */
function httpRoute(name: RouteName, spec: RouteSpec, select: NetworkSelect): Route {
  const text = TEXT[name]
  return {
    method: spec.method,
    path: spec.path,
    ...(text === undefined ? {} : { text }),
    handler: async (r) => {
      const streaming =
        spec.lines !== undefined && (spec.output === undefined || r.query.get('stream') === 'true')
      const context: HandlerContext = { signal: r.signal, streaming }
      const input = checkedInput(spec, r)
      const handler = (await select(selectorOf(r.query))).handlers[name]
      const answer = await (handler as (input: unknown, r: HandlerContext) => unknown)(input, context)
      if (spec.lines === undefined) {
        return { data: await answer, status: spec.creates === true ? 201 : 200 }
      }
      if (!streaming) {
        // A report the route also streams: its last line carries it.
        return { data: await reportOf(answer as AsyncIterable<unknown>) }
      }
      const lines = (answer as AsyncIterable<unknown>)[Symbol.asyncIterator]()
      // The first line, or a failure before it, decides the status.
      const first = await lines.next()
      if (first.done === true) {
        return { stream: (res) => res.writeHead(200, { 'Content-Type': 'application/x-ndjson' }).end() }
      }
      return { stream: (res) => void writeLines(res, first.value, lines) }
    },
  }
}

/** The dial route: a service stream, then the socket upgraded and piped to it in frames. */
function dialRoute(select: NetworkSelect): UpgradeRoute {
  return {
    path: ROUTES.dial.path,
    protocol: DIAL_PROTOCOL,
    handler: async (r, socket: Duplex, head: Buffer) => {
      const input = checkedInput(ROUTES.dial, { ...r, body: undefined }) as Parameters<Handlers['dial']>[0]
      const { ctx, handlers } = await select(selectorOf(r.query))
      const dial = handlers.dial
      const end = await dial(input, { signal: r.signal, streaming: false })
      const { service, peer } = input
      socket.write(
        `HTTP/1.1 101 Switching Protocols\r\nUpgrade: ${DIAL_PROTOCOL}\r\nConnection: Upgrade\r\n\r\n`,
      )
      // Framed (src/pipe/framed.ts): a Unix socket cannot tell a reset from a clean end.
      ctx.observer.proxyOpened(service, 'outbound')
      const tracked = ctx.rt.trackOutbound(end, 'stdio')
      const result = await pipe(framedEnd(socket, head), end, {
        log: ctx.log.child('dial'),
        ...(tracked === undefined ? {} : { meter: tracked }),
      }).finally(() => ctx.observer.proxyClosed(service, 'outbound'))
      tracked?.done(result)
      ctx.log.debug('dial stream closed', {
        peer,
        service,
        bytes_in: result.bytesIn,
        bytes_out: result.bytesOut,
        reset: result.reset,
      })
    },
  }
}

/** The daemon's routes and its upgrade route, each working on the network `select` finds for a request. */
export function daemonRoutes(select: NetworkSelect): { routes: Route[]; upgrades: UpgradeRoute[] } {
  const routes = (Object.keys(ROUTES) as RouteName[])
    .filter((name) => name !== 'dial')
    .map((name) => httpRoute(name, ROUTES[name], select))
  return { routes, upgrades: [dialRoute(select)] }
}

/** A {@link NetworkSelect} of one network, `ctx`, whatever a request asks for. */
export function oneNetwork(ctx: DaemonContext): NetworkSelect {
  const chosen = { ctx, handlers: handlersFor(ctx) }
  return async () => chosen
}
