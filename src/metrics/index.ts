/**
 * Prometheus metrics (docs/observability.md): a registry of our own per daemon or relay — never
 * prom-client's global one, which every node in a process would share (and which libp2p's metrics
 * clear, see {@link libp2pMetricsInto}) — holding libp2p's metrics and the `peerup_*` families,
 * served on a loopback `/metrics`. Everything that records goes through the `Observer`
 * (src/metrics/observer.ts), whose methods do nothing when metrics and the audit log are off, so
 * call sites never check.
 *
 * @packageDocumentation
 */

import * as http from 'node:http'
import { prometheusMetrics } from '@libp2p/prometheus-metrics'
import { Counter, Gauge, Registry } from 'prom-client'
import type { Logger } from '../log/index.ts'
import type { Component } from '../util/components.ts'
import { closeHttpServer } from '../util/socket.ts'
import { VERSION } from '../version.ts'

/** Families of a node (daemon). */
export interface NodeMetrics {
  registry: Registry
  proxyBytes: Counter<'direction' | 'service'>
  proxyConnections: Counter<'service' | 'side'>
  proxyActive: Gauge<'service' | 'side'>
  authDecisions: Counter<'decision'>
  serviceDenials: Counter<'service'>
  daemonRequests: Counter<'method' | 'path' | 'status'>
  pathDials: Counter<'path_type' | 'result'>
  connectedPeers: Gauge<'path_type'>
  refusals: Counter<'what' | 'reason'>
  directAttempts: Counter
  directSuccesses: Counter<'transport'>
  directFailures: Counter
  timeToDirectSum: Counter
  timeToDirectCount: Counter
  sessions: Gauge<'side' | 'state'>
  sessionEvents: Counter<'side' | 'event'>
}

/** Families of a relay. */
export interface RelayMetrics {
  registry: Registry
  reservations: Gauge
  circuits: Gauge
  relayedBytes: Counter
  refusals: Counter<'what' | 'reason'>
  authDecisions: Counter<'decision'>
}

function info(registry: Registry, role: string): void {
  const g = new Gauge({
    name: 'peerup_info',
    help: 'Build information: always 1, with the version as a label',
    labelNames: ['version', 'role'],
    registers: [registry],
  })
  g.set({ version: VERSION, role }, 1)
}

/** The registry and families of a daemon. */
export function createNodeMetrics(): NodeMetrics {
  const registry = new Registry()
  info(registry, 'node')
  const registers = [registry]
  return {
    registry,
    proxyBytes: new Counter({
      name: 'peerup_proxy_bytes_total',
      help: 'Bytes moved by proxied connections; direction in = from the peer, out = to the peer',
      labelNames: ['direction', 'service'],
      registers,
    }),
    proxyConnections: new Counter({
      name: 'peerup_proxy_connections_total',
      help: 'Proxied connections opened; side inbound = a peer used our service, outbound = we used a peer’s',
      labelNames: ['service', 'side'],
      registers,
    }),
    proxyActive: new Gauge({
      name: 'peerup_proxy_active_connections',
      help: 'Proxied connections open now',
      labelNames: ['service', 'side'],
      registers,
    }),
    authDecisions: new Counter({
      name: 'peerup_auth_decisions_total',
      help: 'Inbound connections checked against authorized_keys, by decision',
      labelNames: ['decision'],
      registers,
    }),
    serviceDenials: new Counter({
      name: 'peerup_service_denials_total',
      help: 'Service streams refused by allowed_peers',
      labelNames: ['service'],
      registers,
    }),
    refusals: new Counter({
      name: 'peerup_refusals_total',
      help: 'What peers not in authorized_keys asked for and were refused or shed, by what and why',
      labelNames: ['what', 'reason'],
      registers,
    }),
    daemonRequests: new Counter({
      name: 'peerup_daemon_requests_total',
      help: 'Local API requests, by method, route and status',
      labelNames: ['method', 'path', 'status'],
      registers,
    }),
    pathDials: new Counter({
      name: 'peerup_path_dial_total',
      help: 'Attempts to reach a peer, by the path that won (or unknown) and result',
      labelNames: ['path_type', 'result'],
      registers,
    }),
    connectedPeers: new Gauge({
      name: 'peerup_connected_peers',
      help: 'Peers connected now, by the path new streams take',
      labelNames: ['path_type'],
      registers,
    }),
    sessions: new Gauge({
      name: 'peerup_sessions',
      help: 'Resumable sessions not over; side opened = to a peer’s service, accepted = for ours; state attached or waiting (for their link to come back)',
      labelNames: ['side', 'state'],
      registers,
    }),
    sessionEvents: new Counter({
      name: 'peerup_session_events_total',
      help: 'What sessions did: resumed (attached again after losing their link), moved (to a direct path), expired (the grace period ended)',
      labelNames: ['side', 'event'],
      registers,
    }),
    directAttempts: new Counter({
      name: 'peerup_direct_upgrade_attempts_total',
      help: 'Attempts to upgrade a relayed connection to a direct one',
      registers,
    }),
    directSuccesses: new Counter({
      name: 'peerup_direct_upgrade_successes_total',
      help: 'Relayed connections upgraded to direct, by the transport that worked',
      labelNames: ['transport'],
      registers,
    }),
    directFailures: new Counter({
      name: 'peerup_direct_upgrade_failures_total',
      help: 'Upgrade attempts that failed (symmetric NAT, blocked UDP)',
      registers,
    }),
    timeToDirectSum: new Counter({
      name: 'peerup_direct_time_to_direct_seconds_sum',
      help: 'Sum of the times from a relayed connection to its direct upgrade',
      registers,
    }),
    timeToDirectCount: new Counter({
      name: 'peerup_direct_time_to_direct_seconds_count',
      help: 'Number of upgrades timed in peerup_direct_time_to_direct_seconds_sum',
      registers,
    }),
  }
}

