/**
 * The web dashboard (`ui.listen_address`, `peerup ui`) on a real relay and two real daemons: its
 * guards — a wrong Host or Origin, a missing, wrong or replayed login token, no session cookie
 * are refused, every answer is no-store under a strict CSP — and the page itself in headless
 * Chromium: it shows the peer and its path, a session started here with its bytes growing, an
 * invite's code and QR, and revoking the peer cuts it. Screenshots go to test-artifacts/ui/.
 */

import assert from 'node:assert/strict'
import * as path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { setTimeout as delay } from 'node:timers/promises'
import { LocalClient } from '../../../src/client/local.ts'
import { editConfigFile } from '../../../src/config/edit.ts'
import { nodeConfigSchema } from '../../../src/config/schema.ts'
import { parseHostPort } from '../../../src/util/address.ts'
import { type Browser, chromiumCommand, launchBrowser } from '../../helpers/browser.ts'
import { runCli, tempDir } from '../../helpers/cli.ts'
import { rawRequest, startTestDaemon, type TestDaemon } from '../../helpers/daemon.ts'
import { startRelayAndPair, type TestNode, type TestRelay } from '../../helpers/mesh.ts'
import { connect, echoClient, startEcho } from '../../helpers/tcp.ts'

const KiB = 1024

/** Resolves once `check` holds, asking every 50 ms; fails after 60 s with what it waited for. */
async function until(check: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 60_000
  while (!(await check())) {
    if (Date.now() > deadline) {
      throw new Error(`not within 60 s: ${what}`)
    }
    await delay(50)
  }
}
const ARTIFACTS = path.resolve(import.meta.dirname, '../../../test-artifacts/ui')

