/**
 * `peerup doctor` end to end, with the built executable in the NAT lab (test/e2e/lab.ts), against
 * one relay that answers STUN on a second port too (`stun.alternate_listen_address`,
 * docs/decisions/0012-doctor-nat-and-clock.md), so that one relay is enough to compare mappings:
 *
 * - behind a cone router (port-preserving MASQUERADE): the mapping is endpoint-independent and
 *   doctor says a direct path is possible; a node the relay does not know gets no reservation and
 *   the `relay authorize` command to run; with the relay killed, doctor names that relay as
 *   unreachable and exits 1;
 * - behind a symmetric router (`--random-fully`): the mapping is endpoint-dependent, doctor says
 *   so, and says why the path to b stays RELAYED.
 */

import * as assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { createLab, type Lab, labSupport, withLabLogs } from './lab.ts'
import {
  addNames,
  ensureBuilt,
  initLabNode,
  type LabRelay,
  type PeerupHost,
  startLabRelay,
  waitUntilReachable,
} from './peerup-host.ts'

const support = await labSupport()
const skip = support.ok ? false : `network lab unavailable: ${support.reason}`

interface Check {
  id: string
  status: 'ok' | 'warn' | 'fail'
  summary: string
  fix?: string
  details?: Record<string, unknown>
}

/** Runs `doctor --json` on `node`: its exit code and its checks by id (the first of each id). */
async function doctor(
  node: PeerupHost,
): Promise<{ code: number | null; checks: Map<string, Check>; all: Check[] }> {
  const r = await node.run(['doctor', '--json', '--config', node.config], { timeoutMs: 30_000 })
  const report = JSON.parse(r.stdout) as { version: number; checks: Check[] }
  assert.equal(report.version, 1)
  const checks = new Map<string, Check>()
  for (const c of report.checks) {
    if (!checks.has(c.id)) {
      checks.set(c.id, c)
    }
  }
  return { code: r.code, checks, all: report.checks }
}

function check(checks: Map<string, Check>, id: string): Check {
  const c = checks.get(id)
  assert.ok(c !== undefined, `no ${id} check`)
  return c
}

describe('doctor behind a cone router, then with the relay down', { skip, timeout: 300_000 }, () => {
  let lab: Lab
  let relay: LabRelay
  let a: PeerupHost

  before(async () => {
    ensureBuilt()
    lab = await createLab({ nat: 'cone', name: 'doctor-cone' })
    relay = await startLabRelay(lab, { stunAlternate: true })
    a = (await initLabNode(lab, 'a', relay)).node
  })

  after(async () => {
    await lab?.close()
  })

  it('says the mapping is endpoint-independent and a direct path is possible', async (t) => {
    await withLabLogs(t, lab, async () => {
      const { code, checks, all } = await doctor(a)
      t.diagnostic(all.map((c) => `${c.status} ${c.id}: ${c.summary}`).join('\n'))
      assert.equal(code, 0, 'no check fails')
      const nat = check(checks, 'nat')
      assert.equal(nat.status, 'ok')
      assert.equal(nat.details?.mapping, 'endpoint-independent')
      assert.equal(nat.details?.behindNat, true)
      // The second request went to the relay's second port, named by OTHER-ADDRESS.
      const probes = nat.details?.probes as Array<{ endpoint: string; alternate: boolean; mapped: string }>
      assert.deepEqual(
        probes.map((p) => [p.endpoint, p.alternate]),
        [
          [`${relay.host.host.ip}:3478`, false],
          [`${relay.host.host.ip}:3479`, true],
        ],
      )
      // Both saw the router's public address.
      assert.ok(
        probes.every((p) => p.mapped.startsWith(`${a.host.publicIp}:`)),
        JSON.stringify(probes),
      )
      const direct = check(checks, 'direct')
      assert.equal(direct.status, 'ok')
      assert.match(direct.summary, /^direct is possible from here/)
      assert.equal(check(checks, 'relay').status, 'ok')
      assert.equal(check(checks, 'clock').status, 'ok')
    })
  })

  it('a node the relay does not know: no reservation, and the command to run on the relay', async (t) => {
    await withLabLogs(t, lab, async () => {
      const { node: b, peerId } = await initLabNode(lab, 'b', relay, { authorize: false })
      const daemon = b.spawn(['daemon', '--config', b.config, '--log-level', 'info'], 'daemon-b')
      // The relay tells a peer it refuses why (src/p2p/relay-notify.ts); the daemon logs the notice.
      await daemon.waitForOutput(/"msg":"notice from relay"/, 30_000)
      let reservation: Check | undefined
      for (let i = 0; i < 20 && !/relay_authorized_keys/.test(reservation?.summary ?? ''); i++) {
        if (i > 0) {
          await new Promise((resolve) => setTimeout(resolve, 500))
        }
        reservation = check((await doctor(b)).checks, 'reservation')
      }
      t.diagnostic(`reservation: ${reservation?.summary}`)
      assert.ok(reservation !== undefined)
      assert.equal(reservation.status, 'fail')
      assert.match(reservation.summary, /^no reservation on relay \S+: refused by the relay/)
      assert.equal(reservation.fix, `on the relay, run: peerup relay authorize ${peerId}`)
      await daemon.stop()
    })
  })

  it('with the relay killed, names it as unreachable and exits 1', async (t) => {
    await withLabLogs(t, lab, async () => {
      relay.process.kill('SIGKILL')
      await relay.process.exited
      const { code, checks } = await doctor(a)
      assert.equal(code, 1)
      const r = check(checks, 'relay')
      assert.equal(r.status, 'fail')
      assert.equal(r.summary, `relay ${relay.host.host.ip}:7777 unreachable: ECONNREFUSED`)
      assert.equal(r.details?.relay, relay.address)
      // Silence on STUN is the relay being down, not UDP being blocked.
      assert.match(check(checks, 'nat').summary, /^not measured: no relay answers/)
    })
  })
})

