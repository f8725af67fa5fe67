/**
 * Experiment (issue 15): what the installed @libp2p/tcp does with a chosen local port, and whether an
 * already-connected `net.Socket` (a punched one) can be handed to libp2p's upgrader. Loopback only,
 * no lab, no root needed: `node_modules/.bin/node bench/experiments/tcp-upgrade.ts`.
 *
 * Checks, each printed as one JSON line:
 * 1. `node.dial(ma, { localPort })`: does the option reach `net.connect`?
 * 2. `components.transportManager.dial(ma, { localPort, localAddress })`: does it?
 * 3. `tcp({ dialOpts: { localPort } })` (not in the option's type, which lists noDelay, keepAlive,
 *    keepAliveInitialDelay, allowHalfOpen): does it?
 * 4. A local port a libp2p TCP listener is already bound to: can a dial bind it too?
 * 5. Two sockets connected outside libp2p (standing in for a punched pair; on loopback one side
 *    must accept, but neither socket ever passes through a libp2p listener), wrapped with
 *    @libp2p/tcp's own `toMultiaddrConnection` and upgraded: one side `upgradeOutbound`, the other
 *    `upgradeOutbound(…, { initiator: false })` (both dialled, as in a simultaneous open; its
 *    MultiaddrConnection must still say `direction: 'inbound'`, see below) — then a stream carries
 *    64 MiB and the connection is found by `getConnections()`.
 *
 * @packageDocumentation
 */

