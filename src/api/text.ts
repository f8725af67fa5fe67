/**
 * The contract's values as people read them: the same words from `peerup daemon status`, from the
 * API's `Accept: text/plain` answers and from `peerup ping`, written once.
 *
 * @packageDocumentation
 */

import type {
  ApiPath,
  PathState,
  PeerState,
  PersistentProxyState,
  PingLine,
  PingResponse,
  ProxyState,
  RelayState,
  ServiceState,
  SessionCountsState,
  StatusResponse,
  TracerouteResponse,
  UpgradeStatus,
} from './schemas.ts'

/** Lays out rows as aligned columns (the last column is not padded). */
export function table(rows: string[][]): string {
  const widths: number[] = []
  for (const row of rows) {
    row.forEach((cell, i) => {
      widths[i] = Math.max(widths[i] ?? 0, cell.length)
    })
  }
  return rows
    .map((row) =>
      row
        .map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i] ?? 0)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n')
}

/** A table of `items` under `header`, or `none` when there are none. */
export function listTable<T>(items: T[], none: string, header: string[], row: (item: T) => string[]): string {
  return items.length === 0 ? none : table([header, ...items.map(row)])
}

/** The first and last characters of a peer id, enough to tell peers apart in a table. */
export function shortId(id: string): string {
  return id.length <= 16 ? id : `${id.slice(0, 8)}…${id.slice(-6)}`
}

/** `DIRECT (tcp)`, `RELAYED via home-relay (limited)`, `not connected`. */
export function describePath(path: ApiPath | undefined, names: Record<string, string> = {}): string {
  if (path === undefined) {
    return 'not connected'
  }
  if (path.type === 'DIRECT') {
    return `DIRECT (${path.transport})`
  }
  const relay = path.relay ?? 'unknown relay'
  const name = Object.entries(names).find(([, id]) => id === relay)?.[0]
  return `RELAYED via ${name ?? shortId(relay)}${path.limited ? ' (limited)' : ''}`
}

/**
 * Why a path is RELAYED, from the upgrade the daemon records (src/p2p/paths.ts): the last
 * attempt's failure, that nothing direct can be tried, that one is running, or that this side
 * never tries (only the side that dialled the relayed connection upgrades it).
 */
export function relayedReason(upgrade: UpgradeStatus | undefined, now = Date.now()): string {
  const retry =
    upgrade?.nextRetryAt === undefined
      ? ''
      : `; next try ${until(new Date(upgrade.nextRetryAt).toISOString(), now)}`
  switch (upgrade?.state) {
    case undefined:
    case 'none':
      return 'no direct attempt from this side (the side that dialled the relayed connection tries)'
    case 'upgrading':
      return 'a direct attempt is running'
    case 'failed':
      return `the direct attempt failed: ${upgrade.lastError ?? 'unknown error'}${retry}`
    case 'unavailable':
      return `no direct path to try: ${upgrade.lastError ?? 'unknown reason'}`
    case 'direct':
      return `the direct connection closed${retry === '' ? '' : `; trying again (${retry.slice(2)})`}`
  }
}

/** How long ago an RFC 3339 time was, briefly: `42s`, `5m`, `3h`, `2d`. */
export function ago(time: string, now = Date.now()): string {
  return briefly(Math.max(0, Math.round((now - Date.parse(time)) / 1000)))
}

/** How long until an RFC 3339 time, briefly: `in 12s`, `in 2m`; `now` once it has come. */
export function until(time: string, now = Date.now()): string {
  const s = Math.round((Date.parse(time) - now) / 1000)
  return s <= 0 ? 'now' : `in ${briefly(s)}`
}

/** `42s`, `5m`, `3h`, `2d`. */
function briefly(s: number): string {
  return s < 60
    ? `${s}s`
    : s < 3600
      ? `${Math.floor(s / 60)}m`
      : s < 86400
        ? `${Math.floor(s / 3600)}h`
        : `${Math.floor(s / 86400)}d`
}

/**
 * One relay of `daemon status`: the reservation held, or why there is none and when the next
 * try is (`connected, no reservation (since 4m): refused by the relay: not in
 * relay_authorized_keys; next try in 12s`).
 */
export function relayText(r: RelayState, now = Date.now()): string {
  if (r.reserved) {
    return `reservation held (since ${ago(r.since, now)})`
  }
  const why = r.reason ?? r.lastError
  return [
    `${r.connected ? 'connected, no reservation' : 'unreachable'} (since ${ago(r.since, now)})`,
    why === undefined ? '' : `: ${why}`,
    r.nextAttemptAt === undefined ? '' : `; next try ${until(r.nextAttemptAt, now)}`,
  ].join('')
}

