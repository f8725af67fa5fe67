/**
 * The direct path, end to end, with the built executable in the NAT lab (issue 6):
 *
 * - cone NAT on both routers: a relayed connection between a and b becomes DIRECT (WebRTC, ICE with
 *   the relay's STUN) within 10 s; an SSH session that began on the relay survives the upgrade; a
 *   100 MiB transfer started after it does not cross the relay (its iptables byte counters say so);
 * - a transfer that began on the relay while the punch could not connect (router-a dropping what a
 *   sends to router-b) is byte-exact after a later round punches through, and its session moves;
 * - a and a2 on one LAN: they go DIRECT over TCP between their private addresses, not through the relay;
 * - symmetric (`--random-fully`) NAT on both routers: the upgrade fails, `ping --until-direct` says
 *   so, and proxied traffic keeps flowing through the relay.
 */

import * as assert from 'node:assert/strict'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { createLab, type Lab, type LabProcess, labSupport, withLabLogs } from './lab.ts'
import {
  addNames,
  ensureBuilt,
  initLabNode,
  type LabRelay,
  logLines,
  type PeerupHost,
  relayCounters,
  sshThrough,
  startLabRelay,
  startSshTarget,
  waitUntilReachable,
} from './peerup-host.ts'
import { type Sshd, startSshd } from './sshd.ts'

const support = await labSupport()
const skip = support.ok ? false : `network lab unavailable: ${support.reason}`
const MiB = 1024 * 1024

/** How long a relayed connection may take to become direct under cone NAT (the bound). */
const DIRECT_WITHIN_MS = 10_000

/** CPU seconds (user + system) a process has used so far. */
function cpuSeconds(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  // utime and stime, fields 14 and 15 of stat, in clock ticks (100 per second on Linux).
  return (Number(fields[11]) + Number(fields[12])) / 100
}