/** Sets a counter to a total kept elsewhere (read at scrape time). */
export function setCounter<L extends string>(
  counter: Counter<L>,
  value: number,
  labels?: Partial<Record<L, string>>,
): void {
  if (labels === undefined) {
    counter.reset()
    counter.inc(value)
  } else {
    counter.remove(labels as never)
    counter.inc(labels as never, value)
  }
}

/** The registry and families of a relay. */
export function createRelayMetrics(): RelayMetrics {
  const registry = new Registry()
  info(registry, 'relay')
  const registers = [registry]
  return {
    registry,
    reservations: new Gauge({ name: 'peerup_relay_reservations', help: 'Reservations held now', registers }),
    circuits: new Gauge({ name: 'peerup_relay_circuits', help: 'Relayed connections open now', registers }),
    relayedBytes: new Counter({
      name: 'peerup_relay_relayed_bytes_total',
      help: 'Bytes forwarded between the two halves of relayed connections, both directions',
      registers,
    }),
    refusals: new Counter({
      name: 'peerup_relay_refusals_total',
      help: 'Reservations and relayed connections refused, by what and why',
      labelNames: ['what', 'reason'],
      registers,
    }),
    authDecisions: new Counter({
      name: 'peerup_auth_decisions_total',
      help: 'Reservation requests checked against relay_authorized_keys, by decision',
      labelNames: ['decision'],
      registers,
    }),
  }
}

/**
 * libp2p's own metrics, into `registry`. Each node clears prom-client's per-process cache of
 * libp2p metric objects (`preserveExistingMetrics: false`), so a second node in one process
 * registers fresh ones in its own registry; the global registry it also clears is not ours.
 */
export function libp2pMetricsInto(registry: Registry): ReturnType<typeof prometheusMetrics> {
  return prometheusMetrics({ registry, preserveExistingMetrics: false, collectDefaultMetrics: true })
}

/** What a {@link MetricsServer} serves and logs to. */
export interface MetricsServerComponents {
  registry: Registry
  log: Logger
}

/** Settings of a {@link MetricsServer}. */
export interface MetricsServerInit {
  /** `host:port` (config `telemetry.metrics.listen_address`); loopback port 0 by default. */
  listenAddress?: string
  /** Brings gauges and totals kept elsewhere up to date just before each scrape. */
  beforeScrape?: () => void
}

/**
 * `GET /metrics` from the registry: `start()` listens (with a warning when the address is not
 * loopback), `stop()` closes the listener and every connection.
 */
export class MetricsServer implements Component {
  readonly #components: MetricsServerComponents
  readonly #listen: string
  readonly #beforeScrape: (() => void) | undefined
  #server: http.Server | undefined
  #address: string | undefined

  constructor(components: MetricsServerComponents, init: MetricsServerInit = {}) {
    this.#components = components
    this.#listen = init.listenAddress ?? '127.0.0.1:0'
    this.#beforeScrape = init.beforeScrape
  }

  /** `host:port` it listens on; only once started. */
  get address(): string {
    if (this.#address === undefined) {
      throw new Error('the metrics endpoint is not listening')
    }
    return this.#address
  }

  /** Listens on the configured address. */
  async start(): Promise<void> {
    const { registry, log } = this.#components
    const listen = this.#listen
    const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(listen)
    const host = m?.[1] ?? m?.[2] ?? '127.0.0.1'
    const port = Number(m?.[3] ?? 0)
    if (!/^(127\.|::1$|localhost$)/.test(host)) {
      log.warn('metrics are served on a non-loopback address: anyone who reaches it can read them', {
        listen,
      })
    }
    const server = http.createServer((req, res) => {
      if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
        res.writeHead(404, { 'Content-Type': 'text/plain' }).end('only GET /metrics here\n')
        return
      }
      this.#beforeScrape?.()
      registry
        .metrics()
        .then((text) => res.writeHead(200, { 'Content-Type': registry.contentType }).end(text))
        .catch((err: unknown) => res.writeHead(500).end(`${(err as Error).message}\n`))
    })
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(port, host, () => {
        server.off('error', reject)
        resolve()
      })
    })
    const bound = server.address() as { port: number }
    this.#server = server
    this.#address = host.includes(':') ? `[${host}]:${bound.port}` : `${host}:${bound.port}`
    log.info('metrics served', { listen: this.#address })
  }

  /** Closes the listener and every connection. */
  async stop(): Promise<void> {
    const server = this.#server
    this.#server = undefined
    if (server === undefined) {
      return
    }
    await closeHttpServer(server)
  }
}
