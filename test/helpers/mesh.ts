/**
 * An in-process mesh for integration tests: a real relay (our relay wiring, gated by
 * relay_authorized_keys) and real nodes built from real config directories, all on 127.0.0.1.
 */

import assert from 'node:assert/strict'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import { addAuthorizedPeer } from '../../src/auth/ops.ts'
import { editConfigFile } from '../../src/config/edit.ts'
import { initNode, initRelay } from '../../src/config/init.ts'
import { loadRelayConfig } from '../../src/config/load.ts'
import { addService } from '../../src/config/ops.ts'
import { nodeConfigSchema, relayConfigSchema } from '../../src/config/schema.ts'
import { configureLogging, createLogger } from '../../src/log/index.ts'
import type { Observer } from '../../src/metrics/observer.ts'
import { type NodeRuntime, startNodeRuntime } from '../../src/p2p/runtime.ts'
import { type Listener, startListener } from '../../src/pipe/listener.ts'
import type { Session } from '../../src/pipe/session.ts'
import { type RelayHandle, startRelay } from '../../src/relay/server.ts'

// Quiet unless a test asks: failures are asserted, not read from logs.
configureLogging({ level: (process.env.PEERUP_TEST_LOG as 'debug' | undefined) ?? 'error' })

/** A relay running in this process, restartable on the same port. */
export interface TestRelay {
  dir: string
  peerId: string
  address: string
  configFile: string
  handle: RelayHandle
  authorize(peerId: string): Promise<void>
  restart(): Promise<void>
  stop(): Promise<void>
}

/**
 * Creates and starts a relay in `<root>/relay`; `stun` answers STUN on a free UDP port of 127.0.0.1.
 * Every peer of a test connects from 127.0.0.1, so the per-IP limits on strangers are raised out
 * of the way unless `strangerLimits: 'default'` asks for the product's own.
 */
export async function startTestRelay(
  root: string,
  options: {
    stun?: boolean
    /** Whether the splice port runs (src/relay/splice.ts); default true. */
    splice?: boolean
    strangerLimits?: 'default' | 'loose'
    /** Values for `resources:` of relay-server.yaml, over the rest. */
    resources?: Record<string, number | string>
    /** Where the relay reports refusals (metrics, audit). */
    observer?: Observer
    /** The loopback address it listens on (TCP); default 127.0.0.1. */
    host?: string
    /** With `stun`, a second STUN port too (`stun.alternate_listen_address`). */
    stunAlternate?: boolean
  } = {},
): Promise<TestRelay> {
  const host = options.host ?? '127.0.0.1'
  const dir = path.join(root, 'relay')
  const init = await initRelay(dir)
  await editConfigFile(init.configFile, relayConfigSchema, (doc) => {
    doc.setIn(['network', 'listen_addresses'], doc.createNode([`/ip4/${host}/tcp/0`]))
    doc.setIn(['stun', 'enabled'], options.stun === true)
    doc.setIn(['stun', 'listen_address'], '127.0.0.1:0')
    if (options.stunAlternate === true) {
      doc.setIn(['stun', 'alternate_listen_address'], '127.0.0.1:0')
    }
    doc.setIn(['health', 'listen_address'], '127.0.0.1:0')
    doc.setIn(['splice', 'listen_address'], '127.0.0.1:0')
    doc.setIn(['splice', 'enabled'], options.splice !== false)
    if (options.strangerLimits !== 'default') {
      for (const key of [
        'max_pending_per_ip',
        'max_unknown_connections_per_ip',
        'max_unknown_circuits_per_ip',
        'unknown_circuits_per_minute_per_ip',
      ]) {
        doc.setIn(['resources', key], 10_000)
      }
    }
    for (const [key, value] of Object.entries(options.resources ?? {})) {
      doc.setIn(['resources', key], value)
    }
  })
  const log = createLogger('relay')
  let { config } = await loadRelayConfig(init.configFile)
  const observer = options.observer === undefined ? {} : { observer: options.observer }
  let handle = await startRelay({ config, dir, log, ...observer })
  const address = handle.addresses().find((a) => a.startsWith(`/ip4/${host}/tcp/`)) as string
  // Restarts reuse the port, as a relay behind a fixed address would.
  await editConfigFile(init.configFile, relayConfigSchema, (doc) => {
    doc.setIn(['network', 'listen_addresses'], doc.createNode([address.replace(/\/p2p\/.*$/, '')]))
  })
  config = (await loadRelayConfig(init.configFile)).config
  const relay: TestRelay = {
    dir,
    peerId: init.peerId,
    address,
    configFile: init.configFile,
    get handle() {
      return handle
    },
    authorize: async (peerId) => {
      await addAuthorizedPeer(init.authorizedKeysFile, peerId)
      await handle.reloadAuthorized()
    },
    restart: async () => {
      await handle.stop()
      // What a test changed in relay-server.yaml meanwhile counts, as after a real restart.
      config = (await loadRelayConfig(init.configFile)).config
      handle = await startRelay({ config, dir, log, ...observer })
    },
    stop: () => handle.stop(),
  }
  return relay
}

