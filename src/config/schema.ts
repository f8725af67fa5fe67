/**
 * The one schema of peerup's config files: types, defaults and validation in one place. The
 * node's `config.yaml` and the relay's `relay-server.yaml` are both described here;
 * `configs/*.example.yaml` documents every key and a unit test keeps them in step.
 *
 * Durations are written as strings (`2m`) and parsed to milliseconds; sizes (`128KiB`) to bytes.
 *
 * @packageDocumentation
 */

import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { z } from 'zod'
import {
  NAME_PATTERN,
  NAME_RULE,
  PEER_ID_SHAPE,
  PROXY_NAME_RULE,
  SERVICE_NAME_PATTERN,
  SERVICE_NAME_RULE,
} from '../api/names.ts'
import { LOG_LEVELS } from '../log/index.ts'
import { formatHostPort, parseHostPort, parseListenAddress } from '../util/address.ts'
import { parseByteSize, parseDurationMs } from './units.ts'

/** The config format version this build reads and writes. */
export const CONFIG_VERSION = 1

export const DEFAULT_RELAY_PORT = 7777

/** Default UDP port of the relay's STUN responder. */
export const DEFAULT_STUN_PORT = 3478

/** Default TCP port of the relay's splice port (src/relay/splice.ts): the relay's port plus one. */
export const DEFAULT_SPLICE_PORT = DEFAULT_RELAY_PORT + 1

// What a name is, the same rule here as in the API and on the command line (src/api/names.ts).
export { NAME_PATTERN, SERVICE_NAME_PATTERN }

function describe(value: unknown): string {
  return typeof value === 'string' ? JSON.stringify(value) : String(value)
}

/** Reports `message` as the problem of the value a transform reads: it has no value then. */
function fail(ctx: z.core.$RefinementCtx, message: string): never {
  ctx.addIssue({ code: 'custom', message })
  return z.NEVER
}

/** Turns `null` (an empty YAML value such as `relay:` with nothing after it) into "not given". */
function nullAsMissing<T extends z.ZodType>(schema: T) {
  return z.preprocess((v) => (v === null ? undefined : v), schema)
}

/**
 * A map keyed by names a user wrote, as an object without a prototype: looking up a name such as
 * `constructor` or `__proto__` finds nothing rather than Object.prototype's members.
 */
function keyedByName<T extends z.ZodRecord>(schema: T) {
  return nullAsMissing(
    schema.default({} as never).transform((v): z.output<T> => Object.assign(Object.create(null), v)),
  )
}

function section<S extends z.ZodRawShape>(shape: S) {
  // Every key of a section has a default, so an absent section is the same as an empty one.
  return nullAsMissing(z.strictObject(shape).prefault({} as never))
}

const durationMs = (min = 0) =>
  z.union([z.string(), z.number()]).transform((raw, ctx) => {
    const ms = typeof raw === 'number' ? (raw === 0 ? 0 : undefined) : parseDurationMs(raw)
    if (ms === undefined) {
      return fail(ctx, `${describe(raw)} is not a duration (write it like 30s, 2m, 1h30m)`)
    }
    if (ms < min) {
      return fail(ctx, `${describe(raw)} is too short (at least ${min / 1000}s)`)
    }
    return ms
  })

const byteSize = z.union([z.string(), z.number()]).transform((raw, ctx) => {
  const bytes = parseByteSize(raw)
  if (bytes === undefined) {
    return fail(ctx, `${describe(raw)} is not a size (write it like 0, 128KiB, 1GiB)`)
  }
  return bytes
})

/** A peer id, canonicalised. */
export const peerIdString = z.string().transform((raw, ctx) => {
  try {
    return peerIdFromString(raw.trim()).toString()
  } catch {
    return fail(ctx, `${describe(raw)} is not a valid peer id (it looks like 12D3KooW…)`)
  }
})

function parseMultiaddr(raw: string): ReturnType<typeof multiaddr> | undefined {
  try {
    return multiaddr(raw.trim())
  } catch {
    return undefined
  }
}

export const multiaddrString = z.string().transform((raw, ctx) => {
  const ma = parseMultiaddr(raw)
  if (ma === undefined) {
    return fail(ctx, `${describe(raw)} is not a valid multiaddr (write it like /ip4/203.0.113.7/tcp/7777)`)
  }
  return ma.toString()
})

