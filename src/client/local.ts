/**
 * `LocalClient`: the CLI's client of a running daemon, over its local API (src/api/). It finds the
 * socket and cookie beside the config file, says "start it with `peerup daemon`" when nothing
 * answers, and warns once when the daemon runs another version than this CLI. Every route is
 * called through the one contract table, so the calls are typed by it.
 *
 * @packageDocumentation
 */

import * as path from 'node:path'
import {
  type CallRoute,
  type Input,
  type Line,
  type LinesRoute,
  NETWORK_PARAM,
  type Output,
  placeInput,
  ROUTES,
  type RouteSpec,
} from '../api/index.ts'
import { NODE_FILES } from '../config/paths.ts'
import type { ByteEnd } from '../pipe/end.ts'
import { framedEnd } from '../pipe/framed.ts'
import { ApiResponseError, DaemonNotRunningError, LocalHttpClient } from '../util/local-http.ts'
import { VERSION } from '../version.ts'
import type { Client, DialOptions } from './client.ts'

export { ApiResponseError, DaemonNotRunningError }

let warnedVersion = false

export interface LocalClientOptions {
  /** The node's config file: the socket and cookie live beside it. */
  configFile: string
  /** Where the version-mismatch warning goes (once per process). */
  warn?: (message: string) => void
  /**
   * The daemon's network every request is about (`?network=`, docs/local-api.md), or how to find
   * it (asked once, at the first request); without one, the daemon's default.
   */
  network?: string | (() => Promise<string | undefined>) | undefined
}

/** The daemon's API, typed by the contract. */
export class LocalClient implements Client {
  readonly #http: LocalHttpClient
  readonly #network: LocalClientOptions['network']
  #resolved: Promise<string | undefined> | undefined

  constructor(options: LocalClientOptions) {
    this.#network = options.network
    const dir = path.dirname(options.configFile)
    this.#http = new LocalHttpClient({
      socketPath: path.join(dir, NODE_FILES.socket),
      cookieFile: path.join(dir, NODE_FILES.cookie),
      what: 'the peerup daemon',
      startHint: 'start it with `peerup daemon`',
      onServerVersion: (v) => {
        if (v !== VERSION && !warnedVersion) {
          warnedVersion = true
          options.warn?.(
            `warning: the daemon runs peerup ${v}, this command is ${VERSION}; restart the daemon after upgrading`,
          )
        }
      },
    })
  }

  /** The network requests are about, found once. */
  network(): Promise<string | undefined> {
    const n = this.#network
    this.#resolved ??= typeof n === 'function' ? n() : Promise.resolve(n)
    return this.#resolved
  }

  async call<K extends CallRoute>(route: K, input: Input<K>, signal?: AbortSignal): Promise<Output<K>> {
    const { method, url, body } = target(ROUTES[route], input, false, await this.network())
    return this.#http.request<Output<K>>(method, url, body, { signal })
  }

  async *lines<K extends LinesRoute>(
    route: K,
    input: Input<K>,
    signal?: AbortSignal,
  ): AsyncGenerator<Line<K>> {
    // A route that answers either way streams when asked to.
    const spec: RouteSpec = ROUTES[route]
    const { method, url, body } = target(spec, input, spec.output !== undefined, await this.network())
    yield* this.#http.lines<Line<K>>(method as 'GET' | 'POST', url, body, signal)
  }

  async dial(
    peer: string,
    service: string,
    signal?: AbortSignal,
    options: DialOptions = {},
  ): Promise<ByteEnd> {
    const { path: p, query } = placeInput(ROUTES.dial, { peer, service, waitMs: options.waitMs })
    const network = await this.network()
    if (network !== undefined) {
      query.set(NETWORK_PARAM, network)
    }
    const { socket, head } = await this.#http.upgrade(`${p}?${query}`, ROUTES.dial.upgrade, signal)
    return framedEnd(socket, head)
  }

  /** Nothing to release: every call is its own request. */
  async close(): Promise<void> {}
}

/** The method, the path with its query, and the body of a request to the route `spec` with `input`. */
function target(spec: RouteSpec, input: unknown, stream: boolean, network: string | undefined) {
  const { path: p, query, body } = placeInput(spec, input as Record<string, unknown>)
  if (network !== undefined) {
    query.set(NETWORK_PARAM, network)
  }
  if (stream) {
    query.set('stream', 'true')
  }
  return { method: spec.method, url: query.size === 0 ? p : `${p}?${query}`, body }
}
