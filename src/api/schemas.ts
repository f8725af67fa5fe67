/**
 * The shapes the daemon's API sends and receives, as zod schemas: the server checks requests with
 * them, TypeScript types come from them (`z.infer`), and the domains return these types, so there
 * is no second copy of the contract to keep in step.
 *
 * @packageDocumentation
 */

import { z } from 'zod'
import { networkName, peerName, peerRef, proxyName, serviceName, text } from './names.ts'

const time = z.string()

// ---- paths and peers ----

/** How a connection reaches its peer. */
export const pathType = z.enum(['DIRECT', 'RELAYED'])

/** A connection's path. */
export const apiPath = z.object({
  type: pathType,
  /** The relay's peer id when relayed. */
  relay: z.string().optional(),
  /** `tcp`, `webrtc`, …: the transport of the direct link (relayed: of the hop to the relay). */
  transport: z.string(),
  remoteAddr: z.string(),
  /** A relay limits the connection (a peer it does not know). */
  limited: z.boolean(),
})

/** Where the upgrade from a relayed to a direct path stands with one peer. */
export const upgradeStatus = z.object({
  /** `unavailable`: the peer offers no direct path we can try. */
  state: z.enum(['none', 'upgrading', 'direct', 'failed', 'unavailable']),
  attempts: z.number(),
  failures: z.number(),
  lastError: z.string().optional(),
  /** ms since the epoch. */
  lastAttemptAt: z.number().optional(),
  /** ms since the epoch; set while a retry is scheduled. */
  nextRetryAt: z.number().optional(),
  timeToDirectMs: z.number().optional(),
  transport: z.enum(['tcp', 'webrtc']).optional(),
})

/** One configured relay as the reservation supervisor sees it. */
export const relayState = z.object({
  peerId: z.string(),
  addrs: z.array(z.string()),
  connected: z.boolean(),
  reserved: z.boolean(),
  /** When `reserved` last changed (RFC 3339). */
  since: time,
  /** Why the last dial of the relay failed. */
  lastError: z.string().optional(),
  /**
   * Why no reservation is held: the relay's refusal (`refused by the relay: not in
   * relay_authorized_keys`) or why it could not be asked. Absent while one is held.
   */
  reason: z.string().optional(),
  /** Tries in a row that failed (0 once a reservation is held). */
  failures: z.number().optional(),
  /** When the next try is due (RFC 3339); absent while a reservation is held. */
  nextAttemptAt: time.optional(),
})

/** A service this daemon offers. */
export const serviceState = z.object({
  name: z.string(),
  protocol: z.string(),
  localAddress: z.string(),
  allowedPeers: z.array(z.string()),
  /** From config.yaml, or added at run time with `expose`. */
  source: z.enum(['config', 'runtime']),
  activeConnections: z.number(),
})

/** A proxy of config.yaml's `proxies:` as the daemon runs it. */
export const persistentProxyState = z.object({
  name: z.string(),
  /** As written: a name from `names:` (resolved at each connection) or a peer id. */
  peer: z.string(),
  /** The peer id `peer` stands for now; absent when it does not resolve (see `peerError`). */
  peerId: z.string().optional(),
  /** Why `peer` does not resolve (a name no longer under `names:`). */
  peerError: z.string().optional(),
  service: z.string(),
  /** `host:port` it listens on. */
  bind: z.string(),
  enabled: z.boolean(),
  listening: z.boolean(),
  /** Why an enabled proxy is not listening (its port is in use, …); it tries again by itself. */
  reason: z.string().optional(),
  /** Since when it listens, or since when it has not (RFC 3339). */
  since: time,
  activeConnections: z.number(),
  totalConnections: z.number(),
  /** Local connections closed because the peer could not be reached in time (or refused). */
  failedConnections: z.number(),
  /** Why the last failed connection failed. */
  lastError: z.string().optional(),
  bytesIn: z.number(),
  bytesOut: z.number(),
})

