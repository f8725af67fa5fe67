/**
 * The direct path across a matrix of router behaviours, end to end with the built executable and
 * real OpenSSH in the NAT lab (test/e2e/lab.ts). For each pair of routers, the path a and b must
 * end on, and a 100 MiB ssh transfer through it, byte-exact:
 *
 * - `cone` (port-preserving, drops unsolicited inbound) beside `cone-open` (answers unsolicited SYNs
 *   itself, with a reset), either way round: DIRECT over a TCP punch (src/p2p/punch.ts; the log
 *   line `tcp punched` says which round connected);
 * - `cone` beside `symmetric` (`--random-fully`), either way round: the punch and WebRTC both fail,
 *   and the transfer runs through the relay.
 *
 * Both routers cone and both symmetric are in test/e2e/direct.test.ts.
 */

import * as assert from 'node:assert/strict'
import * as path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { createLab, type Lab, labSupport, type NatType, withLabLogs } from './lab.ts'
import {
  ensureBuilt,
  type LabRelay,
  logLines,
  type PeerupHost,
  relayCounters,
  sshThrough,
  startLabRelay,
  startSshTarget,
  waitUntilReachable,
} from './peerup-host.ts'
import type { Sshd } from './sshd.ts'

const support = await labSupport()
const skip = support.ok ? false : `network lab unavailable: ${support.reason}`
const MiB = 1024 * 1024

interface Case {
  a: NatType
  b: NatType
  /** The path a → b ends on: DIRECT over this transport, or RELAYED. */
  want: 'tcp' | 'webrtc' | 'RELAYED'
}

const CASES: Case[] = [
  { a: 'cone', b: 'cone-open', want: 'tcp' },
  { a: 'cone-open', b: 'cone', want: 'tcp' },
  { a: 'cone', b: 'symmetric', want: 'RELAYED' },
  { a: 'symmetric', b: 'cone', want: 'RELAYED' },
]

for (const c of CASES) {
  describe(`a behind ${c.a}, b behind ${c.b}: ${c.want === 'RELAYED' ? 'stays RELAYED' : `DIRECT over ${c.want}`}`, {
    skip,
    timeout: 300_000,
  }, () => {
    let lab: Lab
    let relay: LabRelay
    let a: PeerupHost
    let sshd: Sshd
    let relayBytes: Awaited<ReturnType<typeof relayCounters>>

    before(async () => {
      ensureBuilt()
      lab = await createLab({ nat: { a: c.a, b: c.b }, name: `matrix-${c.a}-${c.b}` })
      relay = await startLabRelay(lab)
      relayBytes = await relayCounters(lab, relay.host.host)
      ;({ a, sshd } = await startSshTarget(lab, relay))
    })

    after(async () => {
      await lab?.close()
    })

    it('ping --until-direct ends on the expected path, and says why when it is the relay', async (t) => {
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
            '40s',
            '--json',
            '--config',
            a.config,
          ],
          { env: a.env, timeoutMs: 90_000 },
        )
        const report = JSON.parse(r.stdout)
        t.diagnostic(
          `ping: ${report.finalPath?.type} ${report.finalPath?.transport ?? ''} ${report.upgrade?.timeToDirectMs ?? ''} ms; ${r.stderr.trim()}`,
        )
        if (c.want === 'RELAYED') {
          assert.equal(r.code, 1, r.stdout)
          assert.equal(report.finalPath.type, 'RELAYED')
          // Both were tried and both failures are told.
          assert.match(r.stderr, /tcp punch: .*webrtc: /)
        } else {
          assert.equal(r.code, 0, r.stderr)
          assert.equal(report.finalPath.type, 'DIRECT')
          assert.equal(report.finalPath.transport, c.want)
        }
      })
    })

    it('a 100 MiB ssh transfer through `peerup proxy` is byte-exact on that path', async (t) => {
      await withLabLogs(t, lab, async () => {
        const proxy = a.spawn(
          ['proxy', 'b', 'ssh', '2222', '--config', a.config, '--log-level', 'info'],
          'proxy-b',
        )
        try {
          await proxy.waitForOutput(/forwarding 127\.0\.0\.1:2222/, 60_000)
          await proxy.waitForOutput(
            c.want === 'RELAYED' ? /"msg":"direct path failed/ : /"msg":"direct path up"/,
            60_000,
          )
          const file = path.join(a.dir, 'payload')
          await a.host.mustRun('sh', ['-c', `head -c ${100 * MiB} /dev/urandom > ${file}`])
          const want = (await a.host.mustRun('sha256sum', [file])).stdout.split(' ')[0]
          const before = await relayBytes()
          const splicedBefore = await relayBytes.splice()
          const r = await sshThrough(a.host, sshd, 2222, 'sha256sum', file, 180_000)
          const crossed = (await relayBytes()) - before
          const spliced = (await relayBytes.splice()) - splicedBefore
          assert.equal(r.code, 0, r.stderr)
          assert.equal(r.stdout.split(' ')[0], want)
          const on = String(logLines(proxy, 'service session opened').at(-1)?.path)
          const punched = logLines(proxy, 'tcp punched')[0]
          t.diagnostic(
            `session on ${on}; the relay's ports saw ${crossed} bytes (${spliced} of them on its splice port)${punched === undefined ? '' : `; punched with lead ${punched.lead} after ${JSON.stringify(punched.failed)}`}`,
          )
          if (c.want === 'RELAYED') {
            assert.match(on, /^RELAYED via /)
            assert.ok(crossed > 200 * MiB, `only ${crossed} bytes crossed the relay`)
            // Past its first 8 MiB (and what was in flight then) the transfer ran on a splice
            // (docs/decisions/0016-splicing-relay.md): 176.9 of the 200 MiB that crossed in a run.
            assert.ok(spliced > 150 * MiB, `only ${spliced} bytes crossed the splice port`)
          } else {
            assert.equal(on, `DIRECT (${c.want})`)
            assert.ok(crossed < 1 * MiB, `${crossed} bytes crossed the relay during the transfer`)
          }
        } finally {
          await proxy.stop()
        }
      })
    })
  })
}