describe('doctor behind a symmetric router (--random-fully)', { skip, timeout: 300_000 }, () => {
  let lab: Lab
  let a: PeerupHost

  before(async () => {
    ensureBuilt()
    lab = await createLab({ nat: { a: 'symmetric', b: 'cone' }, name: 'doctor-symmetric' })
    const relay = await startLabRelay(lab, { stunAlternate: true })
    const na = await initLabNode(lab, 'a', relay)
    const nb = await initLabNode(lab, 'b', relay)
    a = na.node
    addNames(a, { b: nb.peerId })
    await nb.node.peerup(['auth', 'add', na.peerId, '--comment', 'a', '--config', nb.node.config])
    nb.node.spawn(['daemon', '--config', nb.node.config, '--log-level', 'info'], 'daemon-b')
    a.spawn(['daemon', '--config', a.config, '--log-level', 'info'], 'daemon-a')
  })

  after(async () => {
    await lab?.close()
  })

  it('says symmetric, that direct is unlikely, and why the path to b is RELAYED', async (t) => {
    await withLabLogs(t, lab, async () => {
      await waitUntilReachable(a, 'b')
      // Until the upgrade has failed once (the punch and WebRTC both), so that the daemon knows why.
      const ping = await a.run(
        ['ping', 'b', '--until-direct', '--interval', '500ms', '--deadline', '40s', '--config', a.config],
        { timeoutMs: 90_000 },
      )
      assert.equal(ping.code, 1, ping.stdout)
      // ping's own summary says why too, this side's NAT first.
      assert.match(
        ping.stdout,
        /\nRELAYED via \S+ because: symmetric NAT on this side; the direct attempt failed: /,
      )
      const { checks, all } = await doctor(a)
      t.diagnostic(all.map((c) => `${c.status} ${c.id}: ${c.summary}`).join('\n'))
      const nat = check(checks, 'nat')
      assert.equal(nat.status, 'warn')
      assert.equal(nat.details?.mapping, 'endpoint-dependent')
      assert.match(nat.summary, /symmetric NAT/)
      const direct = check(checks, 'direct')
      assert.match(
        direct.summary,
        /^direct path unlikely: symmetric NAT on this side; connections stay RELAYED/,
      )
      const paths = check(checks, 'paths')
      assert.equal(paths.status, 'warn')
      assert.match(
        paths.summary,
        /^b is RELAYED because: symmetric NAT on this side; the direct attempt failed: /,
      )
      assert.equal(check(checks, 'daemon').status, 'ok')
      assert.equal(check(checks, 'reservation').status, 'ok')
    })
  })
})
