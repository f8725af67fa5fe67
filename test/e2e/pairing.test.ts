/**
 * Pairing with the built executable in the NAT lab (symmetric NAT, so everything crosses the
 * relay). b, whose daemon runs, invites through it; a, which has no peerup config at all, joins
 * with `--non-interactive`; then ssh from a to b through peerup works with no edit on a, b or the
 * relay and no restart of b's daemon (b was authorized on the relay beforehand, as the first
 * machine of a mesh is). Then a relay group: three codes from
 * `relay pair`, three machines join (two of them new), and every pair pings.
 */

import * as assert from 'node:assert/strict'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { createLab, type Lab, type LabProcess, labSupport, withLabLogs } from './lab.ts'
import { ensureBuilt, PeerupHost, RELAY_UNIT_ENV } from './peerup-host.ts'
import { type Sshd, startSshd } from './sshd.ts'

const support = await labSupport()
const skip = support.ok ? false : `network lab unavailable: ${support.reason}`
const CODE_LINE = /^([0-9A-Z]{4}(?:-[0-9A-Z]{1,4}){10,})$/m

describe('pairing across two symmetric NATs', { skip, timeout: 600_000 }, () => {
  let lab: Lab
  let relay: PeerupHost
  let a: PeerupHost
  let b: PeerupHost
  let relayConfig: string
  let relayAddr: string
  let relayId: string
  let sshd: Sshd
  const daemons = new Map<string, LabProcess>()

  async function startDaemon(n: PeerupHost): Promise<void> {
    const d = n.spawn(['daemon', '--log-level', 'info'], `daemon-${n.host.name}`)
    daemons.set(n.host.name, d)
    await d.waitForOutput(/"msg":"reservation held"/, 60_000)
  }

  before(async () => {
    ensureBuilt()
    lab = await createLab({ nat: 'symmetric', name: 'pairing', lanPeers: { a: 1, b: 1 } })
    relay = new PeerupHost(lab.host('relay'), lab, { peerupHome: true })
    a = new PeerupHost(lab.host('a'), lab, { peerupHome: true })
    b = new PeerupHost(lab.host('b'), lab, { peerupHome: true })

    await relay.peerup(['relay', 'setup', '--dir', path.join(relay.dir, 'relay')])
    relayConfig = path.join(relay.dir, 'relay', 'relay-server.yaml')
    fs.writeFileSync(
      relayConfig,
      fs.readFileSync(relayConfig, 'utf8').replace('stun:\n  enabled: true', 'stun:\n  enabled: false'),
    )
    relayId = JSON.parse(await relay.peerup(['relay', 'info', '--json', '--config', relayConfig])).peerId
    relayAddr = `/ip4/198.18.0.1/tcp/7777/p2p/${relayId}`
    const relayProc = relay.spawn(['relay', 'serve', '--config', relayConfig], 'relay', RELAY_UNIT_ENV)
    await relayProc.waitForOutput(/relay started/, 30_000)

    // b is the first machine of the mesh: the relay operator authorizes it once.
    await b.peerup(['init', '--non-interactive', '--relay', relayAddr])
    const bId = (await b.peerup(['whoami'])).trim()
    await relay.peerup(['relay', 'authorize', bId, '--config', relayConfig])
    sshd = await startSshd(b.host, { port: 22 })
    await b.peerup(['service', 'add', 'ssh', '127.0.0.1:22'])
    // b's daemon runs all along: the invite goes through it, and it serves a at once.
    await startDaemon(b)
  })

  after(async () => {
    await lab?.close()
  })

  it('b invites, a joins with nothing but the code, and ssh through peerup works at once', async (t) => {
    await withLabLogs(t, lab, async () => {
      assert.equal(fs.existsSync(a.config), false, 'a starts with no peerup config')
      const invite = b.spawn(['invite', '--non-interactive', '--name', 'home', '--ttl', '5m'], 'invite-b')
      const [, code] = await invite.waitForOutput(CODE_LINE, 60_000)
      assert.ok(code)
      const joined = await a.run(['join', '--non-interactive', '--name', 'laptop', '--json'], {
        env: { PEERUP_INVITE_CODE: code },
        timeoutMs: 120_000,
      })
      assert.equal(joined.code, 0, joined.stderr)
      const result = JSON.parse(joined.stdout)
      assert.equal(result.created, true)
      assert.equal(result.inviter.name, 'home')
      assert.deepEqual(result.sponsored, { ok: true })
      const ended = await invite.exited
      assert.equal(ended.code, 0, invite.output())
      assert.match(invite.output(), /paired with laptop/)
      assert.doesNotMatch(invite.output(), /stop the daemon/)
      // The code never reaches a log line or an error.
      assert.ok(!joined.stderr.includes(code.slice(5, 19)))

      const ping = JSON.parse(await a.peerup(['ping', 'home', '-c', '1', '--json'], 90_000))
      assert.equal(ping.received, 1)
      assert.equal(ping.path.type, 'RELAYED')
      const r = await a.host.run(a.exe, ['ssh', 'home', ...sshd.sshArgs('home'), 'echo paired-and-in'], {
        env: a.env,
        timeoutMs: 90_000,
      })
      assert.equal(r.code, 0, r.stderr)
      assert.equal(r.stdout.trim(), 'paired-and-in')

      // Nobody edited anything: the lines are pairing's.
      const relayKeys = fs.readFileSync(path.join(relay.dir, 'relay', 'relay_authorized_keys'), 'utf8')
      assert.match(relayKeys, new RegExp(`^${result.peerId} sponsor=${result.inviter.peerId} # laptop$`, 'm'))
      const verify = JSON.parse(await a.peerup(['verify', 'home', '--yes', '--json']))
      const verifyB = JSON.parse(await b.peerup(['verify', 'laptop', '--json', '--non-interactive']))
      assert.equal(verify.sas, verifyB.sas, 'both machines show the same numbers')
      assert.match(verify.verified, /^\d{4}-\d{2}-\d{2}$/)
    })
  })

  it('a relay group of three joins with `relay pair` codes and every pair pings', async (t) => {
    await withLabLogs(t, lab, async () => {
      const a2 = new PeerupHost(lab.host('a2'), lab, { peerupHome: true })
      const b2 = new PeerupHost(lab.host('b2'), lab, { peerupHome: true })
      const made = JSON.parse(
        await relay.peerup([
          'relay',
          'pair',
          '--count',
          '3',
          '--ttl',
          '1h',
          '--json',
          '--config',
          relayConfig,
        ]),
      )
      assert.equal(made.codes.length, 3)
      const members = [
        { host: a, name: 'laptop' },
        { host: a2, name: 'm2' },
        { host: b2, name: 'm3' },
      ]
      // All three at once: each join returns when the group is full.
      const joins = await Promise.all(
        members.map((m, i) =>
          m.host.run(['join', made.codes[i], '--non-interactive', '--name', m.name, '--json'], {
            timeoutMs: 180_000,
          }),
        ),
      )
      for (const [i, j] of joins.entries()) {
        assert.equal(j.code, 0, `${members[i]?.name}: ${j.stderr}`)
        const r = JSON.parse(j.stdout)
        assert.equal(r.group.complete, true)
        assert.equal(r.group.members.length, 2)
      }
      const listed = JSON.parse(
        await relay.peerup(['relay', 'pair', '--list', '--json', '--config', relayConfig]),
      )
      assert.equal(listed.find((g: { id: string }) => g.id === made.group.id)?.members.length, 3)

      // a's daemon is not running yet; a2 and b2 have theirs now too.
      for (const m of members) {
        await startDaemon(m.host)
      }
      for (const from of members) {
        for (const to of members.filter((x) => x !== from)) {
          const r = JSON.parse(await from.host.peerup(['ping', to.name, '-c', '1', '--json'], 90_000))
          assert.equal(r.received, 1, `${from.name} → ${to.name}`)
        }
      }
    })
  })
})
