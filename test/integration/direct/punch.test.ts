/**
 * TCP hole punching (src/p2p/punch.ts) with real nodes and a real relay on loopback.
 *
 * On the machine's own loopback a simultaneous open cannot happen: a SYN to a port nobody holds
 * yet is answered with a reset at once, so neither side's SYN is ever in flight when the other's
 * arrives. A port-preserving NAT that drops unsolicited inbound (the lab's cone routers,
 * test/e2e/lab.ts) is what makes the punch work; this file gets the same behaviour on loopback
 * inside a network namespace of its own, where one iptables rule drops every SYN to 127.0.0.1 that
 * opens a new flow (conntrack NEW) — the peer's SYN that crosses ours belongs to our flow and
 * passes, as it does through a NAT's mapping. The relay listens on 127.0.0.2, outside the rule.
 *
 * Run as usual (`node --test …/punch.test.ts`): the outer run makes the namespace and runs this
 * same file again inside it (PEERUP_PUNCH_NETNS=1), then removes it. Needs root, `ip`, `iptables`;
 * skipped otherwise.
 */

import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import * as net from 'node:net'
import { after, before, describe, it } from 'node:test'
import type { Stream } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import type { Uint8ArrayList } from 'uint8arraylist'
import { classifyConnection } from '../../../src/p2p/path.ts'
import type { PeerPath } from '../../../src/p2p/paths.ts'
import { freePort, PunchError, simultaneousOpen } from '../../../src/p2p/punch.ts'
import type { NodeRuntime } from '../../../src/p2p/runtime.ts'
import { tempDir } from '../../helpers/cli.ts'
import { createTestNode, startTestRelay, type TestNode, type TestRelay } from '../../helpers/mesh.ts'

const INSIDE = process.env.PEERUP_PUNCH_NETNS === '1'
const MiB = 1024 * 1024