/** A multiaddr naming the peer it reaches: `…/p2p/<peer id>`, as relays and bootstrap peers must. */
export const peerMultiaddrString = z.string().transform((raw, ctx) => {
  const ma = parseMultiaddr(raw)
  if (ma === undefined) {
    return fail(
      ctx,
      `${describe(raw)} is not a valid multiaddr (write it like /ip4/203.0.113.7/tcp/7777/p2p/12D3KooW…)`,
    )
  }
  const components = ma.getComponents()
  const p2p = components.find((c) => c.name === 'p2p')
  if (p2p?.value === undefined) {
    return fail(
      ctx,
      `${describe(raw)} does not end in /p2p/<peer id> (\`peerup relay info\` on the relay prints the full address)`,
    )
  }
  try {
    peerIdFromString(p2p.value)
  } catch {
    return fail(ctx, `${describe(raw)} ends in an invalid peer id (was it copied whole?)`)
  }
  if (components.some((c) => c.name === 'p2p-circuit')) {
    return fail(ctx, `${describe(raw)} is a circuit address, not a relay's own address`)
  }
  return ma.toString()
})

function hostPortWithin(minPort: number) {
  return z.string().refine(
    (raw) => {
      // NaN, and so false, when it is not host:port at all.
      const port = Number(/^(?:\[([0-9A-Fa-f:.]+)\]|([^\s:[\]]+)):(\d{1,5})$/.exec(raw.trim())?.[3])
      return port >= minPort && port <= 65535
    },
    {
      message: `must be host:port, like localhost:22 or [::1]:22, with a port from ${minPort} to 65535`,
    },
  )
}

/** `host:port` or `[v6]:port` of a local TCP service peerup connects to. */
export const hostPort = hostPortWithin(1)

/** `host:port` to listen on; port 0 picks a free one. */
export const listenHostPort = hostPortWithin(0)

/**
 * Where a proxy listens, written `[host:]port` (a bare port, even as a YAML number, means
 * 127.0.0.1) and kept as `host:port`. The port is fixed: 0 would move at every start.
 */
export const proxyBind = z.unknown().transform((raw, ctx) => {
  if (raw === undefined || raw === null) {
    return fail(ctx, 'missing ([host:]port to listen on is required, like 2222)')
  }
  const text = typeof raw === 'string' || typeof raw === 'number' ? String(raw) : undefined
  let parsed: ReturnType<typeof parseListenAddress> | undefined
  try {
    parsed = text === undefined || /\s/.test(text.trim()) ? undefined : parseListenAddress(text)
  } catch {
    parsed = undefined
  }
  if (parsed === undefined || parsed.port === 0) {
    return fail(
      ctx,
      `${text === undefined ? JSON.stringify(raw) : describe(raw)} is not [host:]port with a port from 1 to 65535 (like 2222 or 127.0.0.1:2222)`,
    )
  }
  return formatHostPort(parsed.host, parsed.port)
})

const relativePath = z.string().min(1, { message: 'must not be empty' })

/** A network name (`discovery.network`): empty for the default network. */
export const NETWORK_PATTERN = /^$|^[a-z0-9][a-z0-9_-]{0,62}$/

const namespace = z.string().regex(NETWORK_PATTERN, {
  message: 'must be empty or lowercase letters, digits, - and _ (it becomes /peerup/<network>/kad/1.0.0)',
})

const peerName = z.string().regex(NAME_PATTERN, { message: NAME_RULE })

const serviceName = z.string().regex(SERVICE_NAME_PATTERN, { message: SERVICE_NAME_RULE })

const proxyName = z.string().regex(NAME_PATTERN, { message: PROXY_NAME_RULE })

const version = z.number({ error: 'must be the number 1' }).int().pipe(z.literal(CONFIG_VERSION))

const telemetry = (metricsPort: number) =>
  section({
    metrics: section({
      enabled: z.boolean().default(false),
      listen_address: listenHostPort.default(`127.0.0.1:${metricsPort}`),
    }),
    audit: section({
      enabled: z.boolean().default(false),
      file: relativePath.default('audit.log'),
    }),
  })

