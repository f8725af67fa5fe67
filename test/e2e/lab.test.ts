/**
 * Tests of the e2e network lab itself: with real traffic, the topology behaves like the internet and
 * home routers it stands for, sshd.ts gives a working ssh server, and nothing is left behind.
 */

import * as assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { setTimeout as delay } from 'node:timers/promises'
import {
  createLab,
  type Lab,
  type LabHost,
  type LabProcess,
  labSupport,
  sweepStaleLabs,
  withLabLogs,
} from './lab.ts'
import { startSshd } from './sshd.ts'

const support = await labSupport()
const skip = support.ok ? false : `network lab unavailable: ${support.reason}`

// Every lab this file makes, so the last test can prove none of them left anything behind.
const made: Lab[] = []

async function lab(options: Parameters<typeof createLab>[0]): Promise<Lab> {
  const l = await createLab(options)
  made.push(l)
  return l
}

// On each given port, TCP and UDP: answers with the address the connection or datagram came from, as
// this host sees it. Listening on 0.0.0.0 keeps the addresses plain IPv4.
const REPORTER = `
const net = require('node:net'), dgram = require('node:dgram')
const ports = process.argv.slice(1).map(Number)
let up = 0
const ready = () => { if (++up === ports.length * 2) console.log('ready') }
for (const port of ports) {
  net.createServer((s) => s.end(s.remoteAddress + ':' + s.remotePort + '\\n')).listen(port, '0.0.0.0', ready)
  const u = dgram.createSocket('udp4')
  u.on('message', (m, r) => u.send(r.address + ':' + r.port, r.port, r.address))
  u.bind(port, '0.0.0.0', ready)
}
`

// From fixed local ports (UDP: one socket to every destination port; TCP: one connection), asks a
// reporter which source address it saw, and prints { udp: [...], tcp }.
const MAPPING_PROBE = `
const net = require('node:net'), dgram = require('node:dgram')
const [ip, udpPort, tcpPort, ...dsts] = process.argv.slice(1)
const udp = new Promise((resolve) => {
  const seen = new Map()
  const s = dgram.createSocket('udp4')
  s.on('message', (m, r) => {
    seen.set(r.port, m.toString())
    if (seen.size === dsts.length) { s.close(); resolve(dsts.map((d) => seen.get(Number(d)))) }
  })
  s.bind(Number(udpPort), () => { for (const d of dsts) s.send('?', Number(d), ip) })
})
const tcp = new Promise((resolve, reject) => {
  let text = ''
  const c = net.connect({ host: ip, port: Number(dsts[0]), localPort: Number(tcpPort) })
  c.on('data', (d) => { text += d }).on('end', () => resolve(text.trim())).on('error', reject)
})
Promise.all([udp, tcp]).then(([udp, tcp]) => console.log(JSON.stringify({ udp, tcp })))
setTimeout(() => { console.error('no answer'); process.exit(1) }, 3000).unref()
`

async function startReporter(host: LabHost, ports: number[]): Promise<LabProcess> {
  const proc = host.spawn(process.execPath, ['-e', REPORTER, ...ports.map(String)], {
    label: `reporter:${ports.join(',')}`,
  })
  await proc.waitForOutput(/ready/, 5000)
  return proc
}

/** The source address `ip:port` saw for a TCP connection from `from`, or throws. */
async function observedFrom(from: LabHost, ip: string, port: number): Promise<string> {
  const r = await from.mustRun('timeout', [
    '3',
    'bash',
    '-c',
    'exec 3<>"/dev/tcp/$0/$1" && head -n1 <&3',
    ip,
    String(port),
  ])
  return r.stdout.trim()
}

function namespacesNow(): string[] {
  return fs.existsSync('/run/netns') ? fs.readdirSync('/run/netns') : []
}

function isRunning(pid: number | undefined): boolean {
  if (pid === undefined) {
    return false
  }
  try {
    process.kill(pid, 0)
    // A zombie still answers signal 0; it no longer runs.
    return !/^\d+ \(.*\) Z/.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'))
  } catch {
    return false
  }
}