/** A node directory (config, key, authorized_keys) and, once started, its runtime. */
export interface TestNode {
  name: string
  dir: string
  configFile: string
  peerId: string
  runtime: NodeRuntime | undefined
  authorize(peerId: string): Promise<void>
  addService(name: string, address: string, allowed?: string[]): Promise<void>
  /** Starts the node; `daemon` exposes services and listens, a client only dials. */
  start(mode: 'daemon' | 'client', options?: { observer?: Observer }): Promise<NodeRuntime>
  stop(): Promise<void>
}

/**
 * Creates a node directory in `<root>/<name>` using `relay`. Unless `direct`, the node listens on
 * nothing but its relay reservation, as a machine behind NAT is reachable only through the relay
 * (everything here shares 127.0.0.1, where any listening port would be reachable).
 */
export async function createTestNode(
  root: string,
  name: string,
  relay: TestRelay,
  options: { direct?: boolean; listen?: string[]; relays?: string[] } = {},
): Promise<TestNode> {
  const dir = path.join(root, name)
  const init = await initNode({ dir, relays: options.relays ?? [relay.address], network: '' })
  await editConfigFile(init.configFile, nodeConfigSchema, (doc) => {
    doc.setIn(
      ['network', 'listen_addresses'],
      doc.createNode(options.listen ?? (options.direct === true ? ['/ip4/127.0.0.1/tcp/0'] : [])),
    )
    // The relay's STUN port, when it runs one (a free port, not 3478).
    doc.setIn(['relay', 'stun_port'], relay.handle.stun?.address.port ?? 0)
  })
  const node: TestNode = {
    name,
    dir,
    configFile: init.configFile,
    peerId: init.peerId,
    runtime: undefined,
    authorize: async (peerId) => {
      await addAuthorizedPeer(init.authorizedKeysFile, peerId)
      await node.runtime?.reloadAuthorized()
    },
    addService: async (svc, address, allowed) => {
      await addService(init.configFile, svc, address, allowed === undefined ? {} : { allowedPeers: allowed })
    },
    start: async (mode, startOptions) => {
      node.runtime = await startNodeRuntime({
        configFile: init.configFile,
        log: createLogger(name),
        ...(startOptions?.observer === undefined ? {} : { observer: startOptions.observer }),
        exposeServices: mode === 'daemon',
        ...(mode === 'client' ? { listen: [] } : {}),
      })
      return node.runtime
    },
    stop: async () => {
      await node.runtime?.stop()
      node.runtime = undefined
    },
  }
  return node
}

/** Writes `text` into the file, creating directories. */
export async function writeFile(file: string, text: string): Promise<void> {
  await fs.mkdir(path.dirname(file), { recursive: true })
  await fs.writeFile(file, text)
}

/**
 * The usual three: a relay in `root`, and nodes `a` and `b` using it, both authorized there and `a`
 * trusted by `b`. The caller stops the relay (and any node it starts).
 */
export async function startRelayAndPair(
  root: string,
): Promise<{ relay: TestRelay; a: TestNode; b: TestNode }> {
  const relay = await startTestRelay(root)
  try {
    const a = await createTestNode(root, 'a', relay)
    const b = await createTestNode(root, 'b', relay)
    await relay.authorize(a.peerId)
    await relay.authorize(b.peerId)
    await b.authorize(a.peerId)
    return { relay, a, b }
  } catch (err) {
    await relay.stop()
    throw err
  }
}

/** A proxy listener on `from` whose every connection is a session to `to`'s `service`. */
export async function sessionProxy(
  from: NodeRuntime,
  to: TestNode,
  service: string,
  opened: Session[],
  onPath?: (path: string) => void,
): Promise<Listener> {
  return startListener({
    host: '127.0.0.1',
    port: 0,
    log: createLogger('proxy'),
    open: async (signal) => {
      const o = await from.openSession(to.peerId, service, { signal })
      assert.ok(o.session, 'the peer speaks the session protocol')
      opened.push(o.session)
      onPath?.(o.path.type)
      return o.end
    },
  })
}