const log = section({
  level: z.enum(LOG_LEVELS).default('info'),
})

/** Ports as ranges, sorted and merged: `[[8000, 8010], [9000, 9000]]`. */
export type PortRanges = Array<[number, number]>

/**
 * A service's `ports:`: a port (`8080`), a range (`8000-8010`), or a list of either (`[8000,
 * 8005-8010]`, or the same as text with commas).
 */
const portRanges = z
  .union([z.number(), z.string(), z.array(z.union([z.number(), z.string()]))])
  .transform((raw, ctx) => {
    const parts = (Array.isArray(raw) ? raw : [raw]).flatMap((p) => String(p).split(','))
    const ranges: PortRanges = []
    for (const part of parts) {
      const m = /^\s*(\d{1,5})\s*(?:-\s*(\d{1,5})\s*)?$/.exec(part)
      const lo = Number(m?.[1])
      const hi = Number(m?.[2] ?? m?.[1])
      if (m === null || lo < 1 || hi > 65535 || lo > hi) {
        return fail(
          ctx,
          `${describe(part.trim())} is not a port or a range of ports (write it like 8080, 8000-8010 or [8000, 9000-9010], ports from 1 to 65535)`,
        )
      }
      ranges.push([lo, hi])
    }
    ranges.sort((a, b) => a[0] - b[0])
    return ranges.reduce<PortRanges>((out, r) => {
      const last = out.at(-1)
      if (last !== undefined && r[0] <= last[1] + 1) {
        last[1] = Math.max(last[1], r[1])
      } else {
        out.push([r[0], r[1]])
      }
      return out
    }, [])
  })

const service = z.strictObject({
  enabled: z.boolean().default(true),
  local_address: hostPort,
  /**
   * More ports of the same host, for a tool that opens several (a dev server and its live reload):
   * a peer asking for one of them (`<peer>.peerup:<port>` through the SOCKS gateway) is connected
   * to that port of local_address's host.
   */
  ports: nullAsMissing(portRanges.default([])),
  /** Peer ids or names from `names:`; empty means every authorized peer. */
  allowed_peers: nullAsMissing(z.array(z.string()).default([])),
})

/**
 * A local port the daemon forwards to a peer's service (`peerup proxy add`). The peer is a name
 * from `names:`, resolved at each connection (so a renamed peer follows), or a peer id; a name
 * that does not resolve is reported when used, not refused here: renaming a peer must not make
 * the whole file invalid.
 */
const proxyEntry = z.strictObject({
  enabled: z.boolean().default(true),
  peer: z.string().refine((v) => NAME_PATTERN.test(v) || PEER_ID_SHAPE.test(v), {
    message: 'must be a name from names: or a peer id',
  }),
  service: serviceName,
  bind: proxyBind,
})

/** The default port of the SOCKS gateway (`socks.listen_address`): SOCKS's own, 1080. */
export const DEFAULT_SOCKS_PORT = 1080

/** The default port of the HTTP CONNECT listener beside it (docs/decisions/0009-gateway-names.md). */
export const DEFAULT_HTTP_CONNECT_PORT = 1081

/**
 * The gateway of the daemon (src/daemon/gateway.ts): SOCKS5 and HTTP CONNECT listeners whose
 * clients reach peers' services by name (`web.home.peerup`). Off by default.
 */
const socks = section({
  enabled: z.boolean().default(false),
  listen_address: listenHostPort.default(`127.0.0.1:${DEFAULT_SOCKS_PORT}`),
  /** Where HTTP CONNECT is served; empty: nowhere. */
  http_listen_address: z
    .string()
    .refine((v) => v === '' || listenHostPort.safeParse(v).success, {
      message: 'must be host:port, like 127.0.0.1:1081, with a port from 0 to 65535, or "" for none',
    })
    .default(`127.0.0.1:${DEFAULT_HTTP_CONNECT_PORT}`),
  /** With `password_file`: the username clients must give; required when a listener is not on loopback. */
  username: z.string().max(255, { message: 'must be at most 255 bytes (RFC 1929)' }).default(''),
  /** The password, alone in a file of its own (mode 0600), relative to this file's directory. */
  password_file: z.string().default(''),
})

