/**
 * `peerup demo`: the whole mesh on loopback in a temporary directory — a relay, a "home" node
 * offering a small TCP service and a "laptop" node reaching it through `peerup proxy` — printing
 * each step and the path used, then cleaning up. The same code paths as the real commands.
 *
 * @packageDocumentation
 */

import * as fs from 'node:fs/promises'
import * as net from 'node:net'
import * as os from 'node:os'
import * as path from 'node:path'
import { addAuthorizedPeer } from '../auth/ops.ts'
import { editConfigFile } from '../config/edit.ts'
import { initNode, initRelay } from '../config/init.ts'
import { loadRelayConfig } from '../config/load.ts'
import { addService } from '../config/ops.ts'
import { nodeConfigSchema, relayConfigSchema } from '../config/schema.ts'
import { configureLogging, createLogger } from '../log/index.ts'
import { pingPeer } from '../p2p/diagnostics.ts'
import { describePath } from '../p2p/path.ts'
import { startNodeRuntime } from '../p2p/runtime.ts'
import { startProxyListener } from '../proxy/listener.ts'
import { startRelay } from '../relay/server.ts'

/** Runs the demo, writing its narration with `say`. */
export async function runDemo(say: (line: string) => void, signal?: AbortSignal): Promise<void> {
  configureLogging({ level: 'error' })
  const root = await fs.mkdtemp(path.join(os.tmpdir(), 'peerup-demo-'))
  const stops: Array<() => Promise<unknown>> = []
  try {
    say(`peerup demo — everything lives in ${root} and on 127.0.0.1, and is removed at the end.\n`)

    say('1. A relay (on a real network: a small VPS you run). `peerup relay setup && peerup relay serve`')
    const relayInit = await initRelay(path.join(root, 'relay'))
    await editConfigFile(relayInit.configFile, relayConfigSchema, (doc) => {
      doc.setIn(['network', 'listen_addresses'], doc.createNode(['/ip4/127.0.0.1/tcp/0']))
      doc.setIn(['stun', 'enabled'], false)
      doc.setIn(['health', 'enabled'], false)
    })
    const { config: relayConfig } = await loadRelayConfig(relayInit.configFile)
    const relay = await startRelay({ config: relayConfig, dir: relayInit.dir, log: createLogger('relay') })
    stops.unshift(() => relay.stop())
    const relayAddr = relay.addresses().find((a) => a.includes('/ip4/127.0.0.1/')) as string
    say(`   relay ${short(relay.peerId)} listening at ${relayAddr}\n`)

    say('2. Two machines: "home" (behind NAT, offers a service) and "laptop". `peerup init --relay <relay>`')
    const home = await initNode({ dir: path.join(root, 'home'), relays: [relayAddr], network: '' })
    const laptop = await initNode({ dir: path.join(root, 'laptop'), relays: [relayAddr], network: '' })
    for (const n of [home, laptop]) {
      await editConfigFile(n.configFile, nodeConfigSchema, (doc) => {
        doc.setIn(['network', 'listen_addresses'], doc.createNode(['/ip4/127.0.0.1/tcp/0']))
      })
    }
    say(`   home   ${home.peerId}`)
    say(`   laptop ${laptop.peerId}\n`)

    say('3. Trust: the relay serves both, home lets laptop in. `peerup relay authorize`, `peerup auth add`')
    await addAuthorizedPeer(relayInit.authorizedKeysFile, home.peerId, { comment: 'home' })
    await addAuthorizedPeer(relayInit.authorizedKeysFile, laptop.peerId, { comment: 'laptop' })
    await relay.reloadAuthorized()
    await addAuthorizedPeer(home.authorizedKeysFile, laptop.peerId, { comment: 'laptop' })
    say('   done: anyone else is refused by home and cannot hold a reservation on the relay\n')

    say('4. home offers a local TCP service. `peerup service add greet 127.0.0.1:<port> && peerup daemon`')
    const service = await startGreeter()
    stops.unshift(() => service.close())
    await addService(home.configFile, 'greet', `127.0.0.1:${service.port}`)
    const homeRt = await startNodeRuntime({
      configFile: home.configFile,
      log: createLogger('home'),
      exposeServices: true,
    })
    stops.unshift(() => homeRt.stop())
    await homeRt.supervisor.waitForReservation(
      AbortSignal.any([AbortSignal.timeout(20_000), ...(signal ? [signal] : [])]),
    )
    say(
      `   home's daemon holds a reservation on the relay: reachable at ${relayAddr}/p2p-circuit/p2p/${short(home.peerId)}\n`,
    )

    say("5. laptop forwards a local port to home's service. `peerup proxy home greet 127.0.0.1:<port>`")
    const laptopRt = await startNodeRuntime({
      configFile: laptop.configFile,
      log: createLogger('laptop'),
      exposeServices: false,
      listen: [],
    })
    stops.unshift(() => laptopRt.stop())
    const listener = await startProxyListener({
      host: '127.0.0.1',
      port: 0,
      log: createLogger('proxy'),
      openStream: async (s) => (await laptopRt.openService(home.peerId, 'greet', { signal: s })).stream,
    })
    stops.unshift(() => listener.close())
    say(`   listening on 127.0.0.1:${listener.address.port}`)
    const reply = await talk(listener.address.port, 'hello from laptop')
    say(`   sent "hello from laptop", home's service answered: "${reply}"`)
    const reached = await laptopRt.reach(home.peerId)
    say(`   path: ${describePath(reached.path)}\n`)

    say('6. laptop pings home. `peerup ping home`')
    const report = await pingPeer(laptopRt, home.peerId, {
      count: 3,
      intervalMs: 200,
      ...(signal === undefined ? {} : { signal }),
      onReply: (r) => say(`   seq=${r.seq} rtt=${r.rttMs?.toFixed(1) ?? '?'} ms ${describePath(r.path)}`),
    })
    say(`   ${report.received}/${report.sent} answered\n`)

    say('Done. On real machines: docs/relay-vps.md; `peerup ssh home` once home runs sshd and offers `ssh`.')
  } finally {
    for (const stop of stops) {
      await stop().catch(() => {})
    }
    await fs.rm(root, { recursive: true, force: true })
  }
}

function short(id: string): string {
  return `${id.slice(0, 12)}…`
}

/** A service that answers each line with a greeting that proves who answered. */
async function startGreeter(): Promise<{ port: number; close(): Promise<void> }> {
  const server = net.createServer((socket) => {
    socket.setEncoding('utf8')
    socket.once('data', (line: string) =>
      socket.end(`home got "${line.trim()}" at ${new Date().toISOString()}\n`),
    )
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  }
}

function talk(port: number, message: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1' })
    let reply = ''
    socket.setEncoding('utf8')
    socket.on('data', (d: string) => {
      reply += d
    })
    socket.once('error', reject)
    socket.once('connect', () => socket.write(`${message}\n`))
    socket.once('end', () => resolve(reply.trim()))
  })
}
