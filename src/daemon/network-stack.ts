/**
 * One network of the daemon (docs/cli.md "Several networks", docs/decisions/0017-several-networks.md):
 * a node directory's own components — telemetry, the node runtime with its libp2p node, gater
 * and authorized_keys, events, proxies, the gateway, group catch-up, the reload of its files and
 * the confirmation of its `config apply` — as one component. The daemon runs one stack per network;
 * what they share (the API socket and cookie, `/metrics`, the dashboard, systemd) is the daemon's.
 * A network is isolated from the others by being a libp2p node of its own: a peer authorized in
 * one cannot reach a service of another.
 *
 * @packageDocumentation
 */

import { archiveLastGood, readPending } from '../config/safety.ts'
import { GroupCatchUp } from '../invite/catchup.ts'
import type { Logger } from '../log/index.ts'
import type { NodeMetrics } from '../metrics/index.ts'
import type { Observer } from '../metrics/observer.ts'
import { Telemetry } from '../metrics/telemetry.ts'
import type { NodeRuntime } from '../p2p/runtime.ts'
import { type Component, Deferred, startAll, stopAll } from '../util/components.ts'
import type { DaemonApiSocket } from './api-socket.ts'
import { ApplyConfirmation, settleApplyAtStart } from './confirm.ts'
import { DaemonEvents } from './events.ts'
import { ConfigGateway } from './gateway.ts'
import { DaemonNode, refreshNodeMetrics } from './node.ts'
import { PersistentProxies } from './persistent-proxies.ts'
import { ProxyManager } from './proxies.ts'
import { ConfigApplier, FileFollower } from './reload.ts'
import type { DaemonContext, Handlers, NetworksControl } from './routes/index.ts'
import { handlersFor } from './routes/index.ts'
import type { DaemonComponents } from './run.ts'
import type { DaemonUi } from './ui.ts'

/** What a stack takes from the daemon: its logger, and the daemon-wide parts it is served through. */
export interface NetworkStackComponents {
  log: Logger
  /** The daemon's API socket and dashboard (read later: the routes are made after the stacks start). */
  readonly api: DaemonApiSocket
  readonly ui: DaemonUi
  networks: NetworksControl
  /** Starts the daemon's orderly shutdown. */
  shutdown(reason: Error): void
}

export interface NetworkStackInit {
  name: string
  configFile: string
  /** The daemon's own config directory (its start settled a pending apply already). */
  main: boolean
  /** Makes its metric families when metrics are on (the main config's `telemetry.metrics`): a registry of its own, labelled with the network. */
  metrics?: (() => NodeMetrics) | undefined
  /** The network's audit log settings (its own config's `telemetry.audit`). */
  audit: { enabled: boolean; file: string }
  dir: string
}

/** The components of one network, in the order they start. */
export class NetworkStack implements Component {
  readonly name: string
  readonly configFile: string
  readonly main: boolean
  /** Its metric families, labelled `network="<name>"`, when metrics are on. */
  readonly metrics: NodeMetrics | undefined
  readonly shared: DaemonComponents
  readonly confirmation: ApplyConfirmation
  readonly #list: Component[]
  readonly #node: DaemonNode
  readonly #events: Deferred<DaemonEvents>
  readonly #log: Logger
  #handlers: { ctx: DaemonContext; handlers: Handlers } | undefined
  #running = false
  #toldStopping = false

