/**
 * `LocalClient`: typed calls to a running daemon's local API (src/api/), for the CLI. It finds the
 * socket and cookie beside the config file, says "start it with `peerup daemon`" when nothing
 * answers, and warns once when the daemon runs another version than this CLI.
 *
 * @packageDocumentation
 */

import type { Socket } from 'node:net'
import * as path from 'node:path'
import {
  type ApiPath,
  type AuthAddRequest,
  type AuthChangeResponse,
  type AuthEntry,
  type ConnectRequest,
  type DaemonEvent,
  DIAL_PROTOCOL,
  type ExposeRequest,
  type InviteRequest,
  type InviteStreamLine,
  type PathState,
  type PeerState,
  type PingPathChange,
  type PingReply,
  type PingRequest,
  type PingResponse,
  type ProxyState,
  type ResolveResponse,
  ROUTES,
  routeParts,
  type ServiceState,
  type StatusResponse,
  type TracerouteResponse,
} from '../api/index.ts'
import { NODE_FILES } from '../config/paths.ts'
import { VERSION } from '../version.ts'
import { ApiResponseError, DaemonNotRunningError, LocalHttpClient } from './local-http.ts'

export { ApiResponseError, DaemonNotRunningError }

/** A line of a streamed ping (`POST /v1/ping?stream=true`). */
export type PingStreamLine =
  | { type: 'connected'; path: ApiPath; via: string; connectMs: number }
  | { type: 'reply'; reply: PingReply }
  | { type: 'path-changed'; change: PingPathChange }
  | { type: 'done'; report: PingResponse }
  | { type: 'error'; status: number; error: string; hint?: string }

let warnedVersion = false

/** Options of {@link LocalClient}. */
export interface LocalClientOptions {
  /** The node's config file: the socket and cookie live beside it. */
  configFile: string
  /** Where the version-mismatch warning goes (once per process). */
  warn?: (message: string) => void
}

/** The daemon's API, typed. */
export class LocalClient {
  readonly socketPath: string
  readonly #http: LocalHttpClient

  constructor(options: LocalClientOptions) {
    const dir = path.dirname(options.configFile)
    this.socketPath = path.join(dir, NODE_FILES.socket)
    this.#http = new LocalHttpClient({
      socketPath: this.socketPath,
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

  #call<T>(
    name: keyof typeof ROUTES,
    params: Record<string, string> = {},
    body?: unknown,
    signal?: AbortSignal,
    query = '',
  ): Promise<T> {
    const { method, path: pattern } = routeParts(ROUTES[name])
    const p = pattern.replace(/:(\w+)/g, (_m, key: string) => encodeURIComponent(params[key] ?? ''))
    return this.#http.request<T>(method, `${p}${query}`, body, signal === undefined ? {} : { signal })
  }

  status(signal?: AbortSignal): Promise<StatusResponse> {
    return this.#call('status', {}, undefined, signal)
  }

  services(): Promise<ServiceState[]> {
    return this.#call('services')
  }

  peers(all = false): Promise<PeerState[]> {
    return this.#call('peers', {}, undefined, undefined, all ? '?all=true' : '')
  }

  paths(): Promise<PathState[]> {
    return this.#call('paths')
  }

  authList(): Promise<AuthEntry[]> {
    return this.#call('authList')
  }

  authAdd(req: AuthAddRequest): Promise<AuthChangeResponse> {
    return this.#call('authAdd', {}, req)
  }

  authRemove(peer: string): Promise<AuthChangeResponse> {
    return this.#call('authRemove', { peer })
  }

  ping(req: PingRequest, signal?: AbortSignal): Promise<PingResponse> {
    return this.#call('ping', {}, req, signal)
  }

  /** Pings with each reply as it comes; aborting `signal` stops the pings. */
  pingStream(req: PingRequest, signal?: AbortSignal): AsyncGenerator<PingStreamLine> {
    return this.#http.lines<PingStreamLine>(
      'POST',
      `${routeParts(ROUTES.ping).path}?stream=true`,
      req,
      signal,
    )
  }

  traceroute(peer: string, signal?: AbortSignal): Promise<TracerouteResponse> {
    return this.#call('traceroute', {}, { peer }, signal)
  }

  resolve(name: string): Promise<ResolveResponse> {
    return this.#call('resolve', { name })
  }

  connect(req: ConnectRequest): Promise<ProxyState> {
    return this.#call('connectAdd', {}, req)
  }

  proxies(): Promise<ProxyState[]> {
    return this.#call('connectList')
  }

  disconnect(id: string): Promise<{ removed: string }> {
    return this.#call('connectRemove', { id })
  }

  expose(req: ExposeRequest): Promise<ServiceState> {
    return this.#call('exposeAdd', {}, req)
  }

  unexpose(name: string): Promise<{ removed: string }> {
    return this.#call('exposeRemove', { name })
  }

  shutdown(): Promise<{ stopping: true }> {
    return this.#call('shutdown')
  }

  /** The event stream, from a `hello` on; ends when the daemon stops or `signal` fires. */
  events(signal?: AbortSignal): AsyncGenerator<DaemonEvent> {
    return this.#http.lines<DaemonEvent>('GET', routeParts(ROUTES.events).path, undefined, signal)
  }

  /** An invite answered by the daemon's node: the code, progress, then the outcome. */
  invite(req: InviteRequest, signal?: AbortSignal): AsyncGenerator<InviteStreamLine> {
    return this.#http.lines<InviteStreamLine>('POST', routeParts(ROUTES.invite).path, req, signal)
  }

  /** A raw byte stream to a peer's service through the daemon's node. */
  async dial(peer: string, service: string, signal?: AbortSignal): Promise<{ socket: Socket; head: Buffer }> {
    const q = new URLSearchParams({ peer, service })
    return this.#http.upgrade(`${routeParts(ROUTES.dial).path}?${q}`, DIAL_PROTOCOL, signal)
  }
}

/** Whether an error means "no daemon here" (so a command may run its own node instead). */
export function isDaemonAbsent(err: unknown): boolean {
  return err instanceof DaemonNotRunningError
}
