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

import { once } from 'node:events'
import * as http from 'node:http'
import { prometheusMetrics } from '@libp2p/prometheus-metrics'
import { AggregatorRegistry, Counter, Gauge, Registry } from 'prom-client'
import type { Logger } from '../log/index.ts'
import { formatHostPort, parseHostPort } from '../util/address.ts'
import type { Component } from '../util/components.ts'
import { closeHttpServer } from '../util/socket.ts'
import { VERSION } from '../version.ts'

/**
 * A registry of our own with `peerup_info` (always 1, the version and `role` as labels), and the
 * makers of the families registered in it.
 */
function familiesIn(role: string) {
  const registry = new Registry()
  const registers = [registry]
  const counter = <L extends string = string>(name: string, help: string, labelNames: readonly L[] = []) =>
    new Counter({ name, help, labelNames, registers })
  const gauge = <L extends string = string>(name: string, help: string, labelNames: readonly L[] = []) =>
    new Gauge({ name, help, labelNames, registers })
  gauge('peerup_info', 'Build information: always 1, with the version as a label', ['version', 'role']).set(
    { version: VERSION, role },
    1,
  )
  return { registry, counter, gauge }
}

export type NodeMetrics = ReturnType<typeof createNodeMetrics>

export type RelayMetrics = ReturnType<typeof createRelayMetrics>

/** The registry and families of a daemon. */
export function createNodeMetrics() {
  const { registry, counter, gauge } = familiesIn('node')
  return {
    registry,
    /** libp2p's own metrics into this registry ({@link libp2pMetricsInto}), for the node to start with. */
    libp2p: () => libp2pMetricsInto(registry),
    proxyBytes: counter(
      'peerup_proxy_bytes_total',
      'Bytes moved by proxied connections; direction in = from the peer, out = to the peer',
      ['direction', 'service'],
    ),
    peerBytes: counter(
      'peerup_proxy_peer_bytes_total',
      'Bytes moved by proxied connections by peer, service and side; direction in = from the peer, out = to the peer',
      ['peer', 'service', 'side', 'direction'],
    ),
    proxyConnections: counter(
      'peerup_proxy_connections_total',
      'Proxied connections opened; side inbound = a peer used our service, outbound = we used a peer’s',
      ['service', 'side'],
    ),
    proxyActive: gauge('peerup_proxy_active_connections', 'Proxied connections open now', [
      'service',
      'side',
    ]),
    authDecisions: counter(
      'peerup_auth_decisions_total',
      'Inbound connections checked against authorized_keys, by decision',
      ['decision'],
    ),
    serviceDenials: counter('peerup_service_denials_total', 'Service streams refused by allowed_peers', [
      'service',
    ]),
    refusals: counter(
      'peerup_refusals_total',
      'What peers not in authorized_keys asked for and were refused or shed, by what and why',
      ['what', 'reason'],
    ),
    daemonRequests: counter(
      'peerup_daemon_requests_total',
      'Local API requests, by method, route and status',
      ['method', 'path', 'status'],
    ),
    pathDials: counter(
      'peerup_path_dial_total',
      'Attempts to reach a peer, by the path that won (or unknown) and result',
      ['path_type', 'result'],
    ),
    connectedPeers: gauge('peerup_connected_peers', 'Peers connected now, by the path new streams take', [
      'path_type',
    ]),
    sessions: gauge(
      'peerup_sessions',
      'Resumable sessions not over; side opened = to a peer’s service, accepted = for ours; state attached or waiting (for their link to come back)',
      ['side', 'state'],
    ),
    sessionEvents: counter(
      'peerup_session_events_total',
      'What sessions did: resumed (attached again after losing their link), moved (to a direct path), expired (the grace period ended)',
      ['side', 'event'],
    ),
    directAttempts: counter(
      'peerup_direct_upgrade_attempts_total',
      'Attempts to upgrade a relayed connection to a direct one',
    ),
    directSuccesses: counter(
      'peerup_direct_upgrade_successes_total',
      'Relayed connections upgraded to direct, by the transport that worked',
      ['transport'],
    ),
    directFailures: counter(
      'peerup_direct_upgrade_failures_total',
      'Upgrade attempts that failed (symmetric NAT, blocked UDP)',
    ),
    timeToDirectSum: counter(
      'peerup_direct_time_to_direct_seconds_sum',
      'Sum of the times from a relayed connection to its direct upgrade',
    ),
    timeToDirectCount: counter(
      'peerup_direct_time_to_direct_seconds_count',
      'Number of upgrades timed in peerup_direct_time_to_direct_seconds_sum',
    ),
  }
}

export { setCounter } from './counters.ts'

/** The registry and families of a relay. */
export function createRelayMetrics() {
  const { registry, counter, gauge } = familiesIn('relay')
  return {
    registry,
    reservations: gauge('peerup_relay_reservations', 'Reservations held now'),
    circuits: gauge('peerup_relay_circuits', 'Relayed connections open now'),
    relayedBytes: counter(
      'peerup_relay_relayed_bytes_total',
      'Bytes forwarded between the two halves of relayed connections, both directions',
    ),
    refusals: counter(
      'peerup_relay_refusals_total',
      'Reservations and relayed connections refused, by what and why',
      ['what', 'reason'],
    ),
    authDecisions: counter(
      'peerup_auth_decisions_total',
      'Reservation requests checked against relay_authorized_keys, by decision',
      ['decision'],
    ),
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

/**
 * One registry of several (each network's, labelled `network="<name>"` by default: src/daemon/network-stack.ts),
 * for one scrape: their samples side by side under one HELP and TYPE per family. One registry is
 * served as it is.
 */
export async function mergedRegistry(registries: Registry[]): Promise<Registry> {
  if (registries.length === 1) {
    return registries[0] as Registry
  }
  const all = await Promise.all(registries.map((r) => r.getMetricsAsJSON()))
  // Samples differ by their network label, so "sum" (the default) adds nothing to anything.
  return AggregatorRegistry.aggregate(all as never) as unknown as Registry
}

export interface MetricsServerComponents {
  /** The registry served, or how to make it at each scrape. */
  registry: Registry | (() => Promise<Registry>)
  log: Logger
}

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
  readonly #init: MetricsServerInit
  #server: http.Server | undefined
  #address: string | undefined

  constructor(components: MetricsServerComponents, init: MetricsServerInit = {}) {
    this.#components = components
    this.#init = init
  }

  /** `host:port` it listens on; only once started. */
  get address(): string {
    if (this.#address === undefined) {
      throw new Error('the metrics endpoint is not listening')
    }
    return this.#address
  }

  async start(): Promise<void> {
    const { registry, log } = this.#components
    const listen = this.#init.listenAddress ?? '127.0.0.1:0'
    const { host, port } = parseHostPort(listen)
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
      this.#init.beforeScrape?.()
      Promise.resolve(typeof registry === 'function' ? registry() : registry)
        .then(async (r) => [await r.metrics(), r.contentType] as const)
        .then(([text, contentType]) => res.writeHead(200, { 'Content-Type': contentType }).end(text))
        .catch((err: unknown) => res.writeHead(500).end(`${(err as Error).message}\n`))
    })
    // Rejects with the listen error (a port in use), as 'error' comes instead of 'listening'.
    await once(server.listen(port, host), 'listening')
    const bound = server.address() as { port: number }
    this.#server = server
    this.#address = formatHostPort(host, bound.port)
    log.info('metrics served', { listen: this.#address })
  }

  async stop(): Promise<void> {
    const server = this.#server
    this.#server = undefined
    if (server !== undefined) {
      await closeHttpServer(server)
    }
  }
}