/** Whether a listen address's host is loopback, where the gateway may go without a password. */
export function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host)
}

/** The default port of the web dashboard (`ui.listen_address`, docs/ui.md). */
export const DEFAULT_UI_PORT = 7780

/**
 * The daemon's web dashboard (src/daemon/ui.ts): off while `listen_address` is empty, and only
 * ever on loopback — its login is a link printed by `peerup ui`, not a password, so it must not be
 * reachable from another machine (docs/decisions/0014-web-dashboard.md).
 */
const ui = section({
  listen_address: z
    .string()
    .superRefine((v, ctx) => {
      if (v === '') {
        return
      }
      if (!listenHostPort.safeParse(v).success) {
        ctx.addIssue({
          code: 'custom',
          message: `must be host:port on loopback, like 127.0.0.1:${DEFAULT_UI_PORT}, or "" for off`,
        })
      } else if (!isLoopbackHost(parseHostPort(v).host)) {
        ctx.addIssue({
          code: 'custom',
          message: `${v} is not loopback: the dashboard serves only this machine (use 127.0.0.1:${DEFAULT_UI_PORT})`,
        })
      }
    })
    .default(''),
})

/** A gateway reachable beyond this machine needs a username and a password; one without the other is a mistake. */
function checkSocks(s: z.output<typeof socks>, ctx: z.core.$RefinementCtx): void {
  const issue = (key: string, message: string): void =>
    ctx.addIssue({ code: 'custom', path: ['socks', key], message })
  if ((s.username === '') !== (s.password_file === '')) {
    // Reported on the key that is there, so that the line number points at it.
    const [set, missing] = s.username === '' ? ['password_file', 'username'] : ['username', 'password_file']
    issue(set, `needs socks.${missing} too: set both, or neither`)
  }
  for (const key of ['listen_address', 'http_listen_address'] as const) {
    const address = s[key]
    if (s.enabled && address !== '' && s.username === '' && !isLoopbackHost(parseHostPort(address).host)) {
      issue(
        key,
        `${address} is not loopback: set socks.username and socks.password_file, so that clients beyond this machine must log in`,
      )
    }
  }
}

/** The node's `config.yaml`. */
export const nodeConfigSchema = z
  .strictObject({
    version,
    identity: section({
      key_file: relativePath.default('identity.key'),
    }),
    network: section({
      listen_addresses: nullAsMissing(
        z.array(multiaddrString).default(['/ip4/0.0.0.0/tcp/0', '/ip6/::/tcp/0', '/webrtc']),
      ),
      force_private_reachability: z.boolean().default(false),
    }),
    relay: section({
      addresses: nullAsMissing(z.array(peerMultiaddrString).default([])),
      reservation_interval: durationMs(10_000).default(120_000),
      // UDP port of the relays' STUN responders (their `stun.listen_address`); 0 = ask none.
      stun_port: z
        .number({ error: 'must be a UDP port number (0 to 65535)' })
        .int()
        .min(0)
        .max(65535)
        .default(DEFAULT_STUN_PORT),
    }),
    discovery: section({
      network: namespace.default(''),
      bootstrap_peers: nullAsMissing(z.array(peerMultiaddrString).default([])),
    }),
    security: section({
      authorized_keys_file: relativePath.default('authorized_keys'),
      enable_connection_gating: z.boolean().default(true),
    }),
    services: keyedByName(z.record(serviceName, service)),
    names: keyedByName(z.record(peerName, peerIdString)),
    proxies: keyedByName(z.record(proxyName, proxyEntry)),
    proxy: section({
      // How long a proxied connection waits for its peer to come back (docs/decisions/0006-sessions.md).
      resume_grace: durationMs(1000).default(120_000),
      // How long a new local connection of a proxy waits for its peer to become reachable.
      connect_timeout: durationMs(1000).default(30_000),
    }),
    socks,
    ui,
    telemetry: telemetry(9091),
    log,
  })
  .superRefine((config, ctx) => {
    checkSocks(config.socks, ctx)
    // Two proxies cannot listen on one address.
    const binds = new Map<string, string>()
    for (const [name, p] of Object.entries(config.proxies)) {
      const other = binds.get(p.bind)
      if (other !== undefined) {
        ctx.addIssue({
          code: 'custom',
          path: ['proxies', name, 'bind'],
          message: `${p.bind} is already the bind of proxy ${other}`,
        })
      }
      binds.set(p.bind, name)
    }
    // allowed_peers may name peers through `names:`; anything else must be a peer id.
    for (const [name, svc] of Object.entries(config.services)) {
      svc.allowed_peers.forEach((entry, i) => {
        if (config.names[entry] === undefined && !peerIdString.safeParse(entry).success) {
          ctx.addIssue({
            code: 'custom',
            path: ['services', name, 'allowed_peers', i],
            message: `${describe(entry)} is neither a peer id nor a name defined under names:`,
          })
        }
      })
    }
  })

