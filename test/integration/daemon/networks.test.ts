/**
 * Several networks in one daemon (docs/cli.md "Several networks"), with real parts on 127.0.0.1:
 * two relays, a host in each network, and one daemon ("laptop") in network home (its main config,
 * relay 1) and network work (networks/work/, relay 2). Each request goes to the network its
 * `?network=` selects: a proxy to a service in each; the same name resolving in each network to
 * its own peer; a peer authorized only in work refused by home's node in the same process; an edit
 * of work's config.yaml reloaded by work alone; `DELETE /v1/networks/work` closing work's
 * connections while home's proxy keeps carrying bytes; `POST /v1/networks` starting it again.
 */

import assert from 'node:assert/strict'
import * as fs from 'node:fs/promises'
import type * as net from 'node:net'
import * as path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { addAuthorizedPeer } from '../../../src/auth/ops.ts'
import { LocalClient } from '../../../src/client/local.ts'
import { editConfigFile } from '../../../src/config/edit.ts'
import { loadRelayConfig } from '../../../src/config/load.ts'
import { addNetwork } from '../../../src/config/networks.ts'
import { addService, setPeerName } from '../../../src/config/ops.ts'
import { nodeConfigSchema } from '../../../src/config/schema.ts'
import { NotFoundError, UsageError } from '../../../src/errors.ts'
import { createLogger } from '../../../src/log/index.ts'
import { PeerRefusedError } from '../../../src/p2p/errors.ts'
import { RelayPairingService } from '../../../src/relay/pairing.ts'
import { runCli, startCli, tempDir } from '../../helpers/cli.ts'
import { startTestDaemon, type TestDaemon } from '../../helpers/daemon.ts'
import { createTestNode, startTestRelay, type TestNode, type TestRelay } from '../../helpers/mesh.ts'
import { sample, scrape } from '../../helpers/metrics.ts'
import { connect, echoClient, startEcho } from '../../helpers/tcp.ts'

