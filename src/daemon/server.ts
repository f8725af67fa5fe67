/**
 * The daemon's local API: the route table of `src/api/` served on `peerup.sock`. Handlers are thin:
 * each calls the node runtime, the proxy manager or the event hub and returns API types.
 *
 * @packageDocumentation
 */

import type * as http from 'node:http'
import type { Duplex } from 'node:stream'
import type { PeerId } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import {
  type AuthChangeResponse,
  type AuthEntry,
  type ConnectRequest,
  type DaemonEvent,
  DIAL_PROTOCOL,
  type PeerState,
  type PingResponse,
  type ResolveResponse,
  ROUTES,
  routeParts,
  type ServiceState,
  type StatusResponse,
  type TracerouteResponse,
} from '../api/index.ts'
import { addAuthorizedPeer, listAuthorizedPeers, removeAuthorizedPeer } from '../auth/ops.ts'
import { loadNodeConfig, resolveIn } from '../config/load.ts'
import { normaliseLocalAddress, resolvePeer, setPeerName } from '../config/ops.ts'
import { ConflictError } from '../errors.ts'
import { inviteOn, type PairingHost } from '../invite/invite.ts'
import type { Logger } from '../log/index.ts'
import type { Observer } from '../metrics/observer.ts'
import { pingPeer, traceroutePeer } from '../p2p/diagnostics.ts'
import {
  PeerRefusedError,
  PeerUnreachableError,
  RelayRefusedError,
  ServiceRefusedError,
} from '../p2p/errors.ts'
import { bestConnection, classifyConnection } from '../p2p/path.ts'
import type { NodeRuntime } from '../p2p/runtime.ts'
import { framedEnd } from '../pipe/framed.ts'
import { pipe } from '../pipe/pipe.ts'
import { serviceStreamEnd } from '../pipe/stream.ts'
import { ApiError, type Route, type UpgradeRoute } from '../util/local-api.ts'
import { VERSION } from '../version.ts'
import { type DaemonEvents, toApiPath } from './events.ts'
import type { ProxyManager } from './proxies.ts'
import {
  authAddBody,
  connectBody,
  exposeBody,
  inviteBody,
  MAX_API_PINGS,
  parseBody,
  parseParam,
  peerRef,
  pingBody,
  serviceName,
  tracerouteBody,
} from './requests.ts'

export { MAX_API_PINGS }

/** A watcher that lets this much of the event stream pile up is cut off. */
const MAX_EVENT_BACKLOG_BYTES = 1024 * 1024

/** What the routes work with. */
export interface DaemonContext {
  rt: NodeRuntime
  proxies: ProxyManager
  events: DaemonEvents
  log: Logger
  startedAt: Date
  /** Starts the orderly shutdown (the same as SIGTERM). */
  shutdown: () => void
  /** Metrics and audit. */
  observer: Observer
}

/** Maps errors of the network layer to the statuses of the contract. */
export function statusOf(err: unknown): number | undefined {
  if (
    err instanceof PeerUnreachableError ||
    err instanceof PeerRefusedError ||
    err instanceof RelayRefusedError
  ) {
    return 502
  }
  if (err instanceof ServiceRefusedError) {
    return 404
  }
  return undefined
}

function route<T>(name: keyof typeof ROUTES, handler: Route['handler'], text?: (data: T) => string): Route {
  const { method, path } = routeParts(ROUTES[name])
  return text === undefined
    ? { method, path, handler }
    : { method, path, handler, text: text as (d: never) => string }
}

/** Writes NDJSON lines to `res` as they come; the stream ends when the client goes away. */
function ndjson(res: http.ServerResponse): { write(line: unknown): boolean; end(): void } {
  res.writeHead(200, { 'Content-Type': 'application/x-ndjson', 'Cache-Control': 'no-store' })
  res.flushHeaders()
  return {
    write: (line) => {
      if (res.writableLength > MAX_EVENT_BACKLOG_BYTES) {
        res.destroy()
        return false
      }
      return res.write(`${JSON.stringify(line)}\n`)
    },
    end: () => res.end(),
  }
}