describe('the direct path with cone NAT, and on a LAN', { skip, timeout: 600_000 }, () => {
  let lab: Lab
  let relay: LabRelay
  let a: PeerupHost
  let b: PeerupHost
  let a2: PeerupHost
  let sshdB: Sshd
  let sshdA2: Sshd
  let relayBytes: () => Promise<number>
  let daemonB: LabProcess

  before(async () => {
    ensureBuilt()
    lab = await createLab({ nat: 'cone', lanPeers: 1, name: 'direct-cone' })
    relay = await startLabRelay(lab)
    relayBytes = await relayCounters(lab, relay.host.host)
    const na = await initLabNode(lab, 'a', relay)
    const nb = await initLabNode(lab, 'b', relay)
    const na2 = await initLabNode(lab, 'a2', relay)
    a = na.node
    b = nb.node
    a2 = na2.node
    addNames(a, { b: nb.peerId, a2: na2.peerId })
    for (const [target, sshd] of [
      [b, 'b'],
      [a2, 'a2'],
    ] as const) {
      await target.peerup(['auth', 'add', na.peerId, '--comment', 'a', '--config', target.config])
      await target.peerup(['service', 'add', 'ssh', '127.0.0.1:22', '--config', target.config])
      const daemon = target.spawn(
        ['daemon', '--config', target.config, '--log-level', 'info'],
        `daemon-${sshd}`,
      )
      if (target === b) {
        daemonB = daemon
      }
    }
    sshdB = await startSshd(b.host, { port: 22 })
    sshdA2 = await startSshd(a2.host, { port: 22 })
  })

  after(async () => {
    await lab?.close()
  })

  it('a and b cannot reach each other except through peerup', async () => {
    assert.equal(await a.host.canConnect(b.host.ip, 22), false)
    assert.equal(await a.host.canConnect(b.host.publicIp, 22), false)
  })

  // The punch first (ADR 0007); with it off on a (PEERUP_PUNCH=off, src/env.ts), WebRTC, the fallback.
  const ways = [
    { name: 'a TCP punch', transport: 'tcp', env: (): Record<string, string> => a.env },
    {
      name: 'WebRTC',
      transport: 'webrtc',
      env: (): Record<string, string> => ({ ...a.env, PEERUP_PUNCH: 'off' }),
    },
  ] as const
  for (const via of ways) {
    it(`ping --until-direct: RELAYED, then DIRECT via ${via.name} within 10 s`, async (t) => {
      await withLabLogs(t, lab, async () => {
        await waitUntilReachable(a, 'b')
        const r = await a.host.run(
          a.exe,
          [
            'ping',
            'b',
            '--until-direct',
            '--interval',
            '500ms',
            '--deadline',
            '30s',
            '--json',
            '--config',
            a.config,
          ],
          { env: via.env(), timeoutMs: 60_000 },
        )
        assert.equal(r.code, 0, r.stderr)
        const report = JSON.parse(r.stdout)
        assert.equal(report.path.type, 'RELAYED')
        assert.equal(report.finalPath.type, 'DIRECT')
        assert.equal(report.finalPath.transport, via.transport)
        assert.equal(report.pathChanges.length, 1)
        assert.equal(report.pathChanges[0].from.relay, relay.peerId)
        assert.equal(report.upgrade.state, 'direct')
        assert.ok(
          report.upgrade.timeToDirectMs < DIRECT_WITHIN_MS,
          `direct after ${report.upgrade.timeToDirectMs} ms`,
        )
        t.diagnostic(`ping --until-direct: direct (${via.name}) after ${report.upgrade.timeToDirectMs} ms`)
      })
    })

    it(`an SSH session started on the relay survives the upgrade to ${via.name}`, async (t) => {
      await withLabLogs(t, lab, async () => {
        // ProxyCommand: this process reaches b and opens the session's stream at once, on the relayed
        // connection; its own upgrade runs meanwhile. The session then carries on across it.
        const proxyCommand = `${a.exe} --config ${a.config} proxy --stdio b ssh --log-level info`
        const ssh = a.host.spawn(
          'ssh',
          [...sshdB.sshArgs('b'), '-o', `ProxyCommand=${proxyCommand}`, 'b', 'cat'],
          {
            stdin: 'pipe',
            env: via.env(),
            label: `ssh-session-${via.transport}`,
          },
        )
        ssh.stdin?.write('before-upgrade\n')
        await ssh.waitForOutput(/^before-upgrade$/m, 30_000)
        await ssh.waitForOutput(/"msg":"direct path up"/, DIRECT_WITHIN_MS + 20_000)
        const opened = logLines(ssh, 'service session opened')
        assert.equal(opened.length, 1)
        assert.match(String(opened[0]?.path), /^RELAYED via /, 'the session began on the relay')
        const up = logLines(ssh, 'direct path up')[0]
        assert.equal(up?.transport, via.transport)
        assert.ok(Number(up?.timeToDirectMs) < DIRECT_WITHIN_MS, `direct after ${up?.timeToDirectMs} ms`)
        ssh.stdin?.write('after-upgrade\n')
        await ssh.waitForOutput(/^after-upgrade$/m, 30_000)
        ssh.stdin?.end()
        const { code } = await ssh.exited
        assert.equal(code, 0, ssh.output())
      })
    })

    it(`a 100 MiB transfer started after the upgrade to ${via.name} does not cross the relay`, async (t) => {
      await withLabLogs(t, lab, async () => {
        const proxy = a.spawn(
          ['proxy', 'b', 'ssh', '2222', '--config', a.config, '--log-level', 'info'],
          `proxy-b-${via.transport}`,
          via.env(),
        )
        try {
          await proxy.waitForOutput(/forwarding 127\.0\.0\.1:2222/, 30_000)
          await proxy.waitForOutput(/"msg":"direct path up"/, DIRECT_WITHIN_MS + 20_000)
          const file = path.join(a.dir, 'payload')
          await a.host.mustRun('sh', ['-c', `head -c ${100 * MiB} /dev/urandom > ${file}`])
          const want = (await a.host.mustRun('sha256sum', [file])).stdout.split(' ')[0]
          const before = await relayBytes()
          const cpuBefore = [cpuSeconds(proxy.pid as number), cpuSeconds(daemonB.pid as number)]
          const started = performance.now()
          const r = await sshThrough(a.host, sshdB, 2222, 'sha256sum', file, 180_000)
          const seconds = (performance.now() - started) / 1000
          const crossed = (await relayBytes()) - before
          const cpu = [cpuSeconds(proxy.pid as number), cpuSeconds(daemonB.pid as number)].map(
            (c, i) => c - (cpuBefore[i] ?? 0),
          )
          assert.equal(r.code, 0, r.stderr)
          assert.equal(r.stdout.split(' ')[0], want)
          const streams = logLines(proxy, 'service session opened')
          assert.equal(streams.at(-1)?.path, `DIRECT (${via.transport})`)
          t.diagnostic(
            `100 MiB over ${via.name} in ${seconds.toFixed(1)} s (${(100 / seconds).toFixed(1)} MiB/s), CPU ${cpu[0]?.toFixed(1)} s on a (proxy), ${cpu[1]?.toFixed(1)} s on b (daemon); relay port saw ${crossed} bytes meanwhile`,
          )
          // Relayed, it would be 200 MiB (in and out); keep-alives and pings are a few KiB.
          assert.ok(crossed < 1 * MiB, `${crossed} bytes crossed the relay during the transfer`)
        } finally {
          await proxy.stop()
        }
      })
    })
  }

  it('a transfer running on the relay when the punch comes up is byte-exact, and moves to the punched connection', async (t) => {
    await withLabLogs(t, lab, async () => {
      // Everything from a to router-b's public address is dropped on router-a, so the first punch
      // round (and WebRTC) cannot connect while the transfer starts on the relay; the block is
      // lifted a moment after, and a later round, from fresh ports, punches through mid-transfer.
      const routerA = lab.host('router-a')
      const block = ['FORWARD', '-s', a.host.ip, '-d', lab.host('router-b').publicIp, '-j', 'DROP']
      await routerA.mustRun(lab.iptables, ['-w', '-I', ...block])
      let blocked = true
      const proxy = a.spawn(
        ['proxy', 'b', 'ssh', '2224', '--config', a.config, '--log-level', 'info'],
        'proxy-b-race',
      )
      try {
        await proxy.waitForOutput(/forwarding 127\.0\.0\.1:2224/, 30_000)
        const file = path.join(a.dir, 'payload-race')
        await a.host.mustRun('sh', ['-c', `head -c ${64 * MiB} /dev/urandom > ${file}`])
        const want = (await a.host.mustRun('sha256sum', [file])).stdout.split(' ')[0]
        // 1 MiB every 50 ms: about 3 s on the wire whatever the path, long enough to be moved.
        const paced = `for i in $(seq 0 63); do dd if=${file} bs=1M skip=$i count=1 status=none; sleep 0.05; done`
        const transfer = a.host.run(
          'sh',
          ['-c', `(${paced}) | ssh ${sshdB.sshArgs('b', { port: 2224 }).join(' ')} 127.0.0.1 sha256sum`],
          { timeoutMs: 120_000 },
        )
        await proxy.waitForOutput(/"msg":"service session opened".*"path":"RELAYED via /, 30_000)
        await new Promise((resolve) => setTimeout(resolve, 500))
        await routerA.mustRun(lab.iptables, ['-w', '-D', ...block])
        blocked = false
        const liftedAt = new Date().toISOString()
        const r = await transfer
        assert.equal(r.code, 0, r.stderr)
        assert.equal(r.stdout.split(' ')[0], want)
        const punched = logLines(proxy, 'tcp punched')[0]
        for (const msg of [
          'service session opened',
          'direct path failed; traffic stays on the relay',
          'tcp punched',
          'session moved to a direct path',
        ]) {
          for (const l of logLines(proxy, msg)) {
            t.diagnostic(`${l.time} ${msg} ${String(l.error ?? l.lead ?? l.path ?? '').slice(0, 160)}`)
          }
        }
        t.diagnostic(`block lifted at ${liftedAt}`)
        assert.ok(punched !== undefined, 'the punch connected')
        assert.equal(logLines(proxy, 'direct path up')[0]?.transport, 'tcp')
        assert.equal(logLines(proxy, 'session moved to a direct path').length, 1)
      } finally {
        if (blocked) {
          await routerA.mustRun(lab.iptables, ['-w', '-D', ...block])
        }
        await proxy.stop()
      }
    })
  })

  it('two nodes on one LAN go DIRECT over TCP between their private addresses, not through the relay', async (t) => {
    await withLabLogs(t, lab, async () => {
      await waitUntilReachable(a, 'a2')
      const r = await a.host.run(
        a.exe,
        [
          'ping',
          'a2',
          '--until-direct',
          '--interval',
          '500ms',
          '--deadline',
          '20s',
          '--json',
          '--config',
          a.config,
        ],
        { env: a.env, timeoutMs: 60_000 },
      )
      assert.equal(r.code, 0, r.stderr)
      const report = JSON.parse(r.stdout)
      assert.equal(report.finalPath.type, 'DIRECT')
      assert.equal(report.finalPath.transport, 'tcp')
      t.diagnostic(
        `ping a2: connected ${report.path.type} (${report.via}), then ${report.finalPath.remoteAddr}`,
      )
      assert.match(report.finalPath.remoteAddr, new RegExp(`^/ip4/${a2.host.ip.replaceAll('.', '\\.')}/tcp/`))

      const proxy = a.spawn(
        ['proxy', 'a2', 'ssh', '2223', '--config', a.config, '--log-level', 'info'],
        'proxy-a2',
      )
      try {
        await proxy.waitForOutput(/forwarding 127\.0\.0\.1:2223/, 30_000)
        await proxy.waitForOutput(/"to":"DIRECT \(tcp\)"/, 20_000)
        const file = path.join(a.dir, 'payload-lan')
        await a.host.mustRun('sh', ['-c', `head -c ${20 * MiB} /dev/urandom > ${file}`])
        const want = (await a.host.mustRun('sha256sum', [file])).stdout.split(' ')[0]
        const before = await relayBytes()
        const out = await sshThrough(a.host, sshdA2, 2223, 'sha256sum', file, 120_000)
        const crossed = (await relayBytes()) - before
        assert.equal(out.code, 0, out.stderr)
        assert.equal(out.stdout.split(' ')[0], want)
        assert.equal(logLines(proxy, 'service session opened').at(-1)?.path, 'DIRECT (tcp)')
        assert.ok(crossed < 1 * MiB, `${crossed} bytes crossed the relay during the LAN transfer`)
      } finally {
        await proxy.stop()
      }
    })
  })
})

describe('the direct path with symmetric NAT', { skip, timeout: 600_000 }, () => {
  let lab: Lab
  let relay: LabRelay
  let a: PeerupHost
  let sshd: Sshd
  let relayBytes: () => Promise<number>
  let daemonB: LabProcess

  before(async () => {
    ensureBuilt()
    lab = await createLab({ nat: 'symmetric', name: 'direct-symmetric' })
    relay = await startLabRelay(lab)
    relayBytes = await relayCounters(lab, relay.host.host)
    ;({ a, daemonB, sshd } = await startSshTarget(lab, relay))
  })

  after(async () => {
    await lab?.close()
  })

  it('the upgrade fails and is reported; proxied traffic keeps flowing through the relay', async (t) => {
    await withLabLogs(t, lab, async () => {
      // The proxy reaches b once at start and exits if it cannot: wait for b's reservation first.
      await waitUntilReachable(a, 'b')
      const proxy = a.spawn(
        ['proxy', 'b', 'ssh', '2222', '--config', a.config, '--log-level', 'info'],
        'proxy-b',
      )
      try {
        await proxy.waitForOutput(/forwarding 127\.0\.0\.1:2222/, 60_000)
        const failed = await proxy.waitForOutput(
          /"msg":"direct path failed; traffic stays on the relay".*/,
          60_000,
        )
        t.diagnostic(`proxy: ${failed[0]}`)
        assert.match(failed[0], /webrtc: /)
        assert.match(failed[0], /"retryInMs":\d+/)

        const file = path.join(a.dir, 'payload')
        await a.host.mustRun('sh', ['-c', `head -c ${100 * MiB} /dev/urandom > ${file}`])
        const want = (await a.host.mustRun('sha256sum', [file])).stdout.split(' ')[0]
        const before = await relayBytes()
        const pids = [proxy.pid, daemonB.pid, relay.process.pid] as number[]
        const cpuBefore = pids.map(cpuSeconds)
        const started = performance.now()
        const r = await sshThrough(a.host, sshd, 2222, 'sha256sum', file, 180_000)
        const seconds = (performance.now() - started) / 1000
        const crossed = (await relayBytes()) - before
        const cpu = pids.map((pid, i) => cpuSeconds(pid) - (cpuBefore[i] ?? 0))
        t.diagnostic(
          `100 MiB through the relay in ${seconds.toFixed(1)} s (${(100 / seconds).toFixed(1)} MiB/s), CPU ${cpu[0]?.toFixed(1)} s on a (proxy), ${cpu[1]?.toFixed(1)} s on b (daemon), ${cpu[2]?.toFixed(1)} s on the relay`,
        )
        assert.equal(r.code, 0, r.stderr)
        assert.equal(r.stdout.split(' ')[0], want)
        assert.match(String(logLines(proxy, 'service session opened').at(-1)?.path), /^RELAYED via /)
        // In and out of the relay: twice the payload at least.
        assert.ok(crossed > 200 * MiB, `only ${crossed} bytes crossed the relay`)
      } finally {
        await proxy.stop()
      }

      const r = await a.host.run(
        a.exe,
        [
          'ping',
          'b',
          '--until-direct',
          '--interval',
          '500ms',
          '--deadline',
          '40s',
          '--json',
          '--config',
          a.config,
        ],
        { env: a.env, timeoutMs: 90_000 },
      )
      assert.equal(r.code, 1, `ping --until-direct should fail: ${r.stdout}${r.stderr}`)
      t.diagnostic(`ping --until-direct: ${r.stderr.trim()}`)
      assert.match(r.stderr, /no direct path to b: .*traffic stays RELAYED via /)
      const report = JSON.parse(r.stdout)
      assert.equal(report.finalPath.type, 'RELAYED')
      assert.equal(report.upgrade.state, 'failed')
      assert.ok(report.received > 0, 'pings kept being answered through the relay')
    })
  })
})