import * as net from 'node:net'
import * as path from 'node:path'
import { pathToFileURL } from 'node:url'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { Libp2p, MultiaddrConnection, Upgrader } from '@libp2p/interface'
import { tcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'
import { YAMUX_OPTIONS } from '../../src/p2p/constants.ts'
import { noiseCrypto } from '../../src/p2p/noise-crypto.ts'

const ROOT = path.resolve(import.meta.dirname, '../..')
// Not in the package's exports map ("." only): imported by file URL, which the exports map does not govern.
const { toMultiaddrConnection } = (await import(
  pathToFileURL(path.join(ROOT, 'node_modules/@libp2p/tcp/dist/src/socket-to-conn.js')).href
)) as {
  toMultiaddrConnection(init: {
    socket: net.Socket
    direction: 'inbound' | 'outbound'
    remoteAddr?: ReturnType<typeof multiaddr>
    localAddr?: ReturnType<typeof multiaddr>
    inactivityTimeout?: number
    log: unknown
  }): MultiaddrConnection
}

const PROTOCOL = '/peerup-bench/echo-count/1.0.0'

interface Internals {
  components: {
    transportManager: {
      dial(ma: unknown, options: Record<string, unknown>): Promise<{ remoteAddr: unknown }>
    }
    upgrader: Upgrader
    logger: { forComponent(name: string): unknown }
  }
}

async function node(listen: string[], dialOpts?: Record<string, unknown>): Promise<Libp2p> {
  return createLibp2p({
    privateKey: await generateKeyPair('Ed25519'),
    addresses: { listen },
    // biome-ignore lint/suspicious/noExplicitAny: the point of check 3 is an option the type does not list
    transports: [tcp(dialOpts === undefined ? {} : { dialOpts: dialOpts as any })],
    connectionEncrypters: [noise({ crypto: noiseCrypto })],
    streamMuxers: [yamux(YAMUX_OPTIONS)],
    connectionMonitor: { enabled: false },
  })
}

const internals = (n: Libp2p) => n as unknown as Internals
const report = (check: string, result: Record<string, unknown>) =>
  console.log(JSON.stringify({ check, ...result }))

/** The source port the listener `b` saw for its connection from `a` (its upgrade may end after a's). */
async function seenPort(b: Libp2p, a: Libp2p): Promise<number | null> {
  for (let i = 0; i < 100; i++) {
    const c = b.getConnections(a.peerId)[0]
    if (c !== undefined) {
      return Number(c.remoteAddr.toString().split('/')[4])
    }
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  return null
}

const b = await node(['/ip4/127.0.0.1/tcp/0'])
const bAddr = b.getMultiaddrs()[0]!
const nodes: Libp2p[] = [b]
try {
  // 1. Through the dial queue.
  {
    const a = await node([])
    nodes.push(a)
    // biome-ignore lint/suspicious/noExplicitAny: an option libp2p's dial options do not have
    await a.dial(bAddr, { localPort: 41001, localAddress: '127.0.0.1' } as any)
    report('1 node.dial(ma, { localPort: 41001 })', { sourcePortSeenByListener: await seenPort(b, a) })
    await a.stop()
  }
  // 2. Straight to the transport manager.
  {
    const a = await node([])
    nodes.push(a)
    await internals(a).components.transportManager.dial(bAddr, {
      signal: AbortSignal.timeout(5000),
      localPort: 41002,
      localAddress: '127.0.0.1',
    })
    report('2 components.transportManager.dial(ma, { localPort: 41002 })', {
      sourcePortSeenByListener: await seenPort(b, a),
      connectionsOfA: a.getConnections().map((c) => `${c.remoteAddr.toString()} ${c.direction}`),
    })
    await a.stop()
  }
  // 3. tcp({ dialOpts }).
  {
    const a = await node([], { localPort: 41003, localAddress: '127.0.0.1' })
    nodes.push(a)
    await a.dial(bAddr)
    report('3 tcp({ dialOpts: { localPort: 41003 } })', { sourcePortSeenByListener: await seenPort(b, a) })
    await a.stop()
  }
  // 4. The port of a listening libp2p node.
  {
    const a = await node(['/ip4/127.0.0.1/tcp/41004'])
    nodes.push(a)
    try {
      await internals(a).components.transportManager.dial(bAddr, {
        signal: AbortSignal.timeout(5000),
        localPort: 41004,
        localAddress: '127.0.0.1',
      })
      report('4 dial from the port a libp2p TCP listener holds (41004)', {
        ok: true,
        sourcePortSeenByListener: await seenPort(b, a),
      })
    } catch (err) {
      report('4 dial from the port a libp2p TCP listener holds (41004)', {
        ok: false,
        error: (err as Error).message,
      })
    }
    await a.stop()
  }
  // 5. Upgrading sockets connected outside libp2p.
  {
    const a = await node([])
    const c = await node([])
    nodes.push(a, c)
    const server = net.createServer()
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const port = (server.address() as net.AddressInfo).port
    const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve))
    const sa = net.connect({ host: '127.0.0.1', port, localPort: 41005, noDelay: true, keepAlive: true })
    const sc = await accepted
    sc.setNoDelay(true)
    server.close()
    const logA = internals(a).components.logger.forComponent('bench:punched')
    const logC = internals(c).components.logger.forComponent('bench:punched')
    // The remote's peer id in remoteAddr: the upgrader checks the noise handshake against it.
    const maA = toMultiaddrConnection({
      socket: sa,
      direction: 'outbound',
      remoteAddr: multiaddr(`/ip4/127.0.0.1/tcp/${port}/p2p/${c.peerId.toString()}`),
      log: logA,
    })
    // 'inbound' although this side dialled too: yamux takes its client/server role from the
    // MultiaddrConnection's direction (`this.client = maConn.direction === 'outbound'`), not from
    // the upgrader's; with 'outbound' on both sides it aborts with "Both endpoints are clients".
    const maC = toMultiaddrConnection({
      socket: sc,
      direction: 'inbound',
      remoteAddr: multiaddr(`/ip4/127.0.0.1/tcp/41005/p2p/${a.peerId.toString()}`),
      log: logC,
    })
    let received = 0
    const total = 64 * 1024 * 1024
    const done = Promise.withResolvers<void>()
    await c.handle(PROTOCOL, (stream) => {
      stream.addEventListener('message', (e) => {
        received += e.data.byteLength
        if (received >= total) {
          done.resolve()
        }
      })
    })
    const t0 = performance.now()
    const [connA, connC] = await Promise.all([
      internals(a).components.upgrader.upgradeOutbound(maA, { signal: AbortSignal.timeout(5000) }),
      internals(c).components.upgrader.upgradeOutbound(maC, {
        signal: AbortSignal.timeout(5000),
        initiator: false,
      }),
    ])
    const upgradeMs = performance.now() - t0
    const stream = await a.dialProtocol(c.peerId, PROTOCOL)
    const chunk = new Uint8Array(64 * 1024)
    const t1 = performance.now()
    for (let sent = 0; sent < total; sent += chunk.byteLength) {
      if (!stream.send(chunk)) {
        await new Promise((resolve) => stream.addEventListener('drain', resolve, { once: true }))
      }
    }
    await done.promise
    const ms = performance.now() - t1
    report('5 upgrade of sockets connected outside libp2p', {
      upgradeMs: Math.round(upgradeMs),
      a: { direction: connA.direction, encryption: connA.encryption, multiplexer: connA.multiplexer },
      c: { direction: connC.direction, encryption: connC.encryption, multiplexer: connC.multiplexer },
      dialProtocolReusedIt: a.getConnections(c.peerId).length === 1 && stream.direction === 'outbound',
      getConnectionsOfA: a.getConnections().map((x) => x.remoteAddr.toString()),
      loopbackMBps: Math.round(total / 1e6 / (ms / 1000)),
    })
  }
} finally {
  await Promise.all(nodes.map((n) => n.stop()))
}