describe('lab with cone NAT and a LAN peer', { skip }, () => {
  let l: Lab
  before(async () => {
    l = await lab({ nat: 'cone', lanPeers: 1, name: 'lab-test-cone' })
  })
  after(() => l?.close())

  it('builds the documented hosts and addresses', async (t) => {
    await withLabLogs(t, l, async () => {
      assert.deepEqual(l.hosts, ['relay', 'router-a', 'a', 'a2', 'router-b', 'b'])
      for (const ns of l.namespaces) {
        assert.match(ns, new RegExp(`^pu-${l.id}-`))
        assert.ok(ns.length <= 15, ns)
      }
      const expected = {
        relay: '198.18.0.1',
        'router-a': '198.18.0.2',
        a: '100.64.1.2',
        a2: '100.64.1.3',
        b: '100.64.2.2',
      }
      for (const [name, ip] of Object.entries(expected)) {
        const addrs = await l.host(name).mustRun('ip', ['-4', '-o', 'addr', 'show'])
        assert.match(addrs.stdout, new RegExp(`inet ${ip.replaceAll('.', '\\.')}/24`), name)
        // Only the lab's ranges: no IPv6 (link-local) addresses on lab links, only loopback's ::1.
        const v6 = await l.host(name).mustRun('ip', ['-6', '-o', 'addr', 'show'])
        assert.deepEqual(
          v6.stdout
            .split('\n')
            .filter(Boolean)
            .map((line) => line.split(/\s+/)[1]),
          v6.stdout.trim() === '' ? [] : ['lo'],
          name,
        )
      }
      assert.equal(l.host('a').publicIp, '198.18.0.2')
      assert.equal(l.host('b').publicIp, '198.18.0.3')
    })
  })

  it('lets a and b reach the relay, which sees them as their routers (MASQUERADE)', {
    timeout: 15_000,
  }, async (t) => {
    await withLabLogs(t, l, async () => {
      const reporter = await startReporter(l.host('relay'), [7000])
      try {
        assert.match(await observedFrom(l.host('a'), '198.18.0.1', 7000), /^198\.18\.0\.2:\d+$/)
        assert.match(await observedFrom(l.host('b'), '198.18.0.1', 7000), /^198\.18\.0\.3:\d+$/)
      } finally {
        await reporter.stop()
      }
    })
  })

  it('drops NEW inbound connections at the router, even from a host that routes to the LAN', {
    timeout: 15_000,
  }, async (t) => {
    await withLabLogs(t, l, async () => {
      const a = l.host('a')
      const relay = l.host('relay')
      const reporter = await startReporter(a, [7100])
      // A neighbour on the ISP segment that routes a's private network to router-a: the packets reach
      // the router, so only its firewall stands in the way.
      await relay.mustRun('ip', ['route', 'add', '100.64.1.0/24', 'via', '198.18.0.2'])
      try {
        assert.equal(await a.canConnect('127.0.0.1', 7100), true, 'a listens')
        const [direct, viaPublic] = await Promise.all([
          relay.canConnect(a.ip, 7100),
          relay.canConnect('198.18.0.2', 7100),
        ])
        assert.equal(direct, false, 'relay → a (private address, routed) must fail')
        assert.equal(viaPublic, false, 'relay → router-a public address must fail (no port forward)')
        const counters = await l.host('router-a').mustRun(l.iptables, ['-L', 'FORWARD', '-n', '-v', '-x'])
        const drop = counters.stdout.split('\n').find((line) => /\bDROP\b/.test(line) && /\bwan\b/.test(line))
        assert.ok(
          drop !== undefined && Number(drop.trim().split(/\s+/)[0]) > 0,
          `FORWARD drop counted:\n${counters.stdout}`,
        )
      } finally {
        await relay.run('ip', ['route', 'del', '100.64.1.0/24'])
        await reporter.stop()
      }
    })
  })

  it('keeps the two sites apart: a reaches neither b nor router-b', { timeout: 15_000 }, async (t) => {
    await withLabLogs(t, l, async () => {
      const a = l.host('a')
      const b = l.host('b')
      const reporter = await startReporter(b, [7200])
      try {
        assert.equal(await b.canConnect('127.0.0.1', 7200), true, 'b listens')
        const [priv, pub] = await Promise.all([a.canConnect(b.ip, 7200), a.canConnect('198.18.0.3', 7200)])
        assert.equal(priv, false, 'a → b private address must fail (not routable)')
        assert.equal(pub, false, 'a → router-b public address must fail')
      } finally {
        await reporter.stop()
      }
    })
  })

  it('lets LAN peers a and a2 talk directly, without NAT', { timeout: 15_000 }, async (t) => {
    await withLabLogs(t, l, async () => {
      const a = l.host('a')
      const a2 = l.host('a2')
      const [ra, ra2] = await Promise.all([startReporter(a, [7300]), startReporter(a2, [7301])])
      try {
        assert.match(await observedFrom(a2, a.ip, 7300), /^100\.64\.1\.3:\d+$/)
        assert.match(await observedFrom(a, a2.ip, 7301), /^100\.64\.1\.2:\d+$/)
      } finally {
        await Promise.all([ra.stop(), ra2.stop()])
      }
    })
  })

  it('cone NAT keeps the source port, for every destination', { timeout: 15_000 }, async (t) => {
    await withLabLogs(t, l, async () => {
      const reporter = await startReporter(l.host('relay'), [7001, 7002, 7003])
      try {
        const r = await l
          .host('a')
          .mustRun(l.node, ['-e', MAPPING_PROBE, '198.18.0.1', '40000', '40001', '7001', '7002', '7003'])
        const seen = JSON.parse(r.stdout) as { udp: string[]; tcp: string }
        assert.deepEqual(seen.udp, ['198.18.0.2:40000', '198.18.0.2:40000', '198.18.0.2:40000'])
        assert.equal(seen.tcp, '198.18.0.2:40001')
      } finally {
        await reporter.stop()
      }
    })
  })

  it('runs a real sshd: ssh from a (behind NAT) to the relay runs a command', {
    timeout: 20_000,
  }, async (t) => {
    await withLabLogs(t, l, async () => {
      const sshd = await startSshd(l.host('relay'), { port: 2222 })
      try {
        const a = l.host('a')
        const ok = await a.run('ssh', [...sshd.sshArgs('relay'), '198.18.0.1', 'echo ok'], {
          timeoutMs: 15_000,
        })
        assert.equal(ok.stdout, 'ok\n', ok.stderr)
        assert.equal(ok.code, 0)
        await sshd.process.waitForOutput(/Accepted publickey for root from 198\.18\.0\.2 /, 5000)
        // The known_hosts file is what vouches for the server: without it strict checking refuses.
        const untrusted = await a.run(
          'ssh',
          ['-o', 'UserKnownHostsFile=/dev/null', ...sshd.sshArgs('relay'), '198.18.0.1', 'echo ok'],
          { timeoutMs: 15_000 },
        )
        assert.notEqual(untrusted.code, 0)
        assert.match(untrusted.stderr, /Host key verification failed/)
      } finally {
        await sshd.stop()
      }
      assert.equal(isRunning(sshd.process.pid), false)
      assert.equal(fs.existsSync(sshd.dir), false)
    })
  })
})

