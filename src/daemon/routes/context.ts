/**
 * What the daemon's route handlers work with, and their types. A handler takes its route's checked
 * input (src/api/routes.ts) and answers with the route's output, or with its lines as an async
 * iterable; the HTTP server (src/daemon/server.ts) and the in-process client
 * (src/daemon/in-process.ts) both call the same handlers.
 *
 * @packageDocumentation
 */

import type { z } from 'zod'
import type {
  CallRoute,
  Checked,
  Line,
  LinesRoute,
  NetworkState,
  Output,
  RouteName,
  RouteSpec,
} from '../../api/index.ts'
import { resolvePeer } from '../../config/ops.ts'
import { PeerupError, UsageError } from '../../errors.ts'
import type { Logger } from '../../log/index.ts'
import type { Observer } from '../../metrics/observer.ts'
import {
  PeerRefusedError,
  PeerUnreachableError,
  RelayRefusedError,
  ServiceRefusedError,
} from '../../p2p/errors.ts'
import type { NodeRuntime } from '../../p2p/runtime.ts'
import type { ByteEnd } from '../../pipe/end.ts'
import type { DaemonEvents } from '../events.ts'
import type { PersistentProxies } from '../persistent-proxies.ts'
import type { ProxyManager } from '../proxies.ts'

/** What the routes work with. */
export interface DaemonContext {
  rt: NodeRuntime
  proxies: ProxyManager
  /** The proxies of config.yaml; only the daemon runs them (absent in a one-shot command's node). */
  persistentProxies?: PersistentProxies | undefined
  events: DaemonEvents
  log: Logger
  startedAt: Date
  /** Starts the orderly shutdown (the same as SIGTERM). */
  shutdown: () => void
  /** Metrics and audit. */
  observer: Observer
  /** The web dashboard, which makes login links (absent in a one-shot command's node). */
  ui?: { newLogin(): { url: string; expires: string } } | undefined
  /** The daemon's networks (absent in a one-shot command's node): see src/daemon/networks.ts. */
  networks?: NetworksControl | undefined
  /** This network's name in the daemon (`default` for an empty `discovery.network`). */
  networkName?: string | undefined
}

/** What the routes of `/v1/networks` do with the daemon's networks. */
export interface NetworksControl {
  list(): Promise<NetworkState[]>
  /** Starts a network whose directory exists; the others are not touched. */
  startNetwork(name: string): Promise<NetworkState>
  /** Stops a running network (its node, and so its connections, only). */
  stopNetwork(name: string): Promise<void>
}

/** What a handler knows of the request besides its input. */
export interface HandlerContext {
  /** Aborted when the client goes away. */
  signal: AbortSignal
  /** The caller asked for lines (`?stream=true`) on a route that answers either way. */
  streaming: boolean
}

/** One handler per route; the dial route's opens a service stream, for the caller to pipe. */
export type Handlers = {
  [K in RouteName]: K extends LinesRoute
    ? (input: Checked<K>, r: HandlerContext) => AsyncIterable<Line<K>>
    : K extends CallRoute
      ? (input: Checked<K>, r: HandlerContext) => Promise<Output<K>>
      : (input: Checked<K>, r: HandlerContext) => Promise<ByteEnd>
}

const NETWORK_STATUS: Array<[new (message: string) => Error, number]> = [
  [PeerUnreachableError, 502],
  [PeerRefusedError, 502],
  [RelayRefusedError, 502],
  [ServiceRefusedError, 404],
]

/** Maps errors of the network layer to the statuses of the contract. */
export function statusOf(err: unknown): number | undefined {
  return NETWORK_STATUS.find(([type]) => err instanceof type)?.[1]
}

/** The peer id a name or peer id stands for; an unknown name is a 404, a bad id a 400. */
export function peerIdOf(ctx: DaemonContext, peer: string): string {
  return resolvePeer(ctx.rt.config, peer).peerId
}

/** The daemon's persistent proxies, or an error saying they need the daemon. */
export function persistentProxiesOf(ctx: DaemonContext): PersistentProxies {
  if (ctx.persistentProxies === undefined) {
    throw new PeerupError('the proxies of config.yaml are run by the daemon', {
      hint: 'start it with `peerup daemon`',
    })
  }
  return ctx.persistentProxies
}

/** The daemon's networks, or an error saying they need the daemon. */
export function networksOf(ctx: DaemonContext): NetworksControl {
  if (ctx.networks === undefined) {
    throw new PeerupError('several networks are run by the daemon', {
      hint: 'start it with `peerup daemon`',
    })
  }
  return ctx.networks
}

/** The first problem zod found, as a usage error that names the field (`allowedPeers[2]: …`). */
function refusal(error: z.ZodError): UsageError {
  const issue = error.issues[0]
  if (issue === undefined || issue.path.length === 0) {
    return new UsageError('the request body must be a JSON object')
  }
  const field = issue.path
    .map((p, i) => (typeof p === 'number' ? `[${p}]` : `${i === 0 ? '' : '.'}${String(p)}`))
    .join('')
  return new UsageError(`${field}: ${issue.message}`)
}

/** A route's input checked against its schema, or a usage error (400 over HTTP) naming the field. */
export function checkInput(spec: RouteSpec, raw: unknown): unknown {
  const result = spec.input.safeParse(raw)
  if (!result.success) {
    throw refusal(result.error)
  }
  return result.data
}

/** The report of a route that streams lines and ends with `{type: 'done', report}` (ping). */
export async function reportOf(lines: AsyncIterable<unknown>): Promise<unknown> {
  for await (const line of lines) {
    if ((line as { type?: string }).type === 'done') {
      return (line as { report: unknown }).report
    }
  }
  return undefined
}
