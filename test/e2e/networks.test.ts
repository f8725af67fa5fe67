/**
 * Several networks in one daemon (docs/cli.md "Several networks"), with the built executable in
 * the NAT lab (test/e2e/lab.ts): the laptop `a`, behind its NAT, is in network "home" (its main
 * config, relay 1) and network "work" (`peerup network add work`, relay 2) through one
 * `peerup daemon`. Behind another NAT, `b` is home's host and `b2` work's, each with a real sshd;
 * both are called `host` in their network. The laptop sshes to each (`peerup ssh host`, `peerup
 * ssh host@work`); work's host, which knows the laptop's home peer id and relay 1, is refused by
 * home's node; and `peerup network remove work` ends work's ssh session while home's streams on,
 * every byte once and in order.
 */

import * as assert from 'node:assert/strict'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { setTimeout as delay } from 'node:timers/promises'
import { createLab, type Lab, type LabProcess, labSupport, withLabLogs } from './lab.ts'
import { ensureBuilt, type LabRelay, PeerupHost, startLabRelay } from './peerup-host.ts'
import type { StreamOptions, StreamResult } from './ssh-stream.ts'
import { type Sshd, startSshd } from './sshd.ts'

const support = await labSupport()
const skip = support.ok ? false : `network lab unavailable: ${support.reason}`
const DRIVER = path.join(import.meta.dirname, 'ssh-stream.ts')
const MiB = 1024 * 1024

interface NetworkState {
  name: string
  main: boolean
  running: boolean
  peerId?: string
  relaysReserved?: number
}

/** An ssh session streaming through ssh-stream.ts: its progress lines, and its result. */
class Stream {
  readonly proc: LabProcess
  readonly result: Promise<StreamResult>
  received = 0
  readonly #watchers = new Set<() => void>()

  constructor(proc: LabProcess) {
    this.proc = proc
    let partial = ''
    const { promise, resolve } = Promise.withResolvers<StreamResult>()
    this.result = Promise.race([
      promise,
      proc.exited.then(async () => {
        await delay(500)
        throw new Error(`ssh-stream exited without a result:\n${proc.output()}`)
      }),
    ])
    this.result.catch(() => {})
    proc.stdout?.on('data', (text: string) => {
      const lines = (partial + text).split('\n')
      partial = lines.pop() ?? ''
      for (const line of lines) {
        if (line.startsWith('progress ')) {
          this.received = (JSON.parse(line.slice('progress '.length)) as { received: number }).received
          for (const w of this.#watchers) {
            w()
          }
        } else if (line.startsWith('result ')) {
          resolve(JSON.parse(line.slice('result '.length)) as StreamResult)
        }
      }
    })
  }

  /** Resolves once `n` bytes came back in all. */
  receivedAtLeast(n: number, timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#watchers.delete(check)
        reject(new Error(`${n} bytes not back within ${timeoutMs} ms (at ${this.received})`))
      }, timeoutMs)
      const check = (): void => {
        if (this.received >= n) {
          clearTimeout(timer)
          this.#watchers.delete(check)
          resolve()
        }
      }
      this.#watchers.add(check)
      check()
    })
  }

  /** Stops sending and resolves with the result once ssh exited. */
  async finish(): Promise<StreamResult> {
    this.proc.stdin?.write('finish\n')
    return await this.result
  }
}