if (!INSIDE) {
  describe('tcp punch (run inside a network namespace of its own)', () => {
    it('passes inside a namespace where unsolicited SYNs are dropped', async (t) => {
      const missing = ['ip', 'iptables'].filter((cmd) => spawnSync(cmd, ['-V']).error !== undefined)
      if (process.getuid?.() !== 0 || missing.length > 0) {
        t.skip(`needs root and ${['ip', 'iptables'].join(', ')}`)
        return
      }
      const ns = `pu-punch-${randomBytes(4).toString('hex')}`
      const sh = (args: string[]): void => {
        const r = spawnSync(args[0] as string, args.slice(1), { encoding: 'utf8', timeout: 10_000 })
        assert.equal(r.status, 0, `${args.join(' ')}: ${r.stderr}`)
      }
      sh(['ip', 'netns', 'add', ns])
      t.after(() => spawnSync('ip', ['netns', 'del', ns]))
      sh(['ip', 'netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up'])
      sh([
        'ip',
        'netns',
        'exec',
        ns,
        'iptables',
        '-A',
        'INPUT',
        '-i',
        'lo',
        '-d',
        '127.0.0.1',
        '-p',
        'tcp',
        '--syn',
        '-m',
        'conntrack',
        '--ctstate',
        'NEW',
        '-j',
        'DROP',
      ])
      // The runner of this process tells its children how to report (NODE_TEST_CONTEXT); the
      // inner run is a test run of its own and reports as TAP.
      const env: NodeJS.ProcessEnv = { ...process.env, PEERUP_PUNCH_NETNS: '1' }
      delete env.NODE_TEST_CONTEXT
      const child = spawn(
        'ip',
        [
          'netns',
          'exec',
          ns,
          process.execPath,
          '--test',
          '--test-reporter=tap',
          '--test-timeout=150000',
          import.meta.filename,
        ],
        { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true },
      )
      let out = ''
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString()
      })
      child.stderr.on('data', (d: Buffer) => {
        out += d.toString()
      })
      const timer = setTimeout(() => process.kill(-(child.pid as number), 'SIGKILL'), 200_000)
      const code = await new Promise<number | null>((resolve) => child.once('close', resolve))
      clearTimeout(timer)
      for (const line of out.split('\n').filter((l) => /^\s*(ok|not ok|# (?!Subtest))/.test(l))) {
        t.diagnostic(line.trim())
      }
      assert.equal(code, 0, `the run inside the namespace failed:\n${out}`)
    })
  })
} else {
  describe('simultaneous open from announced ports', { timeout: 30_000 }, () => {
    it('connects both sides from the very ports they announced', async () => {
      const [pa, pb] = [await freePort(), await freePort()]
      const options = { windowMs: 3_000, retryMs: 100, signal: AbortSignal.timeout(10_000) }
      // b starts 150 ms after a: a's first SYN is dropped (no flow yet), b's crosses it.
      const [sa, sb] = await Promise.all([
        simultaneousOpen({ ip: '127.0.0.1', port: pb }, pa, options),
        new Promise((resolve) => setTimeout(resolve, 150)).then(() =>
          simultaneousOpen({ ip: '127.0.0.1', port: pa }, pb, options),
        ),
      ])
      try {
        // A socket bound by the kernel at connect time would leave from another port, and its
        // SYN would open a flow the rule drops: this would not connect at all.
        assert.equal(sa.localPort, pa)
        assert.equal(sa.remotePort, pb)
        assert.equal(sb.localPort, pb)
        assert.equal(sb.remotePort, pa)
        const got = new Promise<string>((resolve) => sb.once('data', (d) => resolve(d.toString())))
        sa.write('hello')
        assert.equal(await got, 'hello')
      } finally {
        sa.destroy()
        sb.destroy()
      }
    })

    it('gives up after its window with the reason when the peer never connects', async () => {
      const [pa, pb] = [await freePort(), await freePort()]
      const t0 = performance.now()
      await assert.rejects(
        simultaneousOpen({ ip: '127.0.0.1', port: pb }, pa, {
          windowMs: 500,
          retryMs: 100,
          signal: AbortSignal.timeout(10_000),
        }),
        (err: Error) => err instanceof PunchError && /within 500 ms/.test(err.message),
      )
      assert.ok(performance.now() - t0 < 3_000)
    })
  })

  describe('tcp punch between nodes behind a relay', { timeout: 120_000 }, () => {
    let relay: TestRelay
    let a: TestNode
    let b: TestNode
    let ra: NodeRuntime
    let rb: NodeRuntime
    let echo: net.Server
    const cleanups: Array<() => Promise<unknown>> = []

    before(async () => {
      const root = await tempDir({ after: (fn) => cleanups.push(fn) })
      relay = await startTestRelay(root, { host: '127.0.0.2' })
      cleanups.unshift(() => relay.stop())
      echo = net.createServer({ allowHalfOpen: true }, (socket) => {
        socket.on('error', () => {})
        socket.pipe(socket)
      })
      await new Promise<void>((resolve) => echo.listen(0, '127.0.0.2', resolve))
      cleanups.unshift(() => new Promise((resolve) => echo.close(resolve)))
      // Neither listens on anything but the relay: a is a one-shot client, b a daemon with a reservation.
      a = await createTestNode(root, 'a', relay, { listen: [] })
      b = await createTestNode(root, 'b', relay, { listen: [] })
      await relay.authorize(a.peerId)
      await relay.authorize(b.peerId)
      await b.authorize(a.peerId)
      await a.authorize(b.peerId)
      await b.addService('echo', `127.0.0.2:${(echo.address() as net.AddressInfo).port}`)
      rb = await b.start('daemon')
      cleanups.unshift(() => b.stop())
      await rb.supervisor.waitForReservation(AbortSignal.timeout(20_000))
      ra = await a.start('client')
      cleanups.unshift(() => a.stop())
    })

    after(async () => {
      for (const fn of cleanups) {
        await fn().catch(() => {})
      }
    })

    const punched = (s: PeerPath) =>
      s.path?.type === 'DIRECT' && s.path.transport === 'tcp' && s.upgrade.state === 'direct'

    it('goes DIRECT over a punched TCP connection; a stream carries bytes intact', async () => {
      const upgraded = ra.paths.waitFor(b.peerId, punched, AbortSignal.timeout(30_000))
      const first = await ra.openService(b.peerId, 'echo')
      assert.equal(first.path.type, 'RELAYED', 'the first stream starts on the relay')
      await first.stream.close()
      const state = await upgraded
      assert.equal(state.upgrade.transport, 'tcp')
      assert.match(state.path?.remoteAddr ?? '', /^\/ip4\/127\.0\.0\.1\/tcp\/\d+\/p2p\//)
      assert.equal(ra.paths.counters().successes.tcp, 1)

      // Both ends hold an ordinary TCP connection: noise, yamux, direct, unlimited; a dialled it.
      const onA = ra.node.getConnections(peerIdFromString(b.peerId)).find((c) => c.direct)
      const onB = rb.node.getConnections(peerIdFromString(a.peerId)).find((c) => c.direct)
      assert.ok(onA, "a's punched connection")
      assert.ok(onB, "b's punched connection")
      for (const c of [onA, onB]) {
        assert.equal(c.encryption, '/noise')
        assert.equal(c.multiplexer, '/yamux/1.0.0')
        assert.equal(c.limits, undefined)
        assert.equal(classifyConnection(c).type, 'DIRECT')
        assert.equal(classifyConnection(c).transport, 'tcp')
      }
      assert.equal(onA.direction, 'outbound')
      assert.equal(onB.direction, 'inbound')

      const s = await ra.openService(b.peerId, 'echo')
      assert.equal(s.path.type, 'DIRECT')
      assert.equal(s.path.transport, 'tcp')
      const data = randomBytes(8 * MiB)
      const back = await echoBytes(s.stream, data)
      assert.equal(back.length, data.length)
      assert.equal(sha256(back), sha256(data))
      await s.stream.close()
    })

    it('the responder refuses to punch for a peer it has not authorized, before any connect', async (t) => {
      const root = await tempDir({ after: (fn) => cleanups.push(fn) })
      const stranger = await createTestNode(root, 's', relay, { listen: [] })
      await relay.authorize(stranger.peerId)
      // The stranger trusts b: any refusal is b's.
      await stranger.authorize(b.peerId)
      const rs = await stranger.start('client')
      cleanups.unshift(() => stranger.stop())
      // As the joiner of an open invite, it may reach b over the relay (limited, no services).
      const close = rb.admitJoiners()
      t.after(close)
      const reached = await rs.reach(b.peerId)
      assert.equal(reached.path.type, 'RELAYED')
      const bId = peerIdFromString(b.peerId)
      const relayed = rs.node.getConnections(bId).find((c) => !c.direct && c.status === 'open')
      assert.ok(relayed)
      const err = await rs.puncher.punch(relayed, AbortSignal.timeout(20_000)).then(
        () => undefined,
        (e: Error) => e,
      )
      t.diagnostic(`stranger's punch: ${err?.message}`)
      assert.ok(err instanceof PunchError, 'the punch failed')
      // Refused in the exchange: b never sent a SYN to the address the stranger named.
      assert.match(err.message, /the peer cannot punch: .*not authorized here/)
      assert.ok(!rs.node.getConnections(bId).some((c) => c.direct && c.status === 'open'))
      const sId = peerIdFromString(stranger.peerId)
      assert.ok(!rb.node.getConnections(sId).some((c) => c.direct && c.status === 'open'))
    })
  })
}

/** Sends `data` on an echo stream and resolves with as many bytes as came back. */
async function echoBytes(stream: Stream, data: Buffer): Promise<Buffer> {
  const chunks: Buffer[] = []
  let got = 0
  const done = new Promise<Buffer>((resolve, reject) => {
    stream.addEventListener('message', (evt: { data: Uint8Array | Uint8ArrayList }) => {
      const b = Buffer.from(evt.data.subarray())
      chunks.push(b)
      got += b.length
      if (got >= data.length) {
        resolve(Buffer.concat(chunks))
      }
    })
    stream.addEventListener('close', () => reject(new Error(`stream closed after ${got} bytes`)))
  })
  for (let off = 0; off < data.length; off += 64 * 1024) {
    if (!stream.send(data.subarray(off, off + 64 * 1024))) {
      await new Promise((resolve) => stream.addEventListener('drain', resolve, { once: true }))
    }
  }
  return done
}

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex')
}
