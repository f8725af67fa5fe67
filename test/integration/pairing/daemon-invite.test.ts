/**
 * `peerup invite` with a daemon running: the daemon's own node answers the invite
 * (`POST /v1/invite`), so the joiner is trusted by the running daemon at once — a proxied
 * connection to its service works right after the join, with no restart.
 */

import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import * as fs from 'node:fs/promises'
import * as net from 'node:net'
import * as path from 'node:path'
import { createInterface } from 'node:readline'
import { after, before, describe, it } from 'node:test'
import type { InviteLine } from '../../../src/api/index.ts'
import { LocalClient } from '../../../src/client/local.ts'
import { loadRelayConfig } from '../../../src/config/load.ts'
import { ConflictError } from '../../../src/errors.ts'
import { decodeInviteCode } from '../../../src/invite/code.ts'
import { CodeUsedError } from '../../../src/invite/errors.ts'
import { runJoin } from '../../../src/invite/join.ts'
import { createLogger } from '../../../src/log/index.ts'
import { RelayPairingService } from '../../../src/relay/pairing.ts'
import { tempDir } from '../../helpers/cli.ts'
import { startTestDaemon, type TestDaemon } from '../../helpers/daemon.ts'
import { createTestNode, startTestRelay, type TestNode, type TestRelay } from '../../helpers/mesh.ts'