/**
 * Where a proxy of `proxies:` stands: `listening`, `disabled`, `not listening: <why>`, and what is
 * wrong with its peer name when it does not resolve.
 */
export function persistentProxyStateText(p: PersistentProxyState): string {
  const state = !p.enabled
    ? 'disabled'
    : p.listening
      ? 'listening'
      : `not listening: ${p.reason ?? 'starting'}`
  return p.peerError === undefined ? state : `${state}; ${p.peerError}`
}

/** One proxy of `proxies:` on a line: `home-ssh 127.0.0.1:2222 → home/ssh (listening)`. */
export function persistentProxyLine(p: PersistentProxyState): string {
  return `${p.name} ${p.bind} → ${p.peer}/${p.service} (${persistentProxyStateText(p)})`
}

/** `proxy list`: the proxies of `proxies:` and how each is doing. */
export function persistentProxiesText(proxies: PersistentProxyState[]): string {
  return listTable(
    proxies,
    'no proxies (`peerup proxy add <name> <peer> <service> [[host:]port]`)',
    ['NAME', 'BIND', 'PEER', 'SERVICE', 'STATE', 'OPEN', 'TOTAL', 'LAST FAILURE'],
    (p) => [
      p.name,
      p.bind,
      p.peer,
      p.service,
      persistentProxyStateText(p),
      String(p.activeConnections),
      String(p.totalConnections),
      p.lastError ?? '-',
    ],
  )
}

/** `daemon status`. */
export function statusText(s: StatusResponse): string {
  const proxies = s.persistentProxies ?? []
  return [
    `daemon    running, pid ${s.pid}, peerup ${s.version}, up ${ago(s.startedAt)}`,
    `peer id   ${s.peerId}`,
    `network   ${s.networkName ?? (s.network === '' ? '(default)' : s.network)}`,
    `config    ${s.configFile}`,
    '',
    `relays (${s.relays.length})`,
    ...s.relays.map((r) => `  ${r.peerId}  ${relayText(r)}`),
    '',
    `services (${s.services.length})`,
    ...s.services.map(
      (v) =>
        `  ${v.name.padEnd(12)} ${v.localAddress}  ${v.activeConnections} active${v.source === 'runtime' ? ' (exposed at run time)' : ''}`,
    ),
    '',
    `proxies (${proxies.length})`,
    ...proxies.map(
      (p) =>
        `  ${p.name.padEnd(12)} ${p.bind} → ${p.peer}/${p.service}  ${persistentProxyStateText(p)}, ${p.activeConnections} open, ${p.totalConnections} total`,
    ),
    '',
    `peers connected ${s.connectedPeers}, daemon connect listeners ${s.proxies}`,
    ...(s.sessions === undefined
      ? []
      : [
          `sessions  ${sessionsText('opened', s.sessions.opened)}`,
          `          ${sessionsText('accepted', s.sessions.accepted)}`,
        ]),
  ].join('\n')
}

/** One side's sessions in `daemon status`: `opened 2 (1 waiting for its link), 3 resumed, 1 moved, 0 expired`. */
function sessionsText(side: string, c: SessionCountsState): string {
  const waiting =
    c.waiting === 0 ? '' : ` (${c.waiting} waiting for ${c.waiting === 1 ? 'its' : 'their'} link)`
  return `${side.padEnd(8)} ${c.open} open${waiting}; since start ${c.resumed} resumed, ${c.moved} moved to direct, ${c.expired} expired`
}

/** `daemon peers`. */
export function peersText(peers: PeerState[]): string {
  return listTable(
    peers,
    'no peers connected',
    ['PEER', 'NAME', 'PATH', 'SINCE', 'AGENT', 'AUTHORIZED'],
    (p) => [
      p.peerId,
      p.name ?? '-',
      describePath(p.path),
      ago(p.since),
      p.agent ?? '?',
      p.authorized ? 'yes' : 'no',
    ],
  )
}