describe('lab with symmetric NAT', { skip }, () => {
  let l: Lab
  before(async () => {
    l = await lab({ nat: 'symmetric', relays: 2, name: 'lab-test-symmetric' })
  })
  after(() => l?.close())

  it('gives every flow a fresh random source port (--random-fully)', { timeout: 15_000 }, async (t) => {
    await withLabLogs(t, l, async () => {
      const reporter = await startReporter(l.host('relay'), [7001, 7002, 7003])
      try {
        const r = await l
          .host('a')
          .mustRun(l.node, ['-e', MAPPING_PROBE, '198.18.0.1', '40000', '40001', '7001', '7002', '7003'])
        const seen = JSON.parse(r.stdout) as { udp: string[]; tcp: string }
        const ports = seen.udp.map((s) => {
          assert.match(s, /^198\.18\.0\.2:\d+$/)
          return Number(s.split(':')[1])
        })
        // Three random picks from ~64k ports: a repeat, or all three landing on 40000, is ~1e-9.
        assert.ok(new Set(ports).size > 1, `one socket, three mappings: ${ports}`)
        assert.ok(
          ports.some((p) => p !== 40000),
          `${ports}`,
        )
        assert.match(seen.tcp, /^198\.18\.0\.2:\d+$/)
        assert.notEqual(seen.tcp, '198.18.0.2:40001')
      } finally {
        await reporter.stop()
      }
    })
  })

  it('adds relay2 on the public segment when asked', { timeout: 15_000 }, async (t) => {
    await withLabLogs(t, l, async () => {
      assert.deepEqual(l.hosts, ['relay', 'relay2', 'router-a', 'a', 'router-b', 'b'])
      const relay2 = l.host('relay2')
      assert.equal(relay2.ip, '198.18.0.4')
      const reporter = await startReporter(relay2, [7000])
      try {
        assert.match(await observedFrom(l.host('b'), relay2.ip, 7000), /^198\.18\.0\.3:\d+$/)
        assert.match(await observedFrom(l.host('relay'), relay2.ip, 7000), /^198\.18\.0\.1:\d+$/)
      } finally {
        await reporter.stop()
      }
    })
  })
})

describe('lab with a different NAT per router', { skip }, () => {
  it('applies each router its own MASQUERADE rule', { timeout: 15_000 }, async () => {
    await using l = await lab({ nat: { a: 'cone', b: 'symmetric' }, name: 'lab-test-mixed' })
    const rule = async (router: string) =>
      (await l.host(router).mustRun(l.iptables, ['-t', 'nat', '-S', 'POSTROUTING'])).stdout
    assert.match(await rule('router-a'), /-A POSTROUTING -o wan -j MASQUERADE\n/)
    assert.match(await rule('router-b'), /-A POSTROUTING -o wan -j MASQUERADE --random-fully\n/)
  })
})

