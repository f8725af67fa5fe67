/**
 * The daemon's networks (docs/cli.md "Several networks"): one {@link NetworkStack} per network of
 * the layout (src/config/networks.ts) — the main config's directory first, then each directory of
 * `networks/` — started and stopped one by one without touching the others. The API serves each
 * request from the network its `?network=` names (src/daemon/server.ts); `/v1/networks` lists,
 * starts and stops them.
 *
 * @packageDocumentation
 */

import * as path from 'node:path'
import type { NetworkState } from '../api/index.ts'
import { loadNodeConfig } from '../config/load.ts'
import { findNetwork, listNetworks, type NetworkEntry, readSelectedNetwork } from '../config/networks.ts'
import { ConflictError, NotFoundError, UsageError } from '../errors.ts'
import type { Logger } from '../log/index.ts'
import type { NodeMetrics } from '../metrics/index.ts'
import type { Component } from '../util/components.ts'
import type { DaemonApiSocket } from './api-socket.ts'
import { NetworkStack } from './network-stack.ts'
import type { NetworksControl } from './routes/index.ts'
import type { NetworkSelect } from './server.ts'
import type { DaemonUi } from './ui.ts'

export interface DaemonNetworksComponents {
  log: Logger
  readonly api: DaemonApiSocket
  readonly ui: DaemonUi
  shutdown(reason: Error): void
}

export interface DaemonNetworksInit {
  /** The daemon's config: the main network. */
  mainConfigFile: string
  /**
   * Makes a network's metric families, when metrics are on (the main config's
   * `telemetry.metrics.enabled`); the daemon loads prom-client only then
   * (docs/decisions/0018-daemon-idle-memory.md).
   */
  createMetrics?: (() => NodeMetrics) | undefined
}

const LIST_HINT = '`peerup network list` shows the names'

/**
 * `start()` starts the main network (a failure is the daemon's) and then every further one (a
 * failure is logged and shown by `network list`, and the others run); `stop()` stops them all,
 * the further ones first.
 */
export class DaemonNetworks implements Component, NetworksControl {
  readonly #components: DaemonNetworksComponents
  readonly #init: DaemonNetworksInit
  readonly #stacks = new Map<string, NetworkStack>()
  readonly #errors = new Map<string, string>()
  /** Every stack that started, running or not now: their `config apply` confirmations. */
  readonly #started = new Set<NetworkStack>()
  /** One start or stop at a time. */
  #queue: Promise<unknown> = Promise.resolve()
  #main: NetworkStack | undefined

  constructor(components: DaemonNetworksComponents, init: DaemonNetworksInit) {
    this.#components = components
    this.#init = init
  }

  /** The main network's stack; only once started. */
  get main(): NetworkStack {
    if (this.#main === undefined) {
      throw new Error('the networks have not started')
    }
    return this.#main
  }

