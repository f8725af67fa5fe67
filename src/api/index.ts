/**
 * The daemon's wire contract: every route under `/v1/` on `peerup.sock`, with its request and
 * response types. The CLI (src/client/local.ts) and the daemon (src/daemon/server.ts) both use
 * these types and nothing else to talk. Responses are `{"data": …}` or `{"error": "…", "hint":
 * "…"}`; statuses: 400 bad request, 401 no or wrong cookie, 403 browser headers, 404 unknown
 * route/peer/service/proxy, 409 conflict, 413 body too large, 502 peer unreachable.
 *
 * This module imports nothing of ours (the linter checks it): changing the contract is a change here.
 *
 * @packageDocumentation
 */

/** Bumped when a route changes incompatibly. */
export const API_VERSION = 1

/** The `Upgrade` protocol of {@link ROUTES.dial}: after `101` the socket carries the service's raw bytes. */
export const DIAL_PROTOCOL = 'peerup-stream'

/** Every route, by name. `:x` segments are URL-encoded parameters. */
export const ROUTES = {
  status: 'GET /v1/status',
  services: 'GET /v1/services',
  peers: 'GET /v1/peers',
  paths: 'GET /v1/paths',
  authList: 'GET /v1/auth',
  authAdd: 'POST /v1/auth',
  authRemove: 'DELETE /v1/auth/:peer',
  ping: 'POST /v1/ping',
  traceroute: 'POST /v1/traceroute',
  resolve: 'GET /v1/resolve/:name',
  connectList: 'GET /v1/connect',
  connectAdd: 'POST /v1/connect',
  connectRemove: 'DELETE /v1/connect/:id',
  exposeAdd: 'POST /v1/expose',
  exposeRemove: 'DELETE /v1/expose/:name',
  shutdown: 'POST /v1/shutdown',
  events: 'GET /v1/events',
  dial: 'POST /v1/dial',
  invite: 'POST /v1/invite',
} as const

/** How a connection reaches its peer. */
export type PathType = 'DIRECT' | 'RELAYED'

/** A connection's path. */
export interface ApiPath {
  type: PathType
  /** The relay's peer id when relayed. */
  relay: string | undefined
  /** `tcp`, `webrtc`, …: the transport of the direct link (relayed: of the hop to the relay). */
  transport: string
  remoteAddr: string
  /** A relay limits the connection (a peer it does not know). */
  limited: boolean
}

/** `GET /v1/status` */
export interface StatusResponse {
  version: string
  apiVersion: number
  pid: number
  peerId: string
  network: string
  startedAt: string
  uptimeSeconds: number
  configFile: string
  listenAddresses: string[]
  relays: RelayState[]
  services: ServiceState[]
  /** Peers with an open connection (peerup peers only). */
  connectedPeers: number
  proxies: number
}

/** One configured relay as the reservation supervisor sees it. */
export interface RelayState {
  peerId: string
  addrs: string[]
  connected: boolean
  reserved: boolean
  /** When `reserved` last changed (RFC 3339). */
  since: string
  lastError: string | undefined
}

/** `GET /v1/services`: what this daemon offers. */
export interface ServiceState {
  name: string
  protocol: string
  localAddress: string
  allowedPeers: string[]
  /** From config.yaml, or added at run time with `expose`. */
  source: 'config' | 'runtime'
  activeConnections: number
}

/** `GET /v1/peers[?all=true]`: connected peers; without `all`, only peerup nodes and relays. */
export interface PeerState {
  peerId: string
  name: string | undefined
  /** Identify user agent: `peerup/0.1.0`, `relay-server/0.1.0`, … */
  agent: string | undefined
  authorized: boolean
  /** The best open connection's path. */
  path: ApiPath
  connections: number
  /** When the oldest open connection was opened (RFC 3339). */
  since: string
}

/** Where the upgrade from a relayed to a direct path stands with one peer. */
export interface UpgradeStatus {
  /** `unavailable`: the peer offers no direct path we can try. */
  state: 'none' | 'upgrading' | 'direct' | 'failed' | 'unavailable'
  attempts: number
  failures: number
  lastError: string | undefined
  /** ms since the epoch. */
  lastAttemptAt: number | undefined
  /** ms since the epoch; set while a retry is scheduled. */
  nextRetryAt: number | undefined
  timeToDirectMs: number | undefined
  transport: 'tcp' | 'webrtc' | undefined
}

/** `GET /v1/paths`: the path new streams to each known peer take, and when it last changed. */
export interface PathState {
  peerId: string
  name: string | undefined
  /** Undefined while no connection is open (a peer remembered for its upgrade history). */
  path: ApiPath | undefined
  /** When `path` last changed (RFC 3339). */
  since: string
  previous: ApiPath | undefined
  /** Open connections (a relayed one can linger beside a direct one while its streams finish). */
  connections: number
  upgrade: UpgradeStatus
}

/** `GET /v1/auth`: one line of authorized_keys. */
export interface AuthEntry {
  peerId: string
  name: string | undefined
  comment: string | undefined
  verified: string | undefined
  expires: string | undefined
  expired: boolean
  group: string | undefined
}

/** `POST /v1/auth` */
export interface AuthAddRequest {
  peer: string
  comment?: string
  name?: string
}

/** `POST /v1/auth` and `DELETE /v1/auth/:peer`: what changed. */
export interface AuthChangeResponse {
  peerId: string
  /** Connections closed because the peer lost its authorization. */
  closedConnections: number
}