/** The node's config after validation and defaults. Durations are milliseconds. */
export type NodeConfig = z.output<typeof nodeConfigSchema>

/**
 * Who may sponsor new peers at a relay (src/relay/pairing.ts): `paired`, a member for the peer it
 * has just paired with through this relay (the relay carried that peer's circuit to the member
 * while its invite was open); `marked`, the same but only members marked `sponsor=yes`; `any`,
 * any member for any peer id; `off`, nobody.
 */
export const SPONSORING_MODES = ['paired', 'marked', 'any', 'off'] as const

/** The relay's `relay-server.yaml`. */
export const relayConfigSchema = z.strictObject({
  version,
  identity: section({
    key_file: relativePath.default('relay_node.key'),
  }),
  network: section({
    listen_addresses: nullAsMissing(
      z
        .array(multiaddrString)
        .default([`/ip4/0.0.0.0/tcp/${DEFAULT_RELAY_PORT}`, `/ip6/::/tcp/${DEFAULT_RELAY_PORT}`]),
    ),
    announce_addresses: nullAsMissing(z.array(multiaddrString).default([])),
  }),
  discovery: section({
    network: namespace.default(''),
  }),
  security: section({
    authorized_keys_file: relativePath.default('relay_authorized_keys'),
    enable_connection_gating: z.boolean().default(true),
    sponsoring: z.enum(SPONSORING_MODES).default('paired'),
  }),
  resources: section({
    max_reservations: z.number().int().min(1).default(2048),
    max_reservations_per_ip: z.number().int().min(1).default(128),
    max_circuits: z.number().int().min(1).default(1024),
    max_connections: z.number().int().min(16).default(4096),
    reservation_ttl: durationMs(60_000).default(3_600_000),
    session_duration: durationMs().default(0),
    session_data_limit: byteSize.default(0),
    unknown_peer_session_duration: durationMs(1000).default(120_000),
    unknown_peer_data_limit: byteSize.default(128 * 1024),
    max_pending_per_ip: z.number().int().min(1).default(16),
    max_unknown_connections_per_ip: z.number().int().min(1).default(16),
    max_unknown_circuits_per_ip: z.number().int().min(1).default(4),
    unknown_circuits_per_minute_per_ip: z.number().int().min(1).default(30),
    unknown_peer_idle_timeout: durationMs(1000).default(15_000),
  }),
  stun: section({
    enabled: z.boolean().default(true),
    listen_address: listenHostPort.default(`0.0.0.0:${DEFAULT_STUN_PORT}`),
    // A second responder on another port ('' = none), announced as RFC 5780 OTHER-ADDRESS, so that
    // `peerup doctor` on a node with one relay can tell a symmetric NAT from a cone
    // (docs/decisions/0012-doctor-nat-and-clock.md).
    alternate_listen_address: z.union([z.literal(''), listenHostPort]).default(''),
  }),
  // The splice port (src/relay/splice.ts): members' bulk transfers joined as plain TCP.
  splice: section({
    enabled: z.boolean().default(true),
    listen_address: listenHostPort.default(`0.0.0.0:${DEFAULT_SPLICE_PORT}`),
  }),
  health: section({
    enabled: z.boolean().default(true),
    listen_address: listenHostPort.default('127.0.0.1:9090'),
  }),
  telemetry: telemetry(9092),
  log,
})

/** The relay's config after validation and defaults. Durations are milliseconds, sizes bytes. */
export type RelayConfig = z.output<typeof relayConfigSchema>