  /**
   * Config keys that need the daemon to run again (an unconfirmed apply of some network's config
   * was undone and needs a fresh start), or undefined.
   */
  get restart(): string[] | undefined {
    return [...this.#started].map((s) => s.confirmation.restart).find((r) => r !== undefined)
  }

  /** The stacks that run, the main one first. */
  get running(): NetworkStack[] {
    return [...this.#stacks.values()]
  }

  async start(): Promise<void> {
    const [main, ...extras] = await listNetworks(this.#init.mainConfigFile)
    const stack = await this.#stack(main as NetworkEntry)
    await stack.start()
    this.#started.add(stack)
    this.#main = stack
    this.#stacks.set(stack.name, stack)
    for (const entry of extras) {
      await this.#startExtra(entry).catch(() => {})
    }
  }

  async stop(): Promise<void> {
    await this.#queue.catch(() => {})
    for (const stack of [...this.#stacks.values()].reverse()) {
      this.#stacks.delete(stack.name)
      await stack.stop()
    }
  }

  /** Tells every network's watchers that the daemon stops. */
  publishStopping(): void {
    for (const stack of this.#stacks.values()) {
      stack.publishStopping()
    }
  }

  /** What the API serves a request from: the network it names, else the one `network use` chose, else the main one. */
  readonly select: NetworkSelect = async (network) => {
    const name = network ?? (await this.#selected())
    const stack = this.#stacks.get(name)
    if (stack === undefined || !stack.running) {
      const known = await listNetworks(this.#init.mainConfigFile).catch(() => [])
      const exists = known.some((n) => n.name === name)
      throw new NotFoundError(
        exists
          ? `network ${name} does not run in this daemon`
          : `unknown network ${JSON.stringify(name)} (networks here: ${known.map((n) => n.name).join(', ')})`,
        { hint: exists ? `start it with \`peerup network start ${name}\`` : LIST_HINT },
      )
    }
    return stack.handlers
  }

  async list(): Promise<NetworkState[]> {
    const selected = await this.#selected()
    const onDisk = await listNetworks(this.#init.mainConfigFile)
    // A network that runs though its directory went away (moved by hand) is listed too: it still runs.
    const gone = [...this.#stacks.values()]
      .filter((s) => !onDisk.some((e) => e.name === s.name))
      .map((s) => ({ name: s.name, dir: path.dirname(s.configFile), configFile: s.configFile, main: s.main }))
    const entries = [...onDisk, ...gone]
    return entries.map((entry) => {
      const stack = this.#stacks.get(entry.name)
      const base: NetworkState = {
        name: entry.name,
        main: entry.main,
        selected: entry.name === selected,
        dir: entry.dir,
        configFile: entry.configFile,
        running: stack?.running === true,
      }
      if (stack?.running === true) {
        const rt = stack.runtime
        const relays = rt.supervisor.status()
        return {
          ...base,
          peerId: rt.peerId,
          relays: relays.length,
          relaysReserved: relays.filter((r) => r.reserved).length,
          connectedPeers: new Set(rt.node.getConnections().map((c) => c.remotePeer.toString())).size,
        }
      }
      const error = this.#errors.get(entry.name)
      return error === undefined ? base : { ...base, error }
    })
  }

  /** Starts the network `name`, whose directory exists, without touching the others. */
  startNetwork(name: string): Promise<NetworkState> {
    return this.#serial(() => this.#startNamed(name))
  }

  /** Stops the network `name`: its node, and so its connections, only. */
  stopNetwork(name: string): Promise<void> {
    return this.#serial(() => this.#stopNamed(name))
  }

  async #startNamed(name: string): Promise<NetworkState> {
    const entry = await findNetwork(this.#init.mainConfigFile, name)
    if (this.#stacks.has(name)) {
      throw new ConflictError(`network ${name} runs already`, { hint: LIST_HINT })
    }
    await this.#startExtra(entry)
    const state = (await this.list()).find((n) => n.name === name)
    return state as NetworkState
  }

  async #stopNamed(name: string): Promise<void> {
    const stack = this.#stacks.get(name)
    if (stack === undefined) {
      this.#errors.delete(name)
      throw new NotFoundError(`network ${JSON.stringify(name)} does not run in this daemon`, {
        hint: LIST_HINT,
      })
    }
    if (stack.main) {
      throw new UsageError(`${name} is the daemon's main network: it stops with the daemon`, {
        hint: 'stop the daemon with `peerup daemon stop`',
      })
    }
    this.#stacks.delete(name)
    await stack.stop()
    this.#components.log.info('network stopped', { network: name })
  }

  async #startExtra(entry: NetworkEntry): Promise<void> {
    try {
      const stack = await this.#stack(entry)
      await stack.start()
      this.#started.add(stack)
      this.#stacks.set(entry.name, stack)
      this.#errors.delete(entry.name)
      this.#components.log.info('network started', { network: entry.name, peer: stack.runtime.peerId })
    } catch (err) {
      this.#errors.set(entry.name, (err as Error).message)
      this.#components.log.error('network did not start; the others run', {
        network: entry.name,
        error: err as Error,
      })
      throw err
    }
  }

  async #stack(entry: NetworkEntry): Promise<NetworkStack> {
    const { config } = await loadNodeConfig(entry.configFile)
    return new NetworkStack(
      { ...this.#components, networks: this },
      {
        name: entry.name,
        configFile: entry.configFile,
        main: entry.main,
        metrics: this.#init.createMetrics,
        audit: config.telemetry.audit,
        dir: entry.dir,
      },
    )
  }

  async #selected(): Promise<string> {
    const mainName = this.main.name
    const chosen = await readSelectedNetwork(path.dirname(this.#init.mainConfigFile))
    return chosen !== undefined && this.#stacks.has(chosen) ? chosen : mainName
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.#queue.then(fn)
    this.#queue = next.catch(() => {})
    return next
  }
}