/** Polls `cond` every 50 ms until it holds, failing with `what` after `timeoutMs`. */
async function waitFor(
  cond: () => Promise<boolean> | boolean,
  what: string,
  timeoutMs = 30_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await cond())) {
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}`)
    }
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

/** Sets `discovery.network` of a node's config. */
async function setDiscovery(configFile: string, network: string): Promise<void> {
  await editConfigFile(configFile, nodeConfigSchema, (doc) => doc.setIn(['discovery', 'network'], network))
}

describe('several networks in one daemon', { timeout: 300_000 }, () => {
  const cleanups: Array<() => Promise<unknown>> = []
  let root: string
  let relay1: TestRelay
  let relay2: TestRelay
  let homeHost: TestNode
  let workHost: TestNode
  let laptop: TestNode
  let workConfig: string
  let workPeerId: string
  let daemon: TestDaemon
  const client = (network?: string) =>
    new LocalClient({ configFile: laptop.configFile, ...(network === undefined ? {} : { network }) })

  before(async () => {
    root = await tempDir({ after: (fn) => cleanups.push(fn) })
    relay1 = await startTestRelay(path.join(root, 'r1'))
    cleanups.unshift(() => relay1.stop())
    relay2 = await startTestRelay(path.join(root, 'r2'))
    cleanups.unshift(() => relay2.stop())
    // Pairing on relay 2 (invite-open, sponsoring), for `invite --network work`.
    const pairing = new RelayPairingService({
      relay: relay2.handle,
      config: (await loadRelayConfig(relay2.configFile)).config,
      dir: relay2.dir,
      log: createLogger('pairing'),
    })
    await pairing.start()
    cleanups.unshift(() => pairing.stop())
    const echoHome = await startEcho()
    const echoWork = await startEcho()
    cleanups.unshift(
      () => echoHome.close(),
      () => echoWork.close(),
    )

    // laptop: network home is its main config (relay 1), work a directory beside it (relay 2).
    laptop = await createTestNode(root, 'laptop', relay1)
    await setDiscovery(laptop.configFile, 'home')
    await editConfigFile(laptop.configFile, nodeConfigSchema, (doc) => {
      doc.setIn(['telemetry', 'metrics', 'enabled'], true)
      doc.setIn(['telemetry', 'metrics', 'listen_address'], '127.0.0.1:0')
    })
    const work = await addNetwork({
      mainConfigFile: laptop.configFile,
      name: 'work',
      relays: [relay2.address],
    })
    workConfig = work.configFile
    workPeerId = work.peerId
    await editConfigFile(workConfig, nodeConfigSchema, (doc) => {
      doc.setIn(['network', 'listen_addresses'], doc.createNode([]))
    })

    homeHost = await createTestNode(path.join(root, 'h'), 'homehost', relay1)
    await setDiscovery(homeHost.configFile, 'home')
    await homeHost.addService('echo', `127.0.0.1:${echoHome.port}`)
    // workHost also knows relay 1: it can try to reach laptop's home node there.
    workHost = await createTestNode(path.join(root, 'w'), 'workhost', relay2, {
      relays: [relay2.address, relay1.address],
    })
    await setDiscovery(workHost.configFile, 'work')
    await workHost.addService('echo', `127.0.0.1:${echoWork.port}`)

    for (const r of [relay1]) {
      await r.authorize(laptop.peerId)
      await r.authorize(homeHost.peerId)
      await r.authorize(workHost.peerId)
    }
    await relay2.authorize(workPeerId)
    await relay2.authorize(workHost.peerId)
    // Trust: home ↔ laptop's home node; work ↔ laptop's work node. The same name in each network.
    await homeHost.authorize(laptop.peerId)
    await workHost.authorize(workPeerId)
    await laptop.authorize(homeHost.peerId)
    await addAuthorizedPeer(path.join(work.dir, 'authorized_keys'), workHost.peerId)
    await setPeerName(laptop.configFile, 'host', homeHost.peerId)
    await setPeerName(workConfig, 'host', workHost.peerId)
    // laptop's home node offers a service too: the one a work peer must not reach.
    await addService(laptop.configFile, 'echo', `127.0.0.1:${echoHome.port}`)

    await homeHost.start('daemon')
    cleanups.unshift(() => homeHost.stop())
    await workHost.start('daemon')
    cleanups.unshift(() => workHost.stop())
    daemon = await startTestDaemon(laptop.configFile)
    cleanups.unshift(() => daemon.stop())
  })

  after(async () => {
    for (const fn of cleanups) {
      await fn().catch(() => {})
    }
  })

  it('runs both networks, each with its own peer id and relay reservation', async () => {
    assert.deepEqual(daemon.ready.networks, [
      { name: 'home', peerId: laptop.peerId },
      { name: 'work', peerId: workPeerId },
    ])
    await waitFor(async () => {
      const list = await client().call('networkList', {})
      return list.every((n) => n.running && n.relaysReserved === 1)
    }, 'a reservation in each network')
    const list = await client().call('networkList', {})
    assert.deepEqual(
      list.map((n) => [n.name, n.main, n.selected, n.peerId]),
      [
        ['home', true, true, laptop.peerId],
        ['work', false, false, workPeerId],
      ],
    )
    const status = await client('work').call('status', {})
    assert.equal(status.peerId, workPeerId)
    assert.equal(status.networkName, 'work')
    assert.equal(status.configFile, workConfig)
    assert.equal((await client().call('status', {})).networkName, 'home')
  })

  it('serves the metrics of both networks in one scrape, each labelled with its network', async () => {
    const text = await scrape(daemon.ready.metricsAddress as string)
    for (const network of ['home', 'work']) {
      assert.equal(sample(text, 'peerup_info', { network }), 1, `peerup_info of ${network}`)
      assert.equal(
        sample(text, 'peerup_connected_peers', { network, path_type: 'RELAYED' }) !== undefined,
        true,
      )
    }
    // One HELP per family, not one per network.
    assert.equal(text.match(/^# HELP peerup_info /gm)?.length, 1)
  })

  it('resolves a name within its network, and refuses an unknown network with where to look', async () => {
    assert.equal((await client('home').call('resolve', { name: 'host' })).peerId, homeHost.peerId)
    assert.equal((await client('work').call('resolve', { name: 'host' })).peerId, workHost.peerId)
    await assert.rejects(client('nope').call('status', {}), (err: Error) => {
      assert.ok(err instanceof NotFoundError, String(err))
      assert.match(
        `${err.message} — ${(err as NotFoundError).hint}`,
        /unknown network "nope".*`peerup network list`/,
      )
      return true
    })
    // A selector that is not a network name is a usage error (400) naming the parameter.
    await assert.rejects(client('Work/../x').call('status', {}), (err: Error) => {
      assert.ok(err instanceof UsageError, String(err))
      assert.match(err.message, /^network: invalid network name/)
      return true
    })
    // Through the CLI: name@network picks the network.
    const r = await runCli(['--config', laptop.configFile, 'resolve', 'host@work', '--json'], root)
    assert.equal(r.code, 0, r.stderr)
    assert.equal(JSON.parse(r.stdout).peerId, workHost.peerId)
  })

  it('proxies to a service in each network; a peer of work is refused by home’s node', async () => {
    for (const network of ['home', 'work']) {
      const proxy = await client(network).call('connectAdd', {
        peer: 'host',
        service: 'echo',
        listen: '127.0.0.1:0',
      })
      const socket = await connect(Number(proxy.listen.split(':').at(-1)))
      const echo = echoClient(socket)
      await echo.roundTrip(64 * 1024)
      socket.destroy()
      await client(network).call('connectRemove', { id: proxy.id })
    }
    // workHost reaches laptop's home node through relay 1, where it is known: home's gater refuses it.
    const rt = workHost.runtime
    assert.ok(rt)
    await assert.rejects(rt.reach(laptop.peerId), (err: unknown) => {
      assert.ok(err instanceof PeerRefusedError, `got ${String(err)}`)
      return true
    })
    // And laptop's work node, which trusts it, answers it.
    await rt.reach(workPeerId)
  })

  it('reloads only the network whose config.yaml changed', async () => {
    const seen: Record<string, Array<{ type: string; applied?: string[] }>> = { home: [], work: [] }
    const watching = new AbortController()
    const watchers = Object.keys(seen).map(async (network) => {
      try {
        for await (const e of client(network).lines('events', {}, watching.signal)) {
          seen[network]?.push(e as { type: string; applied?: string[] })
        }
      } catch {}
    })
    try {
      // Each stream says hello first: both are open before anything changes.
      await waitFor(
        () => seen.home?.[0]?.type === 'hello' && seen.work?.[0]?.type === 'hello',
        'both event streams open',
      )
      await setPeerName(workConfig, 'worker', workHost.peerId)
      await waitFor(() => seen.work?.some((e) => e.type === 'config') === true, 'work reloaded')
      await setPeerName(laptop.configFile, 'homer', homeHost.peerId)
      await waitFor(() => seen.home?.some((e) => e.type === 'config') === true, 'home reloaded')
      // home's one reload is its own edit, work's is its own: neither saw the other's.
      assert.equal(seen.home?.filter((e) => e.type === 'config').length, 1)
      assert.equal(seen.work?.filter((e) => e.type === 'config').length, 1)
      assert.equal((await client('work').call('resolve', { name: 'worker' })).peerId, workHost.peerId)
      await assert.rejects(client('home').call('resolve', { name: 'worker' }), NotFoundError)
    } finally {
      watching.abort()
      await Promise.all(watchers)
    }
  })

  it('DELETE /v1/networks/work closes work’s connections only; POST starts it again', async () => {
    // By peer id: the previous test renamed the hosts.
    const hosts: Record<string, string> = { home: homeHost.peerId, work: workHost.peerId }
    const open = async (network: string) => {
      const proxy = await client(network).call('connectAdd', {
        peer: hosts[network] as string,
        service: 'echo',
        listen: '127.0.0.1:0',
      })
      const socket = await connect(Number(proxy.listen.split(':').at(-1)))
      const echo = echoClient(socket)
      await echo.roundTrip(1024)
      return { socket, echo }
    }
    const home = await open('home')
    const work = await open('work')
    const workToHost = () =>
      workHost.runtime?.node.getConnections().some((c) => c.remotePeer.toString() === workPeerId) === true
    assert.ok(workToHost(), 'work’s node is connected to workHost')

    assert.deepEqual(await client().call('networkRemove', { name: 'work' }), { removed: 'work' })
    await work.echo.closed
    await waitFor(() => !workToHost(), 'workHost to lose its connection to laptop’s work node')
    // home's connection carries on, byte-exact.
    await home.echo.roundTrip(256 * 1024)
    const list = await client().call('networkList', {})
    assert.deepEqual(
      list.map((n) => [n.name, n.running]),
      [
        ['home', true],
        ['work', false],
      ],
    )
    await assert.rejects(client('work').call('status', {}), /network work does not run in this daemon/)
    await assert.rejects(client().call('networkRemove', { name: 'home' }), /main network/)
    // Its directory is untouched: the daemon only stopped it.
    assert.ok((await fs.stat(workConfig)).isFile())

    const started = await client().call('networkAdd', { name: 'work' })
    assert.equal(started.running, true)
    assert.equal(started.peerId, workPeerId)
    await assert.rejects(client().call('networkAdd', { name: 'work' }), /runs already/)
    const again = await open('work')
    await again.echo.roundTrip(1024)
    again.socket.destroy()
    home.socket.destroy()
    const stillHome = (await client('home').call('status', {})).connectedPeers
    assert.ok(stillHome >= 1)
    // A socket that did not close would hold the test: each is destroyed above.
    for (const s of [home.socket, again.socket] as net.Socket[]) {
      assert.ok(s.destroyed)
    }
  })

  it('invite --network work through the daemon; join --network work creates that network on the joiner', async () => {
    const tablet = await createTestNode(path.join(root, 't'), 'tablet', relay1)
    const invite = startCli(
      ['--config', laptop.configFile, 'invite', '--network', 'work', '--non-interactive', '--name', 'laptop'],
      root,
      { signal: AbortSignal.timeout(120_000) },
    )
    const [, code] = (await invite.stdout(/^(\S{40,})\n/m)) as RegExpMatchArray
    const joined = await runCli(
      [
        '--config',
        tablet.configFile,
        'join',
        code as string,
        '--network',
        'work',
        '--non-interactive',
        '--name',
        'tablet',
        '--json',
      ],
      root,
      { signal: AbortSignal.timeout(120_000) },
    )
    assert.equal(joined.code, 0, joined.stderr)
    const r = JSON.parse(joined.stdout) as { configFile: string; created: boolean; peerId: string }
    assert.equal(r.configFile, path.join(tablet.dir, 'networks', 'work', 'config.yaml'))
    assert.equal(r.created, true)
    assert.notEqual(r.peerId, tablet.peerId, 'the new network has an identity of its own')
    const done = await invite.done
    assert.equal(done.code, 0, done.stderr)
    // Paired in work on both sides, and nothing in home.
    assert.match(
      await fs.readFile(path.join(path.dirname(workConfig), 'authorized_keys'), 'utf8'),
      new RegExp(r.peerId),
    )
    assert.doesNotMatch(
      await fs.readFile(path.join(laptop.dir, 'authorized_keys'), 'utf8'),
      new RegExp(r.peerId),
    )
    const tabletWork = await fs.readFile(r.configFile, 'utf8')
    assert.match(tabletWork, new RegExp(relay2.peerId))
    assert.match(tabletWork, /network: "?work"?/)
    const list = await runCli(['--config', tablet.configFile, 'network', 'list', '--json'], root)
    assert.deepEqual(
      (JSON.parse(list.stdout) as Array<{ name: string }>).map((n) => n.name),
      ['default', 'work'],
    )
    // Secrets stay out of what the commands printed on stderr.
    for (const text of [done.stderr, joined.stderr]) {
      assert.ok(!text.includes((code as string).slice(8, 16)), 'the invite code leaked to stderr')
    }
  })

  it('`peerup network add` starts the new network in the running daemon; `network remove` stops it', async () => {
    const cli = (...args: string[]) => runCli(['--config', laptop.configFile, ...args, '--json'], root)
    // No relay: a relay keeps one reservation per peer id, and lab shares home's (docs/cli.md).
    const added = await cli('network', 'add', 'lab', '--same-identity')
    assert.equal(added.code, 0, added.stderr)
    const lab = JSON.parse(added.stdout) as { running: boolean; peerId: string; dir: string }
    assert.equal(lab.running, true)
    assert.equal(lab.peerId, laptop.peerId, 'the same identity as the main network')
    const listed = JSON.parse((await cli('network', 'list')).stdout) as Array<{
      name: string
      running: boolean
    }>
    assert.deepEqual(
      listed.map((n) => [n.name, n.running]),
      [
        ['home', true],
        ['lab', true],
        ['work', true],
      ],
    )
    const removed = await cli('network', 'remove', 'lab')
    assert.equal(removed.code, 0, removed.stderr)
    assert.equal((JSON.parse(removed.stdout) as { stopped: boolean }).stopped, true)
    assert.deepEqual(
      (await client().call('networkList', {})).map((n) => n.name),
      ['home', 'work'],
    )
    // home was not disturbed: still the same node, still answering.
    assert.equal((await client('home').call('status', {})).peerId, laptop.peerId)
  })
})