describe('invite through a running daemon', { timeout: 120_000 }, () => {
  let root: string
  let relay: TestRelay
  let home: TestNode
  let daemon: TestDaemon
  const cleanups: Array<() => Promise<unknown>> = []

  before(async () => {
    root = await tempDir({ after: (fn) => cleanups.push(fn) })
    relay = await startTestRelay(root)
    cleanups.unshift(() => relay.stop())
    const { config } = await loadRelayConfig(path.join(relay.dir, 'relay-server.yaml'))
    const pairing = new RelayPairingService({
      relay: relay.handle,
      config,
      dir: relay.dir,
      log: createLogger('pairing'),
    })
    await pairing.start()
    cleanups.unshift(() => pairing.stop())
    home = await createTestNode(root, 'home', relay)
    await relay.authorize(home.peerId)
    const echo = net.createServer((s) => {
      s.on('error', () => {})
      s.pipe(s)
    })
    await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve))
    cleanups.unshift(() => new Promise((resolve) => echo.close(resolve)))
    await home.addService('echo', `127.0.0.1:${(echo.address() as net.AddressInfo).port}`)
    daemon = await startTestDaemon(home.configFile)
    cleanups.unshift(() => daemon.stop())
  })

  after(async () => {
    for (const fn of cleanups) {
      await fn().catch(() => {})
    }
  })

  it('the daemon answers the invite and trusts the joiner at once', async () => {
    const controller = new AbortController()
    const lines = new LocalClient({ configFile: home.configFile }).lines(
      'invite',
      { name: 'home', ttlMs: 60_000 },
      controller.signal,
    )
    let code: string | undefined
    for (;;) {
      const { value } = await lines.next()
      assert.ok(value !== undefined, 'the invite stream ended before the code')
      if (value.type === 'code') {
        code = value.code
        break
      }
      assert.notEqual(value.type, 'error', JSON.stringify(value))
    }
    // One invite at a time on a daemon.
    const second = new LocalClient({ configFile: home.configFile }).lines('invite', { ttlMs: 60_000 })
    await assert.rejects(second.next(), (err: unknown) => err instanceof ConflictError)

    assert.ok(code !== undefined)
    // While the invite is open an unknown peer may connect over the relay (it could be the
    // joiner), but none of the services answers it.
    const stranger = await createTestNode(root, 'stranger', relay)
    const rs = await stranger.start('client')
    const reached = await rs.reach(home.peerId)
    assert.equal(reached.path.limited, true)
    await assert.rejects(rs.openService(home.peerId, 'echo', { attempts: 1 }))
    await stranger.stop()
    const laptop = await createTestNode(root, 'laptop', relay)
    const joined = await runJoin({
      code: decodeInviteCode(code),
      target: { configFile: laptop.configFile },
      name: 'laptop',
      log: createLogger('join'),
      signal: AbortSignal.timeout(60_000),
    })
    assert.equal(joined.inviter.peerId, home.peerId)
    assert.equal(joined.sponsored?.ok, true)
    let outcome: InviteLine | undefined
    for await (const line of lines) {
      if (line.type === 'paired') {
        outcome = line
        break
      }
    }
    assert.equal(outcome?.type, 'paired', JSON.stringify(outcome))
    assert.match(await fs.readFile(home.configFile, 'utf8'), new RegExp(`laptop: ${laptop.peerId}`))

    // The running daemon serves the new peer right away: no restart, no SIGHUP.
    const rl = await laptop.start('client')
    cleanups.unshift(() => laptop.stop())
    const { stream } = await rl.openService('home', 'echo')
    const reply = new Promise<string>((resolve) => {
      stream.addEventListener('message', (evt) => resolve(new TextDecoder().decode(evt.data.subarray())))
    })
    stream.send(new TextEncoder().encode('hello home'))
    assert.equal(await reply, 'hello home')
    await stream.close()
    const peers = await new LocalClient({ configFile: home.configFile }).call('authList', {})
    assert.ok(peers.some((p) => p.peerId === laptop.peerId && p.name === 'laptop'))

    // The code is spent: a second join with it, from another machine, is told so (by the relay,
    // which the daemon told when the invite ended).
    const other = await createTestNode(root, 'other', relay)
    await assert.rejects(
      runJoin({
        code: decodeInviteCode(code),
        target: { configFile: other.configFile },
        name: 'other',
        log: createLogger('join-other'),
        signal: AbortSignal.timeout(60_000),
      }),
      (err: unknown) => err instanceof CodeUsedError && /^this code was used already/.test(err.message),
    )
  })

  it('a cancelled invite frees the daemon for the next one', async () => {
    const controller = new AbortController()
    const lines = new LocalClient({ configFile: home.configFile }).lines(
      'invite',
      { ttlMs: 60_000 },
      controller.signal,
    )
    let first = await lines.next()
    while (first.value?.type === 'progress') {
      first = await lines.next()
    }
    assert.equal(first.value?.type, 'code')
    controller.abort()
    await lines.return(undefined)
    // The daemon notices the closed request and ends the invite; the next one is accepted.
    const again = new LocalClient({ configFile: home.configFile }).lines(
      'invite',
      { ttlMs: 60_000 },
      AbortSignal.timeout(20_000),
    )
    for (;;) {
      try {
        const next = await again.next()
        assert.notEqual(next.value?.type, 'error', JSON.stringify(next.value))
        break
      } catch (err) {
        // Between the abort and the daemon's cleanup the previous invite still holds it.
        assert.ok(err instanceof ConflictError, String(err))
        await new Promise<void>((resolve) => setImmediate(resolve))
      }
    }
    await again.return(undefined)
  })

  it('`peerup invite --non-interactive` goes through the daemon: code on stdout, exit 0 after the join', async () => {
    const entry = path.resolve(import.meta.dirname, '../../../bin/peerup.js')
    const child = spawn(
      process.execPath,
      [entry, 'invite', '--non-interactive', '--name', 'home', '--config', home.configFile],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    )
    cleanups.unshift(async () => child.kill('SIGKILL'))
    let stderr = ''
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d
    })
    const [line] = (await once(createInterface({ input: child.stdout }), 'line')) as [string]
    const tablet = await createTestNode(root, 'tablet', relay)
    await runJoin({
      code: decodeInviteCode(line.trim()),
      target: { configFile: tablet.configFile },
      name: 'tablet',
      log: createLogger('join'),
      signal: AbortSignal.timeout(60_000),
    })
    const [code] = (await once(child, 'exit')) as [number]
    assert.equal(code, 0, stderr)
    assert.doesNotMatch(stderr, /stop the daemon while pairing/)
    assert.match(stderr, /paired with tablet/)
  })
})