describe('one daemon in two networks across NATs', { skip, timeout: 600_000 }, () => {
  let lab: Lab
  let relay1: LabRelay
  let relay2: LabRelay
  let laptop: PeerupHost
  let homeHost: PeerupHost
  let workHost: PeerupHost
  let sshdHome: Sshd
  let sshdWork: Sshd
  let laptopHome: string
  let laptopWork: string
  let workDir: string

  const list = async (): Promise<NetworkState[]> =>
    JSON.parse(await laptop.peerup(['network', 'list', '--json', '--config', laptop.config]))

  /** Inits a node with `--network`; returns it and its peer id. */
  const initNode = async (name: string, network: string, relay: LabRelay) => {
    const node = new PeerupHost(lab.host(name), lab)
    await node.peerup([
      'init',
      '--non-interactive',
      '--relay',
      relay.address,
      '--network',
      network,
      '--dir',
      path.join(node.dir, 'node'),
    ])
    return { node, peerId: (await node.peerup(['whoami', '--config', node.config])).trim() }
  }

  /** `ssh` through `peerup proxy --stdio <peer> ssh` on the laptop, streaming. */
  const stream = (peer: string, sshd: Sshd, label: string): Stream => {
    const proxyCommand = `${laptop.exe} --config ${laptop.config} proxy --stdio ${peer} ssh`
    const options: StreamOptions = {
      ssh: [...sshd.sshArgs(peer), '-o', `ProxyCommand=${proxyCommand}`, peer],
      rate: 512 * 1024,
      maxMs: 240_000,
    }
    return new Stream(
      laptop.host.spawn(process.execPath, [DRIVER, JSON.stringify(options)], {
        env: laptop.env,
        label,
        stdin: 'pipe',
      }),
    )
  }

  before(async () => {
    ensureBuilt()
    lab = await createLab({ nat: 'symmetric', relays: 2, lanPeers: { b: 1 }, name: 'networks' })
    relay1 = await startLabRelay(lab, { stun: false })
    relay2 = await startLabRelay(lab, { host: 'relay2', stun: false })

    // The laptop: home is its main config, work a network added beside it.
    const l = await initNode('a', 'home', relay1)
    laptop = l.node
    laptopHome = l.peerId
    const added = JSON.parse(
      await laptop.peerup([
        'network',
        'add',
        'work',
        '--relay',
        relay2.address,
        '--json',
        '--config',
        laptop.config,
      ]),
    ) as { peerId: string; dir: string }
    laptopWork = added.peerId
    workDir = added.dir

    const h = await initNode('b', 'home', relay1)
    homeHost = h.node
    const w = await initNode('b2', 'work', relay2)
    workHost = w.node
    // work's host also knows relay 1 (and is known there): it can try the laptop's home node.
    await workHost.peerup(['relay', 'add', relay1.address, '--config', workHost.config])

    await relay1.authorize(laptopHome)
    await relay1.authorize(h.peerId)
    await relay1.authorize(w.peerId)
    await relay2.authorize(laptopWork)
    await relay2.authorize(w.peerId)

    // Trust in each network, and the same name for each network's host.
    await homeHost.peerup(['auth', 'add', laptopHome, '--name', 'laptop', '--config', homeHost.config])
    await workHost.peerup(['auth', 'add', laptopWork, '--name', 'laptop', '--config', workHost.config])
    await workHost.peerup(['auth', 'add', laptopHome, '--name', 'laptop-home', '--config', workHost.config])
    await laptop.peerup(['auth', 'add', h.peerId, '--name', 'host', '--config', laptop.config])
    await laptop.peerup(['auth', 'add', `${w.peerId}@work`, '--name', 'host', '--config', laptop.config])

    sshdHome = await startSshd(homeHost.host)
    sshdWork = await startSshd(workHost.host)
    await homeHost.peerup(['service', 'add', 'ssh', '127.0.0.1:22', '--config', homeHost.config])
    await workHost.peerup(['service', 'add', 'ssh', '127.0.0.1:22', '--config', workHost.config])
    // The laptop offers ssh in home only: work's host must not reach it.
    const sshdLaptop = await startSshd(laptop.host)
    void sshdLaptop
    await laptop.peerup(['service', 'add', 'ssh', '127.0.0.1:22', '--config', laptop.config])

    const dh = homeHost.spawn(['daemon', '--config', homeHost.config, '--log-level', 'info'], 'daemon-b')
    const dw = workHost.spawn(['daemon', '--config', workHost.config, '--log-level', 'info'], 'daemon-b2')
    const dl = laptop.spawn(['daemon', '--config', laptop.config, '--log-level', 'info'], 'daemon-a')
    await Promise.all([dh, dw].map((d) => d.waitForOutput(/"msg":"reservation held"/, 30_000)))
    await dl.waitForOutput(/"msg":"daemon started".*"networks":"home,work"/, 30_000)
    for (let i = 0; ; i++) {
      const networks = await list()
      if (networks.length === 2 && networks.every((n) => n.running && n.relaysReserved === 1)) {
        break
      }
      assert.ok(i < 120, `reservations in both networks: ${JSON.stringify(networks)}`)
      await delay(250)
    }
  })

  after(async () => {
    await lab?.close()
  })

  it('runs home and work in one daemon, each with its own peer id and relay', async () => {
    const networks = await list()
    assert.deepEqual(
      networks.map((n) => [n.name, n.main, n.peerId]),
      [
        ['home', true, laptopHome],
        ['work', false, laptopWork],
      ],
    )
    // One daemon: one socket, in the main directory only.
    assert.ok(fs.existsSync(path.join(path.dirname(laptop.config), 'peerup.sock')))
    assert.ok(!fs.existsSync(path.join(workDir, 'peerup.sock')))
  })

  it('sshes to the host of each network by the same name', async (t) => {
    await withLabLogs(t, lab, async () => {
      for (const [target, sshd, ip] of [
        ['host', sshdHome, homeHost.host.ip],
        ['host@work', sshdWork, workHost.host.ip],
      ] as const) {
        const r = await laptop.host.run(
          laptop.exe,
          ['ssh', target, '--config', laptop.config, ...sshd.sshArgs(target), 'ip -o -4 addr show'],
          { env: laptop.env, timeoutMs: 90_000 },
        )
        assert.equal(r.code, 0, r.stderr)
        assert.match(r.stdout, new RegExp(`inet ${ip.replace(/\./g, '\\.')}/`), `${target} is ${ip}`)
      }
    })
  })

  it('refuses a peer of work at home’s node, though both run in the laptop’s one daemon', async (t) => {
    await withLabLogs(t, lab, async () => {
      const refused = await workHost.run(['ping', 'laptop-home', '-c', '1', '--config', workHost.config], {
        timeoutMs: 90_000,
      })
      assert.equal(refused.code, 1, refused.stdout)
      assert.match(refused.stderr, /not authorized by the peer/)
      // In work, the laptop answers it.
      const ok = JSON.parse(
        await workHost.peerup(['ping', 'laptop', '-c', '1', '--json', '--config', workHost.config], 90_000),
      )
      assert.equal(ok.received, 1)
    })
  })

  it('`peerup network remove work` ends work’s session; home’s streams on byte-exact', async (t) => {
    await withLabLogs(t, lab, async () => {
      const home = stream('host', sshdHome, 'ssh-home')
      const work = stream('host@work', sshdWork, 'ssh-work')
      try {
        await Promise.all([home.receivedAtLeast(MiB, 90_000), work.receivedAtLeast(MiB, 90_000)])
        const removed = JSON.parse(
          await laptop.peerup(['network', 'remove', 'work', '--json', '--config', laptop.config]),
        ) as { stopped: boolean; movedTo: string }
        assert.equal(removed.stopped, true)
        assert.ok(fs.existsSync(path.join(removed.movedTo, 'config.yaml')), 'the directory is kept')
        const ended = await work.result
        assert.notEqual(ended.code, 0, 'work’s session ended with its network')
        // home's session goes on: more bytes, then an orderly end with every byte once.
        const at = home.received
        await home.receivedAtLeast(at + MiB, 60_000)
        const r = await home.finish()
        assert.equal(r.code, 0, `ssh exited ${r.code ?? r.signal}: ${r.stderr}`)
        assert.equal(r.remoteSha256, r.sentSha256, 'sshd received exactly what was sent')
        assert.equal(r.received, r.sent)
        assert.equal(r.receivedSha256, r.sentSha256, 'the echo came back exactly')
        assert.deepEqual(
          (await list()).map((n) => [n.name, n.running]),
          [['home', true]],
        )
      } finally {
        await home.proc.stop()
        await work.proc.stop()
      }
    })
  })
})