/** `daemon paths`. */
export function pathsText(paths: PathState[]): string {
  return listTable(
    paths,
    'no paths: no peer connected',
    ['PEER', 'NAME', 'PATH', 'SINCE', 'BEFORE', 'UPGRADE'],
    (p) => [
      p.peerId,
      p.name ?? '-',
      describePath(p.path),
      ago(p.since),
      p.previous === undefined ? '-' : describePath(p.previous),
      p.upgrade.state === 'none'
        ? '-'
        : `${p.upgrade.state}${p.upgrade.timeToDirectMs === undefined ? '' : ` in ${(p.upgrade.timeToDirectMs / 1000).toFixed(1)} s`}${p.upgrade.lastError === undefined ? '' : `: ${p.upgrade.lastError}`}`,
    ],
  )
}

/** `daemon services`. */
export function servicesText(services: ServiceState[]): string {
  return listTable(
    services,
    'no services offered (`peerup service add <name> <host:port>`, then restart the daemon)',
    ['NAME', 'LOCAL', 'ALLOWED', 'ACTIVE', 'SOURCE'],
    (s) => [
      s.name,
      s.localAddress,
      s.allowedPeers.length === 0 ? 'all authorized' : s.allowedPeers.join(','),
      String(s.activeConnections),
      s.source,
    ],
  )
}

/** `daemon proxies`. */
export function proxiesText(proxies: ProxyState[]): string {
  return listTable(
    proxies,
    'no proxies (`peerup daemon connect --peer P --service S --listen PORT`)',
    ['ID', 'LISTEN', 'PEER', 'SERVICE', 'ACTIVE', 'TOTAL', 'IN', 'OUT'],
    (p) => [
      p.id,
      p.listen,
      p.peer,
      p.service,
      ...[p.activeConnections, p.totalConnections, p.bytesIn, p.bytesOut].map(String),
    ],
  )
}

/** `traceroute`. */
export function tracerouteText(r: TracerouteResponse): string {
  return [
    `traceroute to ${r.peer} (${r.peerId}): ${r.summary}`,
    table(
      r.hops.map((h) => [
        String(h.hop),
        h.role,
        h.peerId,
        h.rttMs === undefined ? `error: ${h.error}` : `${h.rttMs.toFixed(1)} ms`,
        h.address,
      ]),
    ),
  ].join('\n')
}

/**
 * The last line of `ping`: sent, received, loss and round-trip times; when the last reply went
 * through a relay, a line with `why` (by default the upgrade's reason, {@link relayedReason}).
 */
export function pingSummaryText(
  r: PingResponse,
  names: Record<string, string> = {},
  why: string = relayedReason(r.upgrade),
): string {
  const loss = r.sent === 0 ? 0 : Math.round(((r.sent - r.received) / r.sent) * 100)
  const stats =
    r.received === 0
      ? ''
      : `, rtt min/avg/max ${r.minMs?.toFixed(1)}/${r.avgMs?.toFixed(1)}/${r.maxMs?.toFixed(1)} ms`
  const line = `--- ${r.peer}: ${r.sent} sent, ${r.received} received, ${loss}% loss${stats}`
  // A RELAYED result says why, so that nobody has to guess whether it is the NAT or a bug.
  return r.finalPath.type === 'RELAYED' && r.received > 0
    ? `${line}\n${describePath(r.finalPath, names)} because: ${why}`
    : line
}

/** A line of `ping` as it happens: connected, a reply, a change of path, or the summary. */
export function pingLineText(peer: string, line: PingLine, names: Record<string, string> = {}): string {
  switch (line.type) {
    case 'connected':
      return `PING ${peer}: ${describePath(line.path, names)}, connected in ${line.connectMs.toFixed(0)} ms (${line.via})`
    case 'path-changed': {
      const c = line.change
      return `path changed: ${describePath(c.from, names)} → ${describePath(c.to, names)} after ${(c.afterMs / 1000).toFixed(1)} s`
    }
    case 'reply': {
      const r = line.reply
      return r.rttMs === undefined
        ? `seq=${r.seq} error: ${r.error} path=${describePath(r.path, names)}`
        : `seq=${r.seq} rtt=${r.rttMs.toFixed(1)} ms path=${describePath(r.path, names)}`
    }
    case 'done':
      return pingSummaryText(line.report, names)
  }
}

/** A whole ping run from its report, as `ping` printed it line by line. */
export function pingReportText(r: PingResponse, names: Record<string, string> = {}): string {
  return [
    pingLineText(r.peer, { type: 'connected', path: r.path, via: r.via, connectMs: r.connectMs }, names),
    ...r.replies.map((reply) => pingLineText(r.peer, { type: 'reply', reply }, names)),
    pingSummaryText(r, names),
  ].join('\n')
}