  constructor(components: NetworkStackComponents, init: NetworkStackInit) {
    this.name = init.name
    this.configFile = init.configFile
    this.main = init.main
    const log = init.main ? components.log : components.log.child(`net.${init.name}`)
    this.#log = log
    this.metrics = init.metrics?.()
    this.metrics?.registry.setDefaultLabels({ network: init.name })
    const telemetry = new Telemetry({ node: this.metrics, audit: init.audit, dir: init.dir })
    const node = new DaemonNode(
      {
        log,
        get observer() {
          return telemetry.observer
        },
      },
      { configFile: init.configFile, metrics: this.metrics },
    )
    this.#node = node
    const shared: DaemonComponents = {
      log,
      get observer(): Observer {
        return telemetry.observer
      },
      get runtime(): NodeRuntime {
        return node.runtime
      },
      get events() {
        return events.value
      },
      get proxies() {
        return proxies.value
      },
      get persistentProxies() {
        return persistentProxies
      },
      get gateway() {
        return gateway
      },
      get configApplier() {
        return configApplier
      },
      get api() {
        return components.api
      },
      get ui() {
        return components.ui
      },
      shutdown: (reason) => components.shutdown(reason),
    }
    this.shared = shared
    const events = new Deferred(() => new DaemonEvents(node.runtime))
    this.#events = events
    const proxies = new Deferred(
      () => new ProxyManager(node.runtime, log.child('proxies'), telemetry.observer),
    )
    const persistentProxies = new PersistentProxies(shared)
    const gateway = new ConfigGateway(shared)
    const configApplier = new ConfigApplier(shared)
    this.confirmation = new ApplyConfirmation(shared)
    this.#list = [
      telemetry,
      node,
      events,
      proxies,
      persistentProxies,
      gateway,
      // Group members who joined while this machine was not waiting: learned from the relay each
      // time a reservation is (re)gained.
      new GroupCatchUp(shared),
      new FileFollower(shared),
      this.confirmation,
      {
        // The routes' handlers, once everything they use runs.
        start: () => {
          const ctx = this.#context(components)
          this.#handlers = { ctx, handlers: handlersFor(ctx) }
        },
        stop: () => {
          this.#handlers = undefined
        },
      },
    ]
  }

  /** Whether it runs (started and not stopped). */
  get running(): boolean {
    return this.#running
  }

  /** The running node. */
  get runtime(): NodeRuntime {
    return this.#node.runtime
  }

  /** The routes' context and handlers of this network; only while it runs. */
  get handlers(): { ctx: DaemonContext; handlers: Handlers } {
    if (this.#handlers === undefined) {
      throw new Error(`network ${this.name} does not run`)
    }
    return this.#handlers
  }

  async start(): Promise<void> {
    if (!this.main) {
      // The main config's was settled before the daemon loaded it (src/daemon/run.ts).
      await settleApplyAtStart(this.configFile, this.#log)
    }
    await startAll(this.#list, (err, c) => this.#stopFailed(err, c))
    this.#running = true
    if (!this.main && (await readPending(this.configFile)) === undefined) {
      await archiveLastGood(this.configFile)
    }
  }

  async stop(): Promise<void> {
    // Watchers of this network's events learn it stops: their streams end.
    this.publishStopping()
    this.#running = false
    await stopAll(this.#list, (err, c) => this.#stopFailed(err, c))
  }

  /** Brings the gauges and totals the node keeps into its registry (before a scrape). */
  refreshMetrics(): void {
    if (this.metrics !== undefined && this.#running) {
      refreshNodeMetrics(this.metrics, this.#node.runtime)
    }
  }

  /** Tells this network's watchers that the daemon stops. */
  publishStopping(): void {
    if (!this.#toldStopping && this.#handlers !== undefined) {
      this.#toldStopping = true
      this.#events.value.publish({ type: 'stopping', time: new Date().toISOString() })
    }
  }

  #context(components: NetworkStackComponents): DaemonContext {
    const s = this.shared
    return {
      rt: s.runtime,
      proxies: s.proxies,
      persistentProxies: s.persistentProxies,
      events: s.events,
      log: s.log,
      observer: s.observer,
      ui: components.ui,
      startedAt: new Date(),
      shutdown: () => components.shutdown(new Error('shutdown requested through the API')),
      networks: components.networks,
      networkName: this.name,
    }
  }

  #stopFailed(err: unknown, component: Component): void {
    this.#log.warn('cleanup step failed', {
      component: component.constructor?.name ?? 'component',
      error: err as Error,
    })
  }
}
