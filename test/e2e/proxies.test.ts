/**
 * Persistent proxies with the built executable in the NAT lab (test/e2e/lab.ts): a's daemon runs
 * `peerup proxy add b-ssh b ssh 2222`, a local port forwarded to real sshd on b, which sits behind
 * another NAT. The proxy survives a restart of a's daemon; while b's daemon is down the port still
 * accepts, and the ssh session waiting on it completes byte-exact once b is back; after a restart
 * of the relay, new sessions go through again by themselves.
 */

import * as assert from 'node:assert/strict'
import * as path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { createLab, type Lab, type LabProcess, labSupport, withLabLogs } from './lab.ts'
import {
  addNames,
  ensureBuilt,
  initLabNode,
  type LabRelay,
  type PeerupHost,
  RELAY_UNIT_ENV,
  startLabRelay,
} from './peerup-host.ts'
import { type Sshd, startSshd } from './sshd.ts'

const support = await labSupport()
const skip = support.ok ? false : `network lab unavailable: ${support.reason}`

/** The local port of the proxy on a. */
const PORT = 2222

/** How many times `pattern` occurs in `text`. */
function count(text: string, pattern: RegExp): number {
  return text.match(new RegExp(pattern.source, 'g'))?.length ?? 0
}

describe('persistent proxies across two NATs', { skip, timeout: 600_000 }, () => {
  let lab: Lab
  let relay: LabRelay
  let a: PeerupHost
  let b: PeerupHost
  let daemonA: LabProcess
  let daemonB: LabProcess
  let sshd: Sshd

  const startDaemon = (host: PeerupHost, label: string): LabProcess =>
    host.spawn(['daemon', '--config', host.config, '--log-level', 'info'], label)

  /** ssh through a's local port; ConnectTimeout above the proxy's own wait (ssh takes the first -o). */
  const sshArgs = (): string[] => [
    '-o',
    'ConnectTimeout=60',
    ...sshd.sshArgs('b', { port: PORT }),
    '127.0.0.1',
  ]

  before(async () => {
    ensureBuilt()
    lab = await createLab({ nat: 'symmetric', name: 'proxies' })
    // STUN off: the path stays on the relay, which this test restarts.
    relay = await startLabRelay(lab, { stun: false })
    const na = await initLabNode(lab, 'a', relay)
    const nb = await initLabNode(lab, 'b', relay)
    a = na.node
    b = nb.node
    await b.peerup(['auth', 'add', na.peerId, '--comment', 'a', '--config', b.config])
    addNames(a, { b: nb.peerId })
    sshd = await startSshd(b.host, { port: 22 })
    await b.peerup(['service', 'add', 'ssh', '127.0.0.1:22', '--config', b.config])
    daemonB = startDaemon(b, 'daemon-b')
    await daemonB.waitForOutput(/"msg":"reservation held"/, 30_000)
    daemonA = startDaemon(a, 'daemon-a')
    await daemonA.waitForOutput(/"msg":"daemon started"/, 30_000)
  })

  after(async () => {
    await lab?.close()
  })

  it('proxy add forwards at once, and the proxy is back after a restart of the daemon', async (t) => {
    await withLabLogs(t, lab, async () => {
      const added = JSON.parse(
        await a.peerup(['proxy', 'add', 'b-ssh', 'b', 'ssh', String(PORT), '--json', '--config', a.config]),
      )
      assert.equal(added.bind, `127.0.0.1:${PORT}`)
      assert.equal(added.listening, true)
      const first = await a.host.run('ssh', [...sshArgs(), 'echo before-restart'], { timeoutMs: 60_000 })
      assert.equal(first.code, 0, first.stderr)
      assert.equal(first.stdout.trim(), 'before-restart')

      await daemonA.stop()
      assert.equal(await a.host.canConnect('127.0.0.1', PORT), false, 'nothing listens without the daemon')
      daemonA = startDaemon(a, 'daemon-a-restarted')
      await daemonA.waitForOutput(
        new RegExp(`"msg":"proxy listening","listen":"127\\.0\\.0\\.1:${PORT}"`),
        30_000,
      )
      const again = await a.host.run('ssh', [...sshArgs(), 'echo after-restart'], { timeoutMs: 60_000 })
      assert.equal(again.code, 0, again.stderr)
      assert.equal(again.stdout.trim(), 'after-restart')

      const list = JSON.parse(await a.peerup(['proxy', 'list', '--json', '--config', a.config]))
      assert.equal(list.length, 1)
      assert.equal(list[0].name, 'b-ssh')
      assert.equal(list[0].listening, true)
      assert.equal(list[0].totalConnections, 1)
    })
  })

  it('while b is down the port accepts; the waiting ssh session completes byte-exact once b is back', async (t) => {
    await withLabLogs(t, lab, async () => {
      const file = path.join(a.dir, 'payload')
      await a.host.mustRun('sh', ['-c', `head -c ${16 * 1024 * 1024} /dev/urandom > ${file}`])
      const want = (await a.host.mustRun('sha256sum', [file])).stdout.split(' ')[0]

      await daemonB.stop()
      const waiting = /"msg":"peer not reachable yet, waiting"/
      assert.equal(count(daemonA.output(), waiting), 0, 'no connection waited before')
      const session = a.host.spawn('sh', ['-c', `ssh ${sshArgs().join(' ')} 'sha256sum' < ${file}`], {
        label: 'ssh-waiting',
      })
      // Accepted, and waiting for b: a's daemon says so.
      await daemonA.waitForOutput(waiting, 30_000)
      assert.equal(session.exitCode, null, 'the session waits instead of failing')

      const restarted = performance.now()
      daemonB = startDaemon(b, 'daemon-b-restarted')
      void daemonB
        .waitForOutput(/"msg":"reservation held"/, 30_000)
        .then(() =>
          t.diagnostic(
            `b reserved again ${((performance.now() - restarted) / 1000).toFixed(1)} s after its daemon started`,
          ),
        )
        .catch(() => {})
      const ended = await session.exited
      t.diagnostic(
        `the waiting session ended ${((performance.now() - restarted) / 1000).toFixed(1)} s after b's daemon started (16 MiB copied)`,
      )
      assert.equal(ended.code, 0, session.output())
      assert.equal(session.output().trim().split(/\s+/)[0], want)
      const list = JSON.parse(await a.peerup(['proxy', 'list', '--json', '--config', a.config]))
      assert.equal(list[0].failedConnections, 0)
    })
  })

  it('after a restart of the relay, new sessions go through the proxy again by themselves', async (t) => {
    await withLabLogs(t, lab, async () => {
      await daemonB.waitForOutput(/"msg":"reservation held"/, 30_000)
      const held = count(daemonB.output(), /"msg":"reservation held"/)
      await relay.process.stop()
      await daemonB.waitForOutput(/"msg":"reservation lost"/, 30_000)
      relay.process = relay.host.spawn(
        ['relay', 'serve', '--config', relay.config],
        'relay-restarted',
        RELAY_UNIT_ENV,
      )
      // No waiting for b's reservation here: the session waits for b itself.
      const started = performance.now()
      const reserved = daemonB
        .waitForOutput(new RegExp(`(?:"msg":"reservation held"[\\s\\S]*?){${held + 1}}`), 60_000)
        .then(() =>
          t.diagnostic(
            `b reserved again ${((performance.now() - started) / 1000).toFixed(1)} s after the relay was started again`,
          ),
        )
      const r = await a.host.run('ssh', [...sshArgs(), 'echo after-relay-restart'], { timeoutMs: 90_000 })
      assert.equal(r.code, 0, r.stderr)
      assert.equal(r.stdout.trim(), 'after-relay-restart')
      t.diagnostic(
        `ssh went through ${((performance.now() - started) / 1000).toFixed(1)} s after the relay was started again`,
      )
      // Its log line may reach us after ssh is through (the daemon's output is read from a pipe).
      await reserved
      assert.ok(count(daemonB.output(), /"msg":"reservation held"/) > held, 'b reserved again')
    })
  })
})