/** `POST /v1/ping` */
export interface PingRequest {
  peer: string
  /** Default 4; 0 = until the request is closed (only with `?stream=true`). */
  count?: number
  intervalMs?: number
  /** Keep pinging until the path is DIRECT (or the upgrade fails). */
  untilDirect?: boolean
  /** Stop after this long. */
  deadlineMs?: number
}

/** One ping. */
export interface PingReply {
  seq: number
  rttMs: number | undefined
  error: string | undefined
  path: ApiPath
  /** The path differs from the previous reply's. */
  changed: boolean
}

/** A change of path seen while pinging. */
export interface PingPathChange {
  seq: number
  afterMs: number
  from: ApiPath
  to: ApiPath
}

/** `POST /v1/ping` */
export interface PingResponse {
  peer: string
  peerId: string
  via: 'existing' | 'relay' | 'dht'
  connectMs: number
  path: ApiPath
  replies: PingReply[]
  sent: number
  received: number
  minMs: number | undefined
  avgMs: number | undefined
  maxMs: number | undefined
  pathChanges: PingPathChange[]
  finalPath: ApiPath
  upgrade: UpgradeStatus | undefined
}

/** `POST /v1/traceroute` */
export interface TracerouteRequest {
  peer: string
}

/** One hop. */
export interface Hop {
  hop: number
  peerId: string
  role: 'relay' | 'peer'
  address: string
  rttMs: number | undefined
  error: string | undefined
}

/** `POST /v1/traceroute` */
export interface TracerouteResponse {
  peer: string
  peerId: string
  path: ApiPath
  summary: string
  hops: Hop[]
  since: string | undefined
  previous: ApiPath | undefined
  upgrade: UpgradeStatus | undefined
}

/** `GET /v1/resolve/:name` */
export interface ResolveResponse {
  name: string | undefined
  peerId: string
}

/** `POST /v1/connect`: a local TCP listener in the daemon forwarding to a peer's service. */
export interface ConnectRequest {
  peer: string
  service: string
  /** `[host:]port`; host defaults to 127.0.0.1, port 0 picks one. */
  listen: string
}

/** A proxy listener the daemon runs. */
export interface ProxyState {
  id: string
  peer: string
  service: string
  /** `host:port` it listens on. */
  listen: string
  createdAt: string
  activeConnections: number
  totalConnections: number
  bytesIn: number
  bytesOut: number
}

/** `POST /v1/expose`: offer a local service until the daemon stops (config.yaml is not changed). */
export interface ExposeRequest {
  name: string
  localAddress: string
  allowedPeers?: string[]
}

/** `POST /v1/shutdown` */
export interface ShutdownResponse {
  stopping: true
}

/** `POST /v1/dial?peer=…&service=…` with `Upgrade: peerup-stream`: query of the upgrade request. */
export interface DialQuery {
  peer: string
  service: string
}

/** A line of `GET /v1/events` (NDJSON). Every event has `type` and `time` (RFC 3339). */
export type DaemonEvent =
  | { type: 'hello'; time: string; version: string; peerId: string }
  | { type: 'peer-connected'; time: string; peerId: string; name: string | undefined; path: ApiPath }
  | { type: 'peer-disconnected'; time: string; peerId: string; name: string | undefined }
  | {
      type: 'path-changed'
      time: string
      peerId: string
      name: string | undefined
      from: ApiPath | undefined
      to: ApiPath
    }
  | {
      type: 'upgrade'
      time: string
      peerId: string
      outcome: 'started' | 'succeeded' | 'failed'
      attempt: number
      transport: 'tcp' | 'webrtc' | undefined
      elapsedMs: number | undefined
      error: string | undefined
    }
  | { type: 'reservation'; time: string; relay: string; reserved: boolean }
  | { type: 'auth-changed'; time: string; added: string[]; removed: string[] }
  | {
      type: 'config'
      time: string
      /** `reloaded`: config.yaml changed and was applied; `confirmed`/`reverted`: a commit-confirmed apply ended. */
      action: 'reloaded' | 'confirmed' | 'reverted'
      applied: string[]
      restartNeeded: string[]
    }
  | { type: 'stopping'; time: string }

/** `POST /v1/invite`: an invite answered by the daemon's own node (one at a time). */
export interface InviteRequest {
  /** This machine's name, for the joiner's `names:`. */
  name?: string
  /** How long the code stays valid. */
  ttlMs: number
}

/**
 * A line of the NDJSON answer of `POST /v1/invite`: the code (a secret: show it, never log it),
 * progress, then `paired` or `error`. Closing the request cancels the invite.
 */
export type InviteStreamLine =
  | { type: 'code'; code: string; expires: string }
  | { type: 'progress'; message: string }
  | {
      type: 'paired'
      result: { peerId: string; name: string | undefined; sponsored: { ok: boolean; reason?: string } }
    }
  | { type: 'error'; status: number; error: string; hint?: string }

/** The error body. */
export interface ErrorBody {
  error: string
  hint?: string
}

/** Splits a {@link ROUTES} entry into method and path. */
export function routeParts(route: string): { method: 'GET' | 'POST' | 'DELETE'; path: string } {
  const [method, path] = route.split(' ') as ['GET' | 'POST' | 'DELETE', string]
  return { method, path }
}