describe('web dashboard', { timeout: 300_000 }, () => {
  let root: string
  let relay: TestRelay
  let a: TestNode
  let b: TestNode
  let da: TestDaemon
  let ui: { host: string; port: number }
  let origin: string
  const cleanups: Array<() => Promise<unknown>> = []
  const aClient = () => new LocalClient({ configFile: a.configFile })

  /** A fresh login token from `peerup ui`, as the command prints it (never shown in the output). */
  const loginUrl = async (): Promise<string> => {
    const r = await runCli(['ui', '--config', a.configFile], root)
    assert.equal(r.code, 0, 'peerup ui succeeds')
    const url = r.stdout.trim()
    // ok(), not match(): a failure must not print the token.
    assert.ok(/^http:\/\/127\.0\.0\.1:\d+\/login#[A-Za-z0-9_-]{43}$/.test(url), 'a login URL with a token')
    return url
  }
  const tokenOf = (url: string): string => url.slice(url.indexOf('#') + 1)

  /** POST /login with `token`, from the dashboard's own origin unless told otherwise. */
  const postLogin = (body: unknown, headers: Record<string, string> = {}) =>
    rawRequest(ui, {
      method: 'POST',
      path: '/login',
      headers: { Origin: origin, 'Content-Type': 'application/json', ...headers },
      body: JSON.stringify(body),
    })

  /** A session cookie, logged in with a fresh token. */
  const session = async (): Promise<string> => {
    const r = await postLogin({ token: tokenOf(await loginUrl()) })
    assert.equal(r.status, 204)
    const cookie = r.headers['set-cookie']?.[0] ?? ''
    return cookie.split(';')[0] as string
  }

  before(async () => {
    root = await tempDir({ after: (fn) => cleanups.push(fn) })
    ;({ relay, a, b } = await startRelayAndPair(root))
    cleanups.unshift(() => relay.stop())
    const echo = await startEcho()
    cleanups.unshift(echo.close)
    await b.addService('echo', `127.0.0.1:${echo.port}`)
    await a.authorize(b.peerId)
    await editConfigFile(a.configFile, nodeConfigSchema, (doc) => {
      doc.setIn(['names', 'b'], b.peerId)
      doc.setIn(['ui', 'listen_address'], '127.0.0.1:0')
    })
    const db = await startTestDaemon(b.configFile)
    cleanups.unshift(() => db.stop())
    da = await startTestDaemon(a.configFile)
    cleanups.unshift(() => da.stop())
    assert.ok(da.ready.uiAddress, 'the dashboard is served')
    ui = parseHostPort(da.ready.uiAddress)
    origin = `http://${da.ready.uiAddress}`
  })

  after(async () => {
    for (const fn of cleanups) {
      await fn().catch(() => {})
    }
  })

  it('refuses a non-loopback listen address in config.yaml with a one-line error', () => {
    const r = nodeConfigSchema.safeParse({ version: 1, ui: { listen_address: '0.0.0.0:7780' } })
    assert.equal(r.success, false)
    const message = r.error?.issues[0]?.message ?? ''
    assert.match(message, /is not loopback/)
    assert.doesNotMatch(message, /\n/)
    assert.equal(
      nodeConfigSchema.safeParse({ version: 1, ui: { listen_address: '[::1]:7780' } }).success,
      true,
    )
  })

  it('`peerup ui` says how to turn the dashboard on when it is off', async () => {
    const r = await runCli(['ui', '--config', b.configFile], root)
    assert.equal(r.code, 1)
    assert.equal(r.stdout, '')
    assert.match(r.stderr, /the web dashboard is off on this daemon/)
    assert.match(r.stderr, /ui\.listen_address: 127\.0\.0\.1:7780/)
  })

  it('serves the app to its own Host only, no-store, under a strict CSP', async () => {
    const page = await rawRequest(ui, { path: '/' })
    assert.equal(page.status, 200)
    assert.match(page.body, /<script type="module" src="\/app.js"><\/script>/)
    assert.equal(page.headers['cache-control'], 'no-store')
    assert.match(String(page.headers['content-security-policy']), /script-src 'self';/)
    assert.match(String(page.headers['content-security-policy']), /frame-ancestors 'none'/)
    assert.equal(page.headers['x-frame-options'], 'DENY')
    assert.equal((await rawRequest(ui, { path: '/', headers: { Host: `localhost:${ui.port}` } })).status, 200)
    // DNS rebinding: a name of the attacker's that now resolves to 127.0.0.1.
    const rebound = await rawRequest(ui, { path: '/', headers: { Host: `evil.example:${ui.port}` } })
    assert.equal(rebound.status, 403)
    const cookie = await session()
    const wrongHost = await rawRequest(ui, {
      path: '/v1/status',
      headers: { Host: `evil.example:${ui.port}`, Cookie: cookie },
    })
    assert.equal(wrongHost.status, 403, 'even with a good session')
  })

  it('refuses the API without a session, and a missing, wrong or replayed login token', async () => {
    assert.equal((await rawRequest(ui, { path: '/v1/status' })).status, 401)
    assert.equal((await postLogin({})).status, 401, 'no token')
    assert.equal((await postLogin({ token: 'A'.repeat(43) })).status, 401, 'a token never given')
    const token = tokenOf(await loginUrl())
    const first = await postLogin({ token })
    assert.equal(first.status, 204)
    const cookie = first.headers['set-cookie']?.[0] ?? ''
    assert.ok(
      /^peerup_ui=[A-Za-z0-9_-]{43}; HttpOnly; SameSite=Strict; Path=\//.test(cookie),
      'an HttpOnly, SameSite=Strict session cookie',
    )
    assert.equal((await postLogin({ token })).status, 401, 'the same token again')
    const status = await rawRequest(ui, {
      path: '/v1/status',
      headers: { Cookie: cookie.split(';')[0] ?? '' },
    })
    assert.equal(status.status, 200)
    assert.equal(status.headers['cache-control'], 'no-store')
    assert.equal(JSON.parse(status.body).data.peerId, a.peerId)
    // The listener does not make login links itself: only `peerup ui`, through the socket.
    const minted = await rawRequest(ui, {
      method: 'POST',
      path: '/v1/ui/login',
      headers: { Origin: origin, Cookie: cookie.split(';')[0] ?? '' },
    })
    assert.equal(minted.status, 404)
  })

  it('refuses a state-changing request with a wrong or missing Origin', async () => {
    const cookie = await session()
    const origins: Array<Record<string, string>> = [{ Origin: 'http://evil.example' }, { Origin: 'null' }, {}]
    for (const headers of origins) {
      const r = await rawRequest(ui, {
        method: 'DELETE',
        path: `/v1/auth/${b.peerId}`,
        headers: { Cookie: cookie, ...headers },
      })
      assert.equal(r.status, 403, `Origin ${JSON.stringify(headers)}`)
    }
    const crossSite = await rawRequest(ui, {
      path: '/v1/status',
      headers: { Cookie: cookie, 'Sec-Fetch-Site': 'cross-site' },
    })
    assert.equal(crossSite.status, 403)
    const login = await postLogin({ token: tokenOf(await loginUrl()) }, { Origin: 'http://evil.example' })
    assert.equal(login.status, 403)
    assert.ok(
      (await aClient().call('authList', {})).some((p) => p.peerId === b.peerId),
      'b is still authorized',
    )
  })

  it('shows the peer, a growing session, an invite, and revokes the peer, in Chromium', async (t) => {
    const command = chromiumCommand()
    if (command === undefined) {
      t.skip('chromium is not installed (apt-get install chromium; .ci/run installs it)')
      return
    }
    // A session to b's echo service, so that b is connected and the table has a row.
    const proxy = await aClient().call('connectAdd', { peer: 'b', service: 'echo', listen: '127.0.0.1:0' })
    const socket = await connect(Number(proxy.listen.split(':').pop()))
    const echo = echoClient(socket)
    t.after(() => socket.destroy())
    await echo.roundTrip(64 * KiB)

    const browser: Browser = await launchBrowser(command)
    t.after(() => browser.close())
    const { page } = browser
    await page.viewport(1280, 900)
    const shot = async (name: string): Promise<void> => {
      const file = path.join(ARTIFACTS, name)
      await page.screenshot(file)
      t.diagnostic(`screenshot ${file}`)
    }

    await page.navigate(await loginUrl())
    const peerRow = `document.querySelector('#peers tr[data-peer="${b.peerId}"]')`
    const pathType = await page.waitFor<string>(
      `${peerRow}?.dataset.path.replace('NONE', '')`,
      "b's row with its path",
    )
    assert.ok(['DIRECT', 'RELAYED'].includes(pathType), pathType)
    assert.ok((await page.evaluate('location.href')) === `${origin}/`, 'the token left the address bar')
    assert.match(await page.evaluate<string>(`${peerRow}.textContent`), /b/)

    const row = `document.querySelector('#sessions tr[data-peer="${b.peerId}"]')`
    const before = Number(await page.waitFor<string>(`${row}?.dataset.bytes`, 'the session'))
    assert.ok(before >= 2 * 64 * KiB, `${before} bytes shown`)
    await echo.roundTrip(256 * KiB)
    const grown = Number(
      await page.waitFor<string>(
        `(Number(${row}?.dataset.bytes) > ${before}) && ${row}.dataset.bytes`,
        'the session with more bytes',
      ),
    )
    assert.ok(grown >= before + 2 * 256 * KiB, `${before} → ${grown} bytes`)
    await page.waitFor(`document.querySelector('#events li[data-type="hello"]')`, 'the events stream')
    await page.waitFor(`/ms$/.test(${peerRow}.querySelector('td.num')?.textContent ?? '')`, "b's RTT")
    // Named controls and tables, for screen readers; real buttons, for the keyboard.
    assert.equal(
      await page.evaluate(
        `[...document.querySelectorAll('button, table')].filter((e) => e.tagName === 'TABLE' ? !e.caption?.textContent.trim() : !(e.textContent.trim() || e.getAttribute('aria-label'))).length`,
      ),
      0,
      'every button and table has a name',
    )
    await shot('dashboard.png')

    await page.evaluate(`document.getElementById('invite').click()`)
    const code = await page.waitFor<string>(
      `document.getElementById('invite-code').textContent`,
      'an invite code',
    )
    assert.ok(/^[A-Za-z0-9]{4}(-[A-Za-z0-9]{1,4})+$/.test(code), 'an invite code (not shown)')
    assert.ok(await page.evaluate(`!!document.querySelector('#invite-qr svg path')`), 'its QR code')
    await shot('invite.png')
    // Closing cancels the invite on the daemon: the code in the screenshot no longer works.
    await page.evaluate(`document.getElementById('invite-cancel').click()`)

    await page.viewport(390, 844)
    await shot('phone.png')
    await page.viewport(1280, 900)

    // The session ends first: a's own dials are never gated, and a session of a's would resume.
    socket.destroy()
    await aClient().call('connectRemove', { id: proxy.id })
    await page.evaluate(`document.querySelector('button[data-revoke="${b.peerId}"]').click()`)
    assert.equal(await page.evaluate(`document.getElementById('revoke-dialog').open`), true, 'asks first')
    await page.evaluate(`document.getElementById('revoke-confirm').click()`)
    await page.waitFor(`!${peerRow}`, 'b gone from the peers')
    assert.ok(!(await aClient().call('authList', {})).some((p) => p.peerId === b.peerId), 'b is revoked')
    await until(async () => {
      const paths = await aClient().call('paths', {})
      return paths.every((p) => p.peerId !== b.peerId || p.path === undefined)
    }, "a's connections to b closed")
    // And b cannot come back: a refuses it.
    await assert.rejects(
      new LocalClient({ configFile: b.configFile }).call('ping', {
        peer: a.peerId,
        count: 1,
        deadlineMs: 20_000,
      }),
      { name: 'PeerRefusedError' },
    )
    await shot('revoked.png')
  })
})