/** What one side's resumable sessions are doing, and did since the daemon started. */
export const sessionCounts = z.object({
  /** Not over: attached, or waiting for their link to come back. */
  open: z.number(),
  /** Of those, the ones without a link now (within `proxy.resume_grace`). */
  waiting: z.number(),
  /** Times a session that had lost its link was attached again. */
  resumed: z.number(),
  /** Times a session moved on purpose to a direct path. */
  moved: z.number(),
  /** Sessions whose link did not come back within the grace period (both sockets reset). */
  expired: z.number(),
})

/** `GET /v1/status` */
export const statusResponse = z.object({
  version: z.string(),
  apiVersion: z.number(),
  pid: z.number(),
  peerId: z.string(),
  /** `discovery.network` of the network's config (empty for the default one). */
  network: z.string(),
  /** The network's name in the daemon (docs/cli.md "Several networks"): `default` for an empty `network` (an older daemon sends none). */
  networkName: z.string().optional(),
  startedAt: time,
  uptimeSeconds: z.number(),
  configFile: z.string(),
  listenAddresses: z.array(z.string()),
  relays: z.array(relayState),
  services: z.array(serviceState),
  /** Peers with an open connection. */
  connectedPeers: z.number(),
  /** The listeners made with `POST /v1/connect` (`daemon connect`). */
  proxies: z.number(),
  /** The proxies of config.yaml's `proxies:` (`peerup proxy add`), each with its state (an older daemon sends none). */
  persistentProxies: z.array(persistentProxyState).optional(),
  /** Resumable sessions: `opened` to peers' services, `accepted` for ours (an older daemon sends none). */
  sessions: z.object({ opened: sessionCounts, accepted: sessionCounts }).optional(),
})

/** A connected peer. */
export const peerState = z.object({
  peerId: z.string(),
  name: z.string().optional(),
  /** Identify user agent: `peerup/0.1.0`, `relay-server/0.1.0`, … */
  agent: z.string().optional(),
  authorized: z.boolean(),
  /** The best open connection's path. */
  path: apiPath,
  connections: z.number(),
  /** When the oldest open connection was opened (RFC 3339). */
  since: time,
})

/** The path new streams to a known peer take, and when it last changed. */
export const pathState = z.object({
  peerId: z.string(),
  name: z.string().optional(),
  /** Undefined while no connection is open (a peer remembered for its upgrade history). */
  path: apiPath.optional(),
  /** When `path` last changed (RFC 3339). */
  since: time,
  previous: apiPath.optional(),
  /** Open connections (a relayed one can linger beside a direct one while its streams finish). */
  connections: z.number(),
  upgrade: upgradeStatus,
})

// ---- authorized_keys ----

/** One line of authorized_keys. */
export const authEntry = z.object({
  peerId: z.string(),
  name: z.string().optional(),
  comment: z.string().optional(),
  verified: z.string().optional(),
  expires: z.string().optional(),
  expired: z.boolean(),
  group: z.string().optional(),
})

/** `POST /v1/auth` */
export const authAddRequest = z.object({
  peer: peerRef,
  comment: text('text').optional(),
  name: peerName.optional(),
})

/** What an authorized_keys change did. */
export const authChangeResponse = z.object({
  peerId: z.string(),
  /** Connections closed because the peer lost its authorization. */
  closedConnections: z.number(),
})

// ---- ping and traceroute ----

/** Most pings one API request may ask for (a CLI wanting more streams them). */
export const MAX_API_PINGS = 1000

const DAY_MS = 86_400_000

/** A whole number from `min` to `max`. */
const count = (max: number, min = 0) => {
  const error = `must be a whole number from ${min} to ${max}`
  return z.number({ error }).int({ error }).min(min, { error }).max(max, { error })
}

/** `POST /v1/ping` */
export const pingRequest = z.object({
  peer: peerRef,
  /** Default 4; 0 = until the request is closed. */
  count: count(MAX_API_PINGS).optional(),
  intervalMs: count(60_000).optional(),
  /** Keep pinging until the path is DIRECT (or the upgrade fails). */
  untilDirect: z.boolean({ error: 'must be true or false' }).optional(),
  /** Stop after this long. */
  deadlineMs: count(DAY_MS).optional(),
})

