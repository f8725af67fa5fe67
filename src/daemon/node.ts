/**
 * The daemon's node runtime (src/p2p/runtime.ts) as one of its components, and the gauges and
 * totals the node keeps that `/metrics` reads from it.
 *
 * @packageDocumentation
 */

import { setCounter } from '../metrics/counters.ts'
import type { NodeMetrics } from '../metrics/index.ts'
import { type NodeRuntime, startNodeRuntime } from '../p2p/runtime.ts'
import type { SessionCounts } from '../pipe/session.ts'
import { sumBy } from '../proxy/connections.ts'
import type { Component } from '../util/components.ts'
import type { DaemonComponents } from './run.ts'

/** What {@link DaemonNode} reads when it starts (the observer: the telemetry's, started before it). */
type DaemonNodeComponents = Pick<DaemonComponents, 'observer' | 'log'>

export interface DaemonNodeInit {
  configFile: string
  /** The daemon's metric families, into whose registry libp2p's metrics go; none when metrics are off. */
  metrics?: NodeMetrics | undefined
}

/**
 * The node runtime with the config's services exposed and reservations held: `start()` starts
 * it, `stop()` stops it. The components after it in the daemon's list read
 * {@link DaemonNode.runtime}.
 */
export class DaemonNode implements Component {
  readonly #components: DaemonNodeComponents
  readonly #init: DaemonNodeInit
  #runtime: NodeRuntime | undefined

  constructor(components: DaemonNodeComponents, init: DaemonNodeInit) {
    this.#components = components
    this.#init = init
  }

  /** The running node; only once started (it stays readable after the stop). */
  get runtime(): NodeRuntime {
    if (this.#runtime === undefined) {
      throw new Error('the node has not started')
    }
    return this.#runtime
  }

  async start(): Promise<void> {
    const { metrics, configFile } = this.#init
    this.#runtime = await startNodeRuntime({
      configFile,
      log: this.#components.log,
      exposeServices: true,
      observer: this.#components.observer,
      ...(metrics === undefined ? {} : { libp2pMetrics: metrics.libp2p() }),
    })
  }

  async stop(): Promise<void> {
    await this.#runtime?.stop()
  }
}

/** Gauges and totals kept by the node itself, read into the registry just before a scrape. */
export function refreshNodeMetrics(metrics: NodeMetrics, rt: NodeRuntime): void {
  const byType = { DIRECT: 0, RELAYED: 0 }
  for (const p of rt.paths.list()) {
    if (p.path !== undefined) {
      byType[p.path.type]++
    }
  }
  for (const [pathType, n] of Object.entries(byType)) {
    metrics.connectedPeers.set({ path_type: pathType }, n)
  }
  const c = rt.paths.counters()
  setCounter(metrics.directAttempts, c.attempts)
  setCounter(metrics.directFailures, c.failures)
  for (const [transport, n] of Object.entries(c.successes)) {
    setCounter(metrics.directSuccesses, n, { transport })
  }
  setCounter(metrics.timeToDirectSum, c.timeToDirectSumMs / 1000)
  setCounter(metrics.timeToDirectCount, c.timeToDirectCount)
  refreshByteMetrics(metrics, rt)
  for (const [side, counts] of Object.entries(sessionCounts(rt))) {
    metrics.sessions.set({ side, state: 'attached' }, counts.open - counts.waiting)
    metrics.sessions.set({ side, state: 'waiting' }, counts.waiting)
    for (const event of ['resumed', 'moved', 'expired'] as const) {
      setCounter(metrics.sessionEvents, counts[event], { side, event })
    }
  }
}

/**
 * The bytes of proxied connections, from the node's table of them (src/proxy/connections.ts):
 * pipe() counts each connection's bytes there, and nothing on the data path counts them again.
 */
function refreshByteMetrics(metrics: NodeMetrics, rt: NodeRuntime): void {
  const totals = rt.connections.totals()
  for (const t of totals) {
    const labels = { peer: t.peerId, service: t.service, side: t.side }
    setCounter(metrics.peerBytes, t.bytesIn, { ...labels, direction: 'in' })
    setCounter(metrics.peerBytes, t.bytesOut, { ...labels, direction: 'out' })
  }
  for (const { of, bytesIn, bytesOut } of sumBy(totals, (t) => t.service)) {
    setCounter(metrics.proxyBytes, bytesIn, { service: of.service, direction: 'in' })
    setCounter(metrics.proxyBytes, bytesOut, { service: of.service, direction: 'out' })
  }
}

/** The counts of the sessions the node opened and of those it accepted. */
export function sessionCounts(rt: NodeRuntime): { opened: SessionCounts; accepted: SessionCounts } {
  return {
    opened: rt.sessions.counts(),
    accepted: rt.acceptedSessions?.counts() ?? { open: 0, waiting: 0, resumed: 0, moved: 0, expired: 0 },
  }
}