/** The daemon's routes and its upgrade route, working on `ctx`. */
export function daemonRoutes(ctx: DaemonContext): { routes: Route[]; upgrades: UpgradeRoute[] } {
  const { rt, proxies, events } = ctx
  const dir = rt.dir
  const keysFile = resolveIn(dir, rt.config.security.authorized_keys_file)
  const idOf = (peer: string): string => resolvePeer(rt.config, peer).peerId
  // `names:` is a plain object: a name such as `constructor` must not find Object.prototype's.
  const named = (name: string): string | undefined =>
    Object.hasOwn(rt.config.names, name) ? rt.config.names[name] : undefined
  let inviting = false
  const nameOf = (id: string): string | undefined =>
    Object.entries(rt.config.names).find(([, v]) => v === id)?.[0]

  const agentOf = async (peer: PeerId): Promise<string | undefined> => {
    try {
      const p = await rt.node.peerStore.get(peer)
      const raw = p.metadata.get('AgentVersion')
      return raw === undefined ? undefined : new TextDecoder().decode(raw)
    } catch {
      return undefined
    }
  }

  const status = (): StatusResponse => ({
    version: VERSION,
    apiVersion: 1,
    pid: process.pid,
    peerId: rt.peerId,
    network: rt.config.discovery.network,
    startedAt: ctx.startedAt.toISOString(),
    uptimeSeconds: Math.floor((Date.now() - ctx.startedAt.getTime()) / 1000),
    configFile: rt.configFile,
    listenAddresses: rt.node.getMultiaddrs().map(String),
    relays: rt.supervisor.status().map((r) => ({ ...r, since: new Date(r.since).toISOString() })),
    services: services(),
    connectedPeers: new Set(rt.node.getConnections().map((c) => c.remotePeer.toString())).size,
    proxies: proxies.size,
  })

  const services = (): ServiceState[] =>
    rt.services.list().map((s) => ({
      name: s.name,
      protocol: s.protocol,
      localAddress: s.localAddress,
      allowedPeers: s.allowedPeers,
      source: s.source,
      activeConnections: s.activeConnections,
    }))

  const routes: Route[] = [
    route<StatusResponse>(
      'status',
      async () => ({ data: status() }),
      (s) =>
        [
          `peerup daemon ${s.version}, pid ${s.pid}, up ${s.uptimeSeconds} s`,
          `peer id   ${s.peerId}`,
          `relays    ${s.relays.map((r) => `${r.peerId.slice(-8)} ${r.reserved ? 'reserved' : r.connected ? 'connected' : 'down'}`).join(', ') || 'none'}`,
          `services  ${s.services.map((v) => v.name).join(', ') || 'none'}`,
          `peers     ${s.connectedPeers} connected, ${s.proxies} proxies`,
        ].join('\n'),
    ),
    route('services', async () => ({ data: services() })),
    route('peers', async (r) => {
      const all = r.query.get('all') === 'true'
      const byPeer = new Map<string, ReturnType<typeof rt.node.getConnections>>()
      for (const c of rt.node.getConnections()) {
        if (c.status === 'open') {
          byPeer.set(c.remotePeer.toString(), [...(byPeer.get(c.remotePeer.toString()) ?? []), c])
        }
      }
      const out: PeerState[] = []
      for (const [id, conns] of byPeer) {
        const best = bestConnection(conns)
        if (best === undefined) {
          continue
        }
        const agent = await agentOf(best.remotePeer)
        if (!all && !(agent?.startsWith('peerup/') === true || agent?.startsWith('relay-server/') === true)) {
          continue
        }
        out.push({
          peerId: id,
          name: nameOf(id),
          agent,
          authorized: rt.authorized.has(id),
          path: toApiPath(classifyConnection(best)),
          connections: conns.length,
          since: new Date(Math.min(...conns.map((c) => c.timeline.open))).toISOString(),
        })
      }
      return { data: out }
    }),
    route('paths', async () => ({ data: events.paths() })),
    route('authList', async () => {
      const peers = await listAuthorizedPeers(keysFile, rt.config.names)
      const data: AuthEntry[] = peers.map((p) => ({
        peerId: p.peerId,
        name: p.name,
        comment: p.comment,
        verified: p.verified,
        expires: p.expires,
        expired: p.expired,
        group: p.group,
      }))
      return { data }
    }),
    route('authAdd', async (r) => {
      const { peer, comment, name } = parseBody(authAddBody, r.body)
      const id = idOf(peer)
      if (name !== undefined) {
        const taken = named(name)
        if (taken !== undefined && taken !== id) {
          throw new ConflictError(`the name ${name} is already used for ${taken}`)
        }
      }
      const added = await addAuthorizedPeer(keysFile, id, {
        ...(comment === undefined ? {} : { comment }),
      })
      if (name !== undefined) {
        await setPeerName(rt.configFile, name, added.peerId)
        rt.config.names = { ...rt.config.names, [name]: added.peerId }
      }
      await rt.reloadAuthorized()
      const data: AuthChangeResponse = { peerId: added.peerId, closedConnections: 0 }
      return { data, status: 201 }
    }),
    route('authRemove', async (r) => {
      const id = idOf(parseParam(peerRef, 'peer', r.params.peer))
      const removed = await removeAuthorizedPeer(keysFile, id)
      const open = rt.node.getConnections().filter((c) => c.remotePeer.toString() === removed.peerId).length
      await rt.reloadAuthorized()
      // The reload's listener hangs up too, without waiting; here the answer waits until they are closed.
      await rt.node.hangUp(peerIdFromString(removed.peerId)).catch(() => {})
      const data: AuthChangeResponse = { peerId: removed.peerId, closedConnections: open }
      return { data }
    }),
    route('ping', async (r) => {
      const body = parseBody(pingBody, r.body)
      const { peer, deadlineMs } = body
      const count = body.count ?? 4
      const intervalMs = body.intervalMs ?? 1000
      const extra = {
        ...(body.untilDirect === true ? { untilDirect: true } : {}),
        ...(deadlineMs === undefined ? {} : { deadlineMs }),
      }
      idOf(peer)
      if (r.query.get('stream') === 'true') {
        // Each reply as it comes: the CLI prints them live; closing the request stops the pings.
        return {
          stream: (res) => {
            const out = ndjson(res)
            pingPeer(rt, peer, {
              count,
              intervalMs,
              ...extra,
              signal: r.signal,
              onPathChange: (c) =>
                out.write({
                  type: 'path-changed',
                  change: { ...c, from: toApiPath(c.from), to: toApiPath(c.to) },
                }),
              onConnected: (path, via, ms) =>
                out.write({ type: 'connected', path: toApiPath(path), via, connectMs: ms }),
              onReply: (reply) =>
                out.write({ type: 'reply', reply: { ...reply, path: toApiPath(reply.path) } }),
            })
              .then((report) => out.write({ type: 'done', report: pingResponse(report) }))
              .catch((err: unknown) =>
                out.write({
                  type: 'error',
                  status: statusOf(err) ?? 500,
                  error: (err as Error).message,
                  hint: (err as { hint?: string }).hint,
                }),
              )
              .finally(() => out.end())
          },
        }
      }
      if (count === 0 && body.untilDirect !== true) {
        throw new ApiError(400, 'count 0 (until stopped) needs ?stream=true')
      }
      return {
        data: pingResponse(await pingPeer(rt, peer, { count, intervalMs, ...extra, signal: r.signal })),
      }
    }),
    route<TracerouteResponse>(
      'traceroute',
      async (r) => {
        const { peer } = parseBody(tracerouteBody, r.body)
        idOf(peer)
        const report = await traceroutePeer(rt, peer, r.signal)
        const data: TracerouteResponse = { ...report, path: toApiPath(report.path) }
        return { data }
      },
      (t) =>
        `traceroute to ${t.peer}: ${t.summary}\n${t.hops.map((h) => `${h.hop}  ${h.role}  ${h.peerId}  ${h.rttMs === undefined ? h.error : `${h.rttMs.toFixed(1)} ms`}`).join('\n')}`,
    ),
    route('resolve', async (r) => {
      const data: ResolveResponse = resolvePeer(rt.config, parseParam(peerRef, 'name', r.params.name))
      return { data }
    }),
    route('connectList', async () => ({ data: proxies.list() })),
    route('connectAdd', async (r) => {
      const req: ConnectRequest = parseBody(connectBody, r.body)
      idOf(req.peer)
      return { data: await proxies.add(req, r.signal), status: 201 }
    }),
    route('connectRemove', async (r) => {
      await proxies.remove(r.params.id ?? '')
      return { data: { removed: r.params.id } }
    }),
    route('exposeAdd', async (r) => {
      const body = parseBody(exposeBody, r.body)
      const name = body.name
      const localAddress = normaliseLocalAddress(body.localAddress)
      const allowed = body.allowedPeers ?? []
      const svc = await rt.services.expose({
        name,
        localAddress,
        allowedPeers: allowed.map(idOf),
        source: 'runtime',
      })
      return { data: svc, status: 201 }
    }),
    route('exposeRemove', async (r) => {
      await rt.services.unexpose(parseParam(serviceName, 'name', r.params.name))
      return { data: { removed: r.params.name } }
    }),
    route('invite', async (r) => {
      const { ttlMs, name } = parseBody(inviteBody, r.body)
      if (inviting) {
        throw new ConflictError('an invite is already waiting on this daemon', {
          hint: 'finish or cancel it (Ctrl+C in the terminal of that `peerup invite`) first',
        })
      }
      inviting = true
      return {
        stream: (res) => {
          const out = ndjson(res)
          const host: PairingHost = {
            node: rt.node,
            config: rt.config,
            configFile: rt.configFile,
            peerId: rt.peerId,
            authorizedKeysFile: keysFile,
            authorized: rt.authorized,
            supervisor: rt.supervisor,
            admitJoiners: () => rt.admitJoiners(),
            relayConnection: (relayPeerId) =>
              rt.node
                .getConnections()
                .find(
                  (c) =>
                    c.remotePeer.toString() === relayPeerId && c.status === 'open' && c.limits === undefined,
                ),
          }
          inviteOn(host, {
            log: ctx.log.child('invite'),
            name,
            ttlMs,
            signal: r.signal,
            observer: ctx.observer,
            onProgress: (message) => out.write({ type: 'progress', message }),
            // The code goes to the client that asked, over the cookie-guarded socket, and nowhere else.
            onCode: (code, decoded) =>
              out.write({ type: 'code', code, expires: decoded.expires.toISOString() }),
          })
            .then(async (result) => {
              // The pairing wrote names: into config.yaml: the daemon knows them before it answers.
              rt.config.names = (await loadNodeConfig(rt.configFile)).config.names
              out.write({ type: 'paired', result })
            })
            .catch((err: unknown) =>
              out.write({
                type: 'error',
                status: statusOf(err) ?? (err instanceof ApiError ? err.status : 409),
                error: (err as Error).message,
                ...((err as { hint?: string }).hint === undefined
                  ? {}
                  : { hint: (err as { hint?: string }).hint }),
              }),
            )
            .finally(() => {
              inviting = false
              out.end()
            })
        },
      }
    }),
    route('shutdown', async () => {
      // After the answer is out: the client learns the daemon is stopping, then the socket goes.
      setImmediate(ctx.shutdown)
      return { data: { stopping: true } }
    }),
    route('events', async (r) => ({
      stream: (res) => {
        const out = ndjson(res)
        const hello: DaemonEvent = {
          type: 'hello',
          time: new Date().toISOString(),
          version: VERSION,
          peerId: rt.peerId,
        }
        out.write(hello)
        const off = events.subscribe((e) => {
          out.write(e)
          if (e.type === 'stopping') {
            out.end()
          }
        })
        r.signal.addEventListener('abort', off, { once: true })
        res.once('close', off)
      },
    })),
  ]

  const dial: UpgradeRoute = {
    path: routeParts(ROUTES.dial).path,
    protocol: DIAL_PROTOCOL,
    handler: async (r, socket: Duplex, head: Buffer) => {
      // Query parameters, checked as the same fields of a body would be (?peer=…&service=…).
      const peer = parseParam(peerRef, 'peer', r.query.get('peer') ?? undefined)
      const service = parseParam(serviceName, 'service', r.query.get('service') ?? undefined)
      idOf(peer)
      const { stream } = await rt.openService(peer, service, { signal: r.signal })
      socket.write(
        'HTTP/1.1 101 Switching Protocols\r\nUpgrade: peerup-stream\r\nConnection: Upgrade\r\n\r\n',
      )
      // Framed (src/pipe/framed.ts): a Unix socket cannot tell a reset from a clean end.
      ctx.observer.proxyOpened(service, 'outbound')
      const result = await pipe(framedEnd(socket, head), serviceStreamEnd(stream), {
        log: ctx.log.child('dial'),
        onBytes: (d, n) => ctx.observer.proxyBytes(service, d, n),
      }).finally(() => ctx.observer.proxyClosed(service, 'outbound'))
      ctx.log.debug('dial stream closed', {
        peer,
        service,
        bytes_in: result.bytesIn,
        bytes_out: result.bytesOut,
        reset: result.reset,
      })
    },
  }

  return { routes, upgrades: [dial] }
}

function pingResponse(report: Awaited<ReturnType<typeof pingPeer>>): PingResponse {
  return {
    ...report,
    path: toApiPath(report.path),
    replies: report.replies.map((r) => ({ ...r, path: toApiPath(r.path) })),
  }
}