export const pingReply = z.object({
  seq: z.number(),
  rttMs: z.number().optional(),
  error: z.string().optional(),
  /** The path of the connection this ping went over. */
  path: apiPath,
  /** The path differs from the previous reply's (for the first: from the connect path). */
  changed: z.boolean(),
})

/** A change of path seen while pinging: relayed → direct, typically. */
export const pingPathChange = z.object({
  /** The first reply on the new path. */
  seq: z.number(),
  /** Time since the peer was reached. */
  afterMs: z.number(),
  from: apiPath,
  to: apiPath,
})

/** A whole ping run. */
export const pingResponse = z.object({
  peer: z.string(),
  peerId: z.string(),
  /** How the connection was made: a live one, a relay circuit, or an address from the DHT. */
  via: z.enum(['existing', 'relay', 'dht']),
  connectMs: z.number(),
  /** The path when the peer was reached. */
  path: apiPath,
  replies: z.array(pingReply),
  sent: z.number(),
  received: z.number(),
  minMs: z.number().optional(),
  avgMs: z.number().optional(),
  maxMs: z.number().optional(),
  /** Every change of path during the run, in order. */
  pathChanges: z.array(pingPathChange),
  /** The path of the last reply (or the connect path when there was none). */
  finalPath: apiPath,
  /** The upgrade to a direct path as the node saw it at the end (undefined: never attempted). */
  upgrade: upgradeStatus.optional(),
})

/** A line of a ping as it goes: connected, each reply, each change of path, then the report. */
export const pingLine = z.discriminatedUnion('type', [
  z.object({ type: z.literal('connected'), path: apiPath, via: z.string(), connectMs: z.number() }),
  z.object({ type: z.literal('reply'), reply: pingReply }),
  z.object({ type: z.literal('path-changed'), change: pingPathChange }),
  z.object({ type: z.literal('done'), report: pingResponse }),
])

/** `POST /v1/traceroute` */
export const tracerouteRequest = z.object({ peer: peerRef })

export const hop = z.object({
  hop: z.number(),
  peerId: z.string(),
  role: z.enum(['relay', 'peer']),
  address: z.string(),
  rttMs: z.number().optional(),
  error: z.string().optional(),
})

/** `POST /v1/traceroute` */
export const tracerouteResponse = z.object({
  peer: z.string(),
  peerId: z.string(),
  path: apiPath,
  summary: z.string(),
  hops: z.array(hop),
  since: time.optional(),
  previous: apiPath.optional(),
  upgrade: upgradeStatus.optional(),
})

/** `GET /v1/resolve/:name` */
export const resolveResponse = z.object({ name: z.string().optional(), peerId: z.string() })

// ---- proxies and services ----

/** `POST /v1/connect`: a local TCP listener in the daemon forwarding to a peer's service. */
export const connectRequest = z.object({
  peer: peerRef,
  service: serviceName,
  /** `[host:]port`; host defaults to 127.0.0.1, port 0 picks one. */
  listen: text('[host:]port'),
})

/** A proxy listener the daemon runs. */
export const proxyState = z.object({
  id: z.string(),
  peer: z.string(),
  service: z.string(),
  /** `host:port` it listens on. */
  listen: z.string(),
  createdAt: time,
  activeConnections: z.number(),
  totalConnections: z.number(),
  bytesIn: z.number(),
  bytesOut: z.number(),
})

/** `POST /v1/proxies`: a proxy kept in config.yaml's `proxies:` and run by the daemon. */
export const proxyAddRequest = z.object({
  name: proxyName,
  peer: peerRef,
  service: serviceName,
  /** `[host:]port`; host defaults to 127.0.0.1; without it (or with port 0) a free port is picked and recorded. */
  bind: text('[host:]port').optional(),
  /** Default true; false records it switched off. */
  enabled: z.boolean({ error: 'must be true or false' }).optional(),
})