describe('lab cleanup', { skip }, () => {
  it('close() stops processes and removes namespaces, temp dir and state; twice is fine', {
    timeout: 15_000,
  }, async () => {
    const l = await lab({ nat: 'cone', name: 'lab-test-close' })
    const sleeper = l.host('a').spawn('sleep', ['300'])
    // A process the lab did not start itself (as if a daemon forked away): found by `ip netns pids`.
    const forked = await l
      .host('b')
      .mustRun('bash', ['-c', 'setsid sleep 300 >/dev/null 2>&1 < /dev/null & echo $!'])
    const stray = Number(forked.stdout.trim())
    assert.ok(isRunning(stray))
    assert.ok(fs.existsSync(l.tmpDir))
    await Promise.all([l.close(), l.close()])
    await l.close()
    assert.equal(isRunning(sleeper.pid), false)
    assert.equal(isRunning(stray), false)
    assert.equal(fs.existsSync(l.tmpDir), false)
    assert.equal(fs.existsSync(`/run/peerup-lab/${l.id}.json`), false)
    assert.deepEqual(
      namespacesNow().filter((ns) => ns.startsWith(`pu-${l.id}-`)),
      [],
    )
    await assert.rejects(l.host('a').run('true'), /closed/)
  })

  it('sweepStaleLabs() removes the lab of a killed process and spares live ones', {
    timeout: 20_000,
  }, async () => {
    const live = await lab({ nat: 'cone', name: 'lab-test-live' })
    const script = `
      const { createLab } = await import(${JSON.stringify(path.join(import.meta.dirname, 'lab.ts'))})
      const lab = await createLab({ nat: 'cone', name: 'lab-test-orphan' })
      const p = lab.host('a').spawn('sleep', ['300'])
      console.log(JSON.stringify({ id: lab.id, namespaces: lab.namespaces, tmpDir: lab.tmpDir, pid: p.pid }))
      setInterval(() => {}, 1000)
    `
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    try {
      const line = await new Promise<string>((resolve, reject) => {
        let text = ''
        child.stdout.setEncoding('utf8').on('data', (d: string) => {
          text += d
          if (text.includes('\n')) {
            resolve(text.split('\n')[0] ?? '')
          }
        })
        child.once('exit', (code) => reject(new Error(`orphan maker exited ${code}`)))
      })
      const orphan = JSON.parse(line) as { id: string; namespaces: string[]; tmpDir: string; pid: number }
      // Wait until `ip netns exec` has entered the namespace, so the sleeper is really inside it.
      while (
        (
          await live
            .host('a')
            .run('ip', ['netns', 'pids', orphan.namespaces.find((ns) => ns.endsWith('-a')) ?? ''])
        ).stdout.trim() === ''
      ) {
        await delay(20)
      }
      child.kill('SIGKILL')
      await new Promise((resolve) => child.once('exit', resolve))
      assert.ok(isRunning(orphan.pid), 'the orphan sleeper outlives its parent')

      const removed = await sweepStaleLabs()
      // Another test process running at the same time may sweep the orphan first, so what this call
      // removed is checked loosely; that the orphan is gone and live labs are not is checked exactly.
      assert.ok(
        removed.every((ns) => !live.namespaces.includes(ns)),
        `swept a live lab: ${removed}`,
      )
      assert.deepEqual(
        namespacesNow().filter((ns) => ns.startsWith(`pu-${orphan.id}-`)),
        [],
      )
      assert.equal(isRunning(orphan.pid), false)
      assert.equal(fs.existsSync(orphan.tmpDir), false)
      assert.equal(fs.existsSync(`/run/peerup-lab/${orphan.id}.json`), false)
      // The live lab of this process is untouched and still works.
      for (const ns of live.namespaces) {
        assert.ok(namespacesNow().includes(ns), ns)
      }
      const reporter = await startReporter(live.host('relay'), [7000])
      assert.match(await observedFrom(live.host('a'), '198.18.0.1', 7000), /^198\.18\.0\.2:\d+$/)
      await reporter.stop()
    } finally {
      child.kill('SIGKILL')
      await live.close()
      await sweepStaleLabs()
    }
  })

  it('leaves no namespace, temp dir or state file of this run behind', async () => {
    await Promise.all(made.map((l) => l.close()))
    const now = namespacesNow()
    for (const l of made) {
      assert.deepEqual(
        now.filter((ns) => ns.startsWith(`pu-${l.id}-`)),
        [],
      )
      assert.equal(fs.existsSync(l.tmpDir), false, l.tmpDir)
      assert.equal(fs.existsSync(`/run/peerup-lab/${l.id}.json`), false)
    }
  })
})
