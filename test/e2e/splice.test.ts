/**
 * The splicing relay (docs/decisions/0016-splicing-relay.md), end to end with the built executable
 * and real OpenSSH in the NAT lab. Both routers are symmetric (`--random-fully`), so a and b stay
 * RELAYED and a bulk transfer runs through the relay:
 *
 * - 1 GiB through `ssh` over `peerup proxy`, hashed as it leaves a and as sshd on b reads it: the
 *   hashes match and nearly all of it crossed the relay's splice port (tcp 7778), not its libp2p
 *   port;
 * - a stranger behind the NAT who connects to the splice port with a forged token gets nothing:
 *   not one byte, the connection reset;
 * - the same relay restarted with `splice.enabled: false` still carries the transfer, byte-exact,
 *   over the circuit, and its splice port stays silent.
 */

import * as assert from 'node:assert/strict'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { createLab, type Lab, labSupport, withLabLogs } from './lab.ts'
import {
  ensureBuilt,
  type LabRelay,
  type PeerupHost,
  relayCounters,
  startLabRelay,
  startSshTarget,
  waitUntilReachable,
} from './peerup-host.ts'
import type { Sshd } from './sshd.ts'

const support = await labSupport()
const skip = support.ok ? false : `network lab unavailable: ${support.reason}`
const MiB = 1024 * 1024
const SPLICE_PORT = 7778

describe('the splicing relay in the NAT lab (both routers symmetric: RELAYED)', {
  skip,
  timeout: 600_000,
}, () => {
  let lab: Lab
  let relay: LabRelay
  let a: PeerupHost
  let sshd: Sshd
  let relayBytes: Awaited<ReturnType<typeof relayCounters>>

  before(async () => {
    ensureBuilt()
    lab = await createLab({ nat: { a: 'symmetric', b: 'symmetric' }, name: 'splice' })
    relay = await startLabRelay(lab)
    relayBytes = await relayCounters(lab, relay.host.host)
    ;({ a, sshd } = await startSshTarget(lab, relay))
    await waitUntilReachable(a, 'b')
  })

  after(async () => {
    await lab?.close()
  })

  /**
   * `bytes` of /dev/urandom through ssh over `peerup proxy` to sshd on b, which hashes what it
   * reads; a hashes the same bytes as they leave (tee). Returns both hashes and the bytes the
   * relay's ports saw meanwhile.
   */
  async function transfer(bytes: number, timeoutMs: number) {
    const proxy = a.spawn(
      ['proxy', 'b', 'ssh', '2222', '--config', a.config, '--log-level', 'info'],
      'proxy-b',
    )
    try {
      await proxy.waitForOutput(/forwarding 127\.0\.0\.1:2222/, 60_000)
      const sent = path.join(a.dir, 'sent.sha256')
      const before = await relayBytes()
      const splicedBefore = await relayBytes.splice()
      const ssh = `ssh ${sshd.sshArgs('b', { port: 2222 }).join(' ')} 127.0.0.1 sha256sum`
      const r = await a.host.run(
        'bash',
        ['-c', `set -o pipefail; head -c ${bytes} /dev/urandom | tee >(sha256sum > ${sent}) | ${ssh}`],
        { timeoutMs },
      )
      assert.equal(r.code, 0, r.stderr)
      // The process substitution may still be writing when bash returns.
      let want = ''
      for (let i = 0; i < 50 && want === ''; i++) {
        want = fs.existsSync(sent) ? (fs.readFileSync(sent, 'utf8').split(' ')[0] ?? '') : ''
        if (want === '') {
          await new Promise((resolve) => setTimeout(resolve, 100))
        }
      }
      return {
        want,
        got: r.stdout.split(' ')[0],
        crossed: (await relayBytes()) - before,
        spliced: (await relayBytes.splice()) - splicedBefore,
      }
    } finally {
      await proxy.stop()
    }
  }

  it('carries 1 GiB byte-exact, nearly all of it joined on the splice port', async (t) => {
    await withLabLogs(t, lab, async () => {
      const started = performance.now()
      const r = await transfer(1024 * MiB, 300_000)
      const seconds = (performance.now() - started) / 1000
      t.diagnostic(
        `1 GiB in ${seconds.toFixed(1)} s; the relay's ports saw ${(r.crossed / MiB).toFixed(1)} MiB, ${(r.spliced / MiB).toFixed(1)} MiB of it on the splice port`,
      )
      assert.match(r.want, /^[0-9a-f]{64}$/)
      assert.equal(r.got, r.want, 'what sshd read is what a sent')
      // In and out of the relay: each byte crosses its ports twice. Past the first 8 MiB
      // (BULK_AFTER_BYTES, src/p2p/bulk.ts) and what was in flight then, the splice carries it.
      assert.ok(r.spliced > 2 * 900 * MiB, `only ${r.spliced} bytes crossed the splice port`)
    })
  })

  it('gives a stranger with a forged token nothing: not a byte, and the connection reset', async (t) => {
    // A host behind router-a that is no member of anything: a plain TCP client with 32 random bytes.
    const script = `
      const net = require('node:net')
      const s = net.connect(${SPLICE_PORT}, ${JSON.stringify(relay.host.host.ip)})
      let got = 0
      let error = ''
      s.on('connect', () => s.write(require('node:crypto').randomBytes(32)))
      s.on('data', (d) => { got += d.length })
      s.on('error', (e) => { error = e.code ?? e.message })
      s.on('close', () => { console.log(JSON.stringify({ got, error })) })
      setTimeout(() => { console.log(JSON.stringify({ got, error: 'still open after 10 s' })); process.exit(0) }, 10000).unref()
    `
    const r = await a.host.mustRun(process.execPath, ['-e', script], { timeoutMs: 20_000 })
    const seen = JSON.parse(r.stdout.trim()) as { got: number; error: string }
    t.diagnostic(`forged token: ${JSON.stringify(seen)}`)
    assert.equal(seen.got, 0)
    assert.equal(seen.error, 'ECONNRESET')
  })

  it('a relay without splicing still carries the transfer, over the circuit, byte-exact', async (t) => {
    await withLabLogs(t, lab, async () => {
      relay.process.kill('SIGTERM')
      await relay.process.exited
      const yaml = fs.readFileSync(relay.config, 'utf8')
      assert.match(yaml, /splice:\n {2}# [^\n]*\n {2}enabled: true/)
      fs.writeFileSync(relay.config, yaml.replace(/(splice:\n {2}# [^\n]*\n {2}enabled:) true/, '$1 false'))
      await relay.restart()
      assert.equal(await relay.host.host.canConnect(relay.host.host.ip, SPLICE_PORT), false)
      await waitUntilReachable(a, 'b')
      const r = await transfer(64 * MiB, 120_000)
      t.diagnostic(
        `without splicing: the relay's ports saw ${(r.crossed / MiB).toFixed(1)} MiB, ${r.spliced} bytes on the splice port`,
      )
      assert.equal(r.got, r.want)
      assert.ok(r.crossed > 2 * 60 * MiB, `only ${r.crossed} bytes crossed the relay`)
      assert.equal(r.spliced, 0)
    })
  })
})