/** Most peers one exposed service may list. */
const MAX_ALLOWED_PEERS = 1000

/** `POST /v1/expose`: offer a local service until the daemon stops (config.yaml is not changed). */
export const exposeRequest = z.object({
  name: serviceName,
  localAddress: text('host:port'),
  allowedPeers: z
    .array(peerRef, { error: 'must be a list of peer ids or names' })
    .max(MAX_ALLOWED_PEERS, { error: `must list at most ${MAX_ALLOWED_PEERS} peers` })
    .optional(),
})

/** What was removed. */
export const removedResponse = z.object({ removed: z.string() })

/** A network of the daemon (`GET /v1/networks`; docs/cli.md "Several networks"). */
export const networkState = z.object({
  name: z.string(),
  /** The main network: the daemon's own config directory. */
  main: z.boolean(),
  /** What commands (and requests without `?network=`) mean when they name no network. */
  selected: z.boolean(),
  dir: z.string(),
  configFile: z.string(),
  running: z.boolean(),
  /** The node's peer id, while it runs. */
  peerId: z.string().optional(),
  /** Relays configured and relays holding a reservation for it, while it runs. */
  relays: z.number().optional(),
  relaysReserved: z.number().optional(),
  connectedPeers: z.number().optional(),
  /** Why it does not run, when its start failed. */
  error: z.string().optional(),
})

/** `POST /v1/networks`: start a network whose directory exists. */
export const networkRequest = z.object({ name: networkName })

/**
 * `POST /v1/ui/login`: a one-time link to the web dashboard (docs/ui.md). The token travels in the
 * URL's fragment, which a browser sends to no server; it is good once, until `expires`.
 */
export const uiLoginResponse = z.object({ url: z.string(), expires: z.string() })

// ---- events, invites ----

/** An event of `type` at `time`, with the fields of `shape`. */
const event = <T extends string, S extends z.ZodRawShape>(type: T, shape: S) =>
  z.object({ type: z.literal(type), time, ...shape })

/** A line of `GET /v1/events`. Every event has `type` and `time` (RFC 3339). */
export const daemonEvent = z.discriminatedUnion('type', [
  event('hello', { version: z.string(), peerId: z.string() }),
  event('peer-connected', { peerId: z.string(), name: z.string().optional(), path: apiPath }),
  event('peer-disconnected', { peerId: z.string(), name: z.string().optional() }),
  event('path-changed', {
    peerId: z.string(),
    name: z.string().optional(),
    from: apiPath.optional(),
    to: apiPath,
  }),
  event('upgrade', {
    peerId: z.string(),
    outcome: z.enum(['started', 'succeeded', 'failed']),
    attempt: z.number(),
    transport: z.enum(['tcp', 'webrtc']).optional(),
    elapsedMs: z.number().optional(),
    error: z.string().optional(),
  }),
  event('reservation', { relay: z.string(), reserved: z.boolean() }),
  event('auth-changed', { added: z.array(z.string()), removed: z.array(z.string()) }),
  event('config', {
    /** `reloaded`: config.yaml changed and was applied; `confirmed`/`reverted`: a commit-confirmed apply ended. */
    action: z.enum(['reloaded', 'confirmed', 'reverted']),
    applied: z.array(z.string()),
    restartNeeded: z.array(z.string()),
  }),
  event('stopping', {}),
])

/** `POST /v1/invite`: an invite answered by the daemon's own node (one at a time). */
export const inviteRequest = z.object({
  /** This machine's name, for the joiner's `names:`. */
  name: peerName.optional(),
  /** How long the code stays valid. */
  ttlMs: z
    .number({ error: `is required: how long the code stays valid, in ms (1000 to ${DAY_MS})` })
    .int({ error: `must be a whole number of ms from 1000 to ${DAY_MS}` })
    .min(1000, { error: `must be a whole number of ms from 1000 to ${DAY_MS}` })
    .max(DAY_MS, { error: `must be a whole number of ms from 1000 to ${DAY_MS}` }),
})

