/**
 * Short invite codes with the built executable in the NAT lab (symmetric NAT, so everything crosses
 * the relay). b, whose daemon runs, invites; a, with no peerup config at all, joins with
 * `peerup join <relay> <short code>` and pings b. Then three wrong short codes (each from a fresh
 * identity) burn b's next short code: the right one is refused after, and the long code of the
 * same invite still pairs a2. Last, a invites without a daemon on a terminal (the short code with
 * its relay, the long code, its QR code, the expiry with its zone) and a2, which now uses the
 * relay, joins with the short code alone.
 */

import * as assert from 'node:assert/strict'
import * as fs from 'node:fs'
import { after, before, describe, it } from 'node:test'
import { SHORT_CODE_WORDS } from '../../src/invite/words.ts'
import { createLab, type Lab, type LabProcess, labSupport, withLabLogs } from './lab.ts'
import { ensureBuilt, PeerupHost, startLabRelay } from './peerup-host.ts'

const support = await labSupport()
const skip = support.ok ? false : `network lab unavailable: ${support.reason}`
const JSON_CODE_LINE = /^(\{"code":.*\})$/m

interface Shown {
  code: string
  expires: string
  short?: { code: string; relay: string }
}

describe('short invite codes across two symmetric NATs', { skip, timeout: 900_000 }, () => {
  let lab: Lab
  let a: PeerupHost
  let a2: PeerupHost
  let b: PeerupHost
  let relayAddr: string
  const daemons: LabProcess[] = []

  /** Starts `peerup invite --json` on `host` and returns it with what it printed first. */
  async function invite(host: PeerupHost, name: string): Promise<{ proc: LabProcess; shown: Shown }> {
    const proc = host.spawn(['invite', '--json', '--name', name, '--ttl', '5m'], `invite-${host.host.name}`)
    const [, line] = await proc.waitForOutput(JSON_CODE_LINE, 60_000)
    const shown = JSON.parse(line as string) as Shown
    assert.ok(shown.short, 'the relay gave the invite a short code')
    return { proc, shown }
  }

  before(async () => {
    ensureBuilt()
    lab = await createLab({ nat: 'symmetric', name: 'shortcode', lanPeers: { a: 1 } })
    a = new PeerupHost(lab.host('a'), lab, { peerupHome: true })
    a2 = new PeerupHost(lab.host('a2'), lab, { peerupHome: true })
    b = new PeerupHost(lab.host('b'), lab, { peerupHome: true })

    const labRelay = await startLabRelay(lab, { stun: false })
    relayAddr = labRelay.address
    await b.peerup(['init', '--non-interactive', '--relay', relayAddr])
    await labRelay.authorize((await b.peerup(['whoami'])).trim())
    const d = b.spawn(['daemon', '--log-level', 'info'], 'daemon-b')
    daemons.push(d)
    await d.waitForOutput(/"msg":"reservation held"/, 60_000)
  })

  after(async () => {
    await lab?.close()
  })

  it('b invites (through its daemon), a joins with `join <relay> <short code>` and pings b', async (t) => {
    await withLabLogs(t, lab, async () => {
      assert.equal(fs.existsSync(a.config), false, 'a starts with no peerup config')
      const { proc, shown } = await invite(b, 'home')
      const short = shown.short as { code: string; relay: string }
      assert.match(short.code, /^\d{1,3}-[a-z]+-[a-z]+$/)
      assert.equal(short.relay, relayAddr)
      const joined = await a.run(
        ['join', short.relay, short.code, '--non-interactive', '--name', 'laptop', '--json'],
        {
          timeoutMs: 120_000,
        },
      )
      assert.equal(joined.code, 0, joined.stderr)
      const result = JSON.parse(joined.stdout)
      assert.equal(result.created, true)
      assert.equal(result.inviter.name, 'home')
      assert.deepEqual(result.sponsored, { ok: true })
      assert.equal((await proc.exited).code, 0, proc.output())
      // The words never reach the joiner's output (single words are too short to look for).
      const words = short.code.split('-').slice(1).join('-')
      assert.ok(!joined.stderr.includes(words) && !joined.stdout.includes(words))

      const ping = JSON.parse(await a.peerup(['ping', 'home', '-c', '1', '--json'], 90_000))
      assert.equal(ping.received, 1)
      assert.equal(ping.path.type, 'RELAYED')
    })
  })

  it('three wrong short codes burn it; the right one is refused after; the long code still pairs', async (t) => {
    await withLabLogs(t, lab, async () => {
      const { proc, shown } = await invite(b, 'home')
      const short = shown.short as { code: string; relay: string }
      const [nameplate, first, second] = short.code.split('-') as [string, string, string]
      const other = SHORT_CODE_WORDS.find((w) => w !== second) as string
      const wrong = `${nameplate}-${first}-${other}`
      const tries: string[] = []
      for (let i = 0; i < 3; i++) {
        // a2 has no config: each try makes an identity, and removes it again when refused.
        const r = await a2.run(['join', short.relay, wrong, '--non-interactive', '--name', 'm2'], {
          timeoutMs: 120_000,
        })
        assert.notEqual(r.code, 0)
        assert.equal(fs.existsSync(a2.config), false, 'a refused join leaves nothing behind')
        assert.ok(!r.stderr.includes(`${first}-${other}`) && !r.stderr.includes(`${first} ${other}`))
        tries.push(r.stderr)
      }
      assert.match(tries[0] as string, /a word is wrong \(2 tries left before it burns\)/)
      assert.match(tries[1] as string, /a word is wrong \(1 try left before it burns\)/)
      assert.match(tries[2] as string, /the short code is burned: 3 wrong tries/)
      await proc.waitForOutput(/the short code is burned after 3 wrong tries/, 30_000)

      const right = await a2.run(['join', short.relay, short.code, '--non-interactive', '--name', 'm2'], {
        timeoutMs: 120_000,
      })
      assert.notEqual(right.code, 0)
      assert.match(right.stderr, /no invite waits on this relay with short code number \d+: .*burned/)

      const long = await a2.run(['join', shown.code, '--non-interactive', '--name', 'm2', '--json'], {
        timeoutMs: 120_000,
      })
      assert.equal(long.code, 0, long.stderr)
      assert.equal(JSON.parse(long.stdout).inviter.name, 'home')
      assert.equal((await proc.exited).code, 0, proc.output())
    })
  })

  it('a invites with no daemon, on a terminal (codes, QR code, expiry with zone); a2, which uses the relay already, joins with the short code alone', async (t) => {
    await withLabLogs(t, lab, async () => {
      // `script` gives the invite a terminal, so it shows what a person sees.
      const proc = a.host.spawn(
        '/usr/bin/script',
        ['-qfec', `${a.exe} invite --name laptop --ttl 5m`, '/dev/null'],
        { env: { ...a.env, TZ: 'Asia/Kolkata' }, label: 'invite-a-tty' },
      )
      const [, shortCode] = await proc.waitForOutput(
        new RegExp(`peerup join ${relayAddr.replaceAll('/', '\\/')} (\\d{1,3}-[a-z]+-[a-z]+)\\r?\\n`),
        60_000,
      )
      await proc.waitForOutput(/until \d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC\+05:30\./, 10_000)
      const shown = proc.output()
      assert.match(shown, new RegExp(`or, if it already uses this relay: {2}peerup join ${shortCode}`))
      assert.match(shown, /peerup join [0-9A-Z]{4}(-[0-9A-Z]{1,4}){10,}/, 'the long code is shown too')
      assert.match(shown, /[▀▄█]{10,}/, 'and its QR code')
      const joined = await a2.run(['join', shortCode as string, '--non-interactive', '--json'], {
        timeoutMs: 120_000,
      })
      assert.equal(joined.code, 0, joined.stderr)
      const result = JSON.parse(joined.stdout)
      assert.equal(result.created, false)
      assert.equal(result.inviter.name, 'laptop')
      assert.equal((await proc.exited).code, 0, proc.output())
      assert.match(proc.output(), /paired with /)
    })
  })
})