/**
 * A line of a held proxy listener (`peerup proxy PEER SERVICE PORT`): first `listening`, then a
 * line for each connection that could not be forwarded, until the caller goes away.
 */
export const connectHoldLine = z.discriminatedUnion('type', [
  z.object({ type: z.literal('listening'), proxy: proxyState }),
  z.object({ type: z.literal('failed'), error: z.string() }),
])

/**
 * `POST /v1/socks/hold`: a SOCKS5 gateway (and HTTP CONNECT beside it) in the daemon for as long
 * as this request lasts (`peerup socks`). Loopback addresses only: a gateway other machines use
 * needs a login, which config.yaml's `socks:` sets.
 */
export const socksHoldRequest = z.object({
  /** `[host:]port` of SOCKS5; host defaults to 127.0.0.1, port 0 picks one. */
  listen: text('[host:]port'),
  /** `[host:]port` of HTTP CONNECT; none when absent. */
  http: text('[host:]port').optional(),
})

/** The one line of a held gateway: where it listens (`host:port`). */
export const socksHoldLine = z.discriminatedUnion('type', [
  z.object({ type: z.literal('listening'), socks: z.string(), http: z.string().optional() }),
])

/**
 * A line of an invite: the code (a secret: show it, never log it), progress, then `paired`.
 * Closing the request cancels the invite.
 */
export const inviteLine = z.discriminatedUnion('type', [
  z.object({
    type: z.literal('code'),
    code: z.string(),
    expires: time,
    /** The short code (`7-acorn-zebra`) and the relay it waits on, when the relay gave a nameplate. */
    short: z.object({ code: z.string(), relay: z.string() }).optional(),
  }),
  z.object({ type: z.literal('progress'), message: z.string() }),
  z.object({
    type: z.literal('paired'),
    result: z.object({
      peerId: z.string(),
      name: z.string().optional(),
      sponsored: z.object({ ok: z.boolean(), reason: z.string().optional() }),
    }),
  }),
])

/** A number of ms from a query string (`?waitMs=30000`) or a body. */
const msParam = (max: number) =>
  z.preprocess((v) => (typeof v === 'string' && /^\d{1,12}$/.test(v) ? Number(v) : v), count(max))

/** `POST /v1/dial?peer=…&service=…[&waitMs=…]`: the query of the upgrade request. */
export const dialRequest = z.object({
  peer: peerRef,
  service: serviceName,
  /**
   * How long to wait for the peer to become reachable (down, restarting, not yet reserved on a
   * relay) before failing; without it the dial tries a few times over ~3 s.
   */
  waitMs: msParam(DAY_MS).optional(),
})

export type ApiPath = z.infer<typeof apiPath>
export type UpgradeStatus = z.infer<typeof upgradeStatus>
export type RelayState = z.infer<typeof relayState>
export type ServiceState = z.infer<typeof serviceState>
export type StatusResponse = z.infer<typeof statusResponse>
export type NetworkState = z.infer<typeof networkState>
export type SessionCountsState = z.infer<typeof sessionCounts>
export type PeerState = z.infer<typeof peerState>
export type PathState = z.infer<typeof pathState>
export type PingReply = z.infer<typeof pingReply>
export type PingPathChange = z.infer<typeof pingPathChange>
export type PingResponse = z.infer<typeof pingResponse>
export type PingLine = z.infer<typeof pingLine>
export type Hop = z.infer<typeof hop>
export type TracerouteResponse = z.infer<typeof tracerouteResponse>
export type ConnectRequest = z.infer<typeof connectRequest>
export type ProxyState = z.infer<typeof proxyState>
export type ConnectHoldLine = z.infer<typeof connectHoldLine>
export type SocksHoldLine = z.infer<typeof socksHoldLine>
export type PersistentProxyState = z.infer<typeof persistentProxyState>
export type DaemonEvent = z.infer<typeof daemonEvent>
export type InviteLine = z.infer<typeof inviteLine>
