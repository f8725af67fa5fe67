/**
 * The daemon and its local API, with real nodes: a relay, daemon B offering a TCP service, and
 * daemon A whose CLI commands go through its API. The API's guards (cookie, Origin, body cap, file
 * modes), the socket's life (stale replaced, live refused, kill -9), the events stream, proxying
 * through the daemon, revocation through it, and sd_notify.
 */

import assert from 'node:assert/strict'
import { once } from 'node:events'
import * as fs from 'node:fs/promises'
import * as net from 'node:net'
import * as path from 'node:path'
import { PassThrough } from 'node:stream'
import { after, before, describe, it } from 'node:test'
import { DgramSocket } from 'node-unix-socket'
import type { DaemonEvent } from '../../../src/api/index.ts'
import { LocalClient } from '../../../src/client/local.ts'
import { stdioEnd } from '../../../src/pipe/node.ts'
import { pipe } from '../../../src/pipe/pipe.ts'
import { SocketInUseError } from '../../../src/util/socket.ts'
import { runCli, tempDir } from '../../helpers/cli.ts'
import { rawRequest, spawnDaemon, startTestDaemon, type TestDaemon } from '../../helpers/daemon.ts'
import { createTestNode, startRelayAndPair, type TestNode, type TestRelay } from '../../helpers/mesh.ts'

const MiB = 1024 * 1024

/** Resolves with the first event of the stream for which `match` holds. */
async function nextEvent(
  events: AsyncGenerator<DaemonEvent>,
  match: (e: DaemonEvent) => boolean,
): Promise<DaemonEvent> {
  for (;;) {
    const { value, done } = await events.next()
    assert.ok(done !== true, 'the event stream ended')
    if (match(value)) {
      return value
    }
  }
}

describe('the daemon and its local API', { timeout: 180_000 }, () => {
  let relay: TestRelay
  let a: TestNode
  let b: TestNode
  let da: TestDaemon
  let db: TestDaemon
  let echo: net.Server
  let cut: net.Server
  let sink: net.Server
  const sinkEnds: string[] = []
  const sinkWaiters: Array<() => void> = []
  const sinkEndWaiters: Array<() => void> = []
  let root: string
  const cleanups: Array<() => Promise<unknown>> = []

  before(async () => {
    root = await tempDir({ after: (fn) => cleanups.push(fn) })
    ;({ relay, a, b } = await startRelayAndPair(root))
    cleanups.unshift(() => relay.stop())
    // An echo service that half-closes after echoing everything.
    echo = net.createServer({ allowHalfOpen: true }, (s) => s.pipe(s))
    await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve))
    cleanups.unshift(() => new Promise((resolve) => echo.close(resolve)))
    await b.addService('echo', `127.0.0.1:${(echo.address() as net.AddressInfo).port}`)
    // Sends 256 KiB, then resets: a failure on the far side.
    // Resets after 256 KiB, once the session is up (a reset before the client's first byte would
    // race the connect itself, and a refused connection is another test).
    cut = net.createServer((s) => {
      s.on('error', () => {})
      s.once('data', () => s.write(Buffer.alloc(256 * 1024, 1), () => s.resetAndDestroy()))
    })
    await new Promise<void>((resolve) => cut.listen(0, '127.0.0.1', resolve))
    cleanups.unshift(() => new Promise((resolve) => cut.close(resolve)))
    await b.addService('cut', `127.0.0.1:${(cut.address() as net.AddressInfo).port}`)
    // Records how its connections end.
    sink = net.createServer({ allowHalfOpen: true }, (s) => {
      s.on('data', () => {})
      const ended = (how: string): void => {
        sinkEnds.push(how)
        for (const w of sinkEndWaiters.splice(0)) w()
      }
      s.once('error', (err: NodeJS.ErrnoException) => ended(err.code ?? err.message))
      s.once('end', () => ended('end'))
      for (const w of sinkWaiters.splice(0)) w()
    })
    await new Promise<void>((resolve) => sink.listen(0, '127.0.0.1', resolve))
    cleanups.unshift(() => new Promise((resolve) => sink.close(resolve)))
    await b.addService('sink', `127.0.0.1:${(sink.address() as net.AddressInfo).port}`)
    db = await startTestDaemon(b.configFile)
    cleanups.unshift(() => db.stop())
    const config = await fs.readFile(a.configFile, 'utf8')
    await fs.writeFile(a.configFile, config.replace('names: {}', `names:\n  b: ${b.peerId}`))
    da = await startTestDaemon(a.configFile)
    cleanups.unshift(() => da.stop())
  })

  after(async () => {
    for (const fn of cleanups) {
      await fn().catch(() => {})
    }
  })

  it('keeps the socket 0600 in a 0700 directory and the cookie 0600', async () => {
    assert.equal((await fs.stat(da.ready.socketPath)).mode & 0o777, 0o600)
    assert.equal((await fs.stat(path.dirname(da.ready.socketPath))).mode & 0o777, 0o700)
    assert.equal((await fs.stat(da.ready.cookieFile)).mode & 0o777, 0o600)
    assert.match((await fs.readFile(da.ready.cookieFile, 'utf8')).trim(), /^[0-9a-f]{64}$/)
  })

  it('answers 401 without the cookie or with a wrong one, and does nothing', async () => {
    const none = await rawRequest(da.ready.socketPath, { method: 'POST', path: '/v1/shutdown' })
    assert.equal(none.status, 401)
    assert.match(JSON.parse(none.body).error, /cookie/)
    const wrong = await rawRequest(da.ready.socketPath, {
      method: 'POST',
      path: '/v1/shutdown',
      headers: { Authorization: `Bearer ${'0'.repeat(64)}` },
    })
    assert.equal(wrong.status, 401)
    // Still running: the shutdown was not carried out.
    const status = await new LocalClient({ configFile: a.configFile }).call('status', {})
    assert.equal(status.peerId, a.peerId)
  })

  it('refuses requests with Origin or Referer (403) and bodies over 1 MiB (413)', async () => {
    const cookie = (await fs.readFile(da.ready.cookieFile, 'utf8')).trim()
    const auth = { Authorization: `Bearer ${cookie}` }
    const origin = await rawRequest(da.ready.socketPath, {
      path: '/v1/status',
      headers: { ...auth, Origin: 'http://evil.example' },
    })
    assert.equal(origin.status, 403)
    const referer = await rawRequest(da.ready.socketPath, {
      path: '/v1/status',
      headers: { ...auth, Referer: 'http://evil.example/' },
    })
    assert.equal(referer.status, 403)
    const big = await rawRequest(da.ready.socketPath, {
      method: 'POST',
      path: '/v1/auth',
      headers: { ...auth, 'Content-Type': 'application/json' },
      body: Buffer.alloc(2 * MiB, 0x20),
    })
    assert.equal(big.status, 413)
    const ok = await rawRequest(da.ready.socketPath, {
      path: '/v1/status',
      headers: { ...auth, Accept: 'text/plain' },
    })
    assert.equal(ok.status, 200)
    assert.match(ok.body, /^daemon {4}running, pid \d+/)
  })

  it('refuses a second daemon on the same config, and the first keeps serving', async () => {
    await assert.rejects(startTestDaemon(a.configFile), (err: unknown) => {
      assert.ok(err instanceof SocketInUseError, String(err))
      assert.match(err.message, /already running/)
      return true
    })
    assert.equal((await new LocalClient({ configFile: a.configFile }).call('status', {})).peerId, a.peerId)
    // The refused one must not have removed the first one's cookie.
    await fs.access(da.ready.cookieFile)
  })

  it('ping through the daemon reports rtt and the RELAYED path', async () => {
    const r = await runCli(
      ['ping', 'b', '-c', '2', '--interval', '100ms', '--json', '--config', a.configFile],
      root,
    )
    assert.equal(r.code, 0, r.stderr)
    const report = JSON.parse(r.stdout)
    assert.equal(report.received, 2)
    assert.equal(report.path.type, 'RELAYED')
    assert.equal(report.path.relay, relay.peerId)
  })

  it('proxies a byte stream through the daemon (POST /v1/dial), byte-exact with half-close', async () => {
    const far = await new LocalClient({ configFile: a.configFile }).dial('b', 'echo')
    const input = new PassThrough()
    const output = new PassThrough()
    const chunks: Buffer[] = []
    output.on('data', (c: Buffer) => chunks.push(c))
    const payload = Buffer.alloc(4 * MiB)
    for (let i = 0; i < payload.length; i += 4) {
      payload.writeUInt32BE(i, i)
    }
    const result = pipe(stdioEnd(input, output), far)
    input.end(payload)
    const r = await result
    assert.equal(r.reset, false, String(r.error))
    assert.ok(Buffer.concat(chunks).equals(payload))
  })

  it('a reset on the far side reaches the client through the daemon as a reset, not an end', async () => {
    const far = await new LocalClient({ configFile: a.configFile }).dial('b', 'cut')
    const output = new PassThrough()
    let got = 0
    output.on('data', (c: Buffer) => {
      got += c.length
    })
    const input = new PassThrough()
    input.write('go')
    const r = await pipe(stdioEnd(input, output), far)
    assert.equal(r.reset, true, 'a cut transfer must not look complete')
    assert.ok(got <= 256 * 1024)
  })

  it('a client that fails resets the service through the daemon, it is not given a clean end', async () => {
    // B's service dials the sink as soon as the stream arrives, before dial() returns here.
    const connected = new Promise<void>((resolve) => sinkWaiters.push(resolve))
    const far = await new LocalClient({ configFile: a.configFile }).dial('b', 'sink')
    const input = new PassThrough()
    const r = pipe(stdioEnd(input, new PassThrough()), far)
    input.write(Buffer.alloc(64 * 1024, 2))
    await connected
    input.destroy(new Error('test: the local client failed'))
    assert.equal((await r).reset, true)
    if (sinkEnds.length === 0) {
      await new Promise<void>((resolve) => sinkEndWaiters.push(resolve))
    }
    assert.equal(sinkEnds[0], 'ECONNRESET')
  })

  it('proxy --stdio goes through the daemon', async () => {
    const r = await runCli(['proxy', '--stdio', 'b', 'echo', '--config', a.configFile], root, {
      stdin: 'hello through the daemon\n',
    })
    assert.equal(r.code, 0, r.stderr)
    assert.equal(r.stdout, 'hello through the daemon\n')
  })

  it('a dial to a service the peer does not offer is an error that says so', async () => {
    await assert.rejects(
      new LocalClient({ configFile: a.configFile }).dial('b', 'nope'),
      /does not offer a service named nope/,
    )
  })

  it('daemon connect/proxies/disconnect run a proxy listener in the daemon', async () => {
    const c = new LocalClient({ configFile: a.configFile })
    const proxy = await c.call('connectAdd', { peer: 'b', service: 'echo', listen: '127.0.0.1:0' })
    const port = Number(proxy.listen.split(':').pop())
    const sock = net.connect({ host: '127.0.0.1', port })
    await once(sock, 'connect')
    sock.end('ping\n')
    const [data] = (await once(sock, 'data')) as [Buffer]
    assert.equal(data.toString(), 'ping\n')
    assert.equal((await c.call('connectList', {})).length, 1)
    await c.call('connectRemove', { id: proxy.id })
    assert.equal((await c.call('connectList', {})).length, 0)
  })

  it('proxy PEER SERVICE PORT with a daemon listens in the daemon until Ctrl+C, then the port is closed', async () => {
    const c = new LocalClient({ configFile: a.configFile })
    const controller = new AbortController()
    const running = runCli(['proxy', 'b', 'echo', '127.0.0.1:0', '--json', '--config', a.configFile], root, {
      signal: controller.signal,
    })
    // Listed by the daemon while the command runs: the bytes take no hop through the command.
    let held = await c.call('connectList', {})
    for (let i = 0; held.length === 0 && i < 100; i++) {
      await new Promise((resolve) => setTimeout(resolve, 50))
      held = await c.call('connectList', {})
    }
    assert.equal(held.length, 1)
    assert.deepEqual([held[0]?.peer, held[0]?.service], ['b', 'echo'])
    const port = Number(held[0]?.listen.split(':').pop())
    const sock = net.connect({ host: '127.0.0.1', port })
    await once(sock, 'connect')
    sock.end('through the daemon\n')
    const [data] = (await once(sock, 'data')) as [Buffer]
    assert.equal(data.toString(), 'through the daemon\n')
    controller.abort()
    const r = await running
    assert.equal(r.code, 0, r.stderr)
    assert.equal(JSON.parse(r.stdout).listen, held[0]?.listen)
    assert.match(r.stderr, /forwarding 127\.0\.0\.1:\d+ → b\/echo/)
    assert.deepEqual(await c.call('connectList', {}), [])
    await assert.rejects(
      new Promise((resolve, reject) =>
        net.connect({ host: '127.0.0.1', port }).once('connect', resolve).once('error', reject),
      ),
      /ECONNREFUSED/,
    )
    // A port in use: the daemon's refusal, in one line, exit 1, and nothing left listening.
    const taken = net.createServer()
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve))
    const takenPort = (taken.address() as net.AddressInfo).port
    try {
      const busy = await runCli(['proxy', 'b', 'echo', String(takenPort), '--config', a.configFile], root)
      assert.equal(busy.code, 1, busy.stderr)
      assert.match(
        busy.stderr,
        new RegExp(
          `^peerup: cannot listen on 127\\.0\\.0\\.1:${takenPort}: listen EADDRINUSE.* — choose another port`,
        ),
      )
      assert.equal(busy.stderr.trim().split('\n').length, 1, busy.stderr)
      assert.deepEqual(await c.call('connectList', {}), [])
    } finally {
      taken.close()
    }
  })

  it('the events stream reports a peer joining and leaving', async () => {
    const controller = new AbortController()
    const events = new LocalClient({ configFile: b.configFile }).lines('events', {}, controller.signal)

    try {
      assert.equal((await events.next()).value?.type, 'hello')
      const root2 = await tempDir({ after: (fn) => cleanups.push(fn) })
      const c = await createTestNode(root2, 'c', relay)
      await relay.authorize(c.peerId)
      // Through B's daemon: authorized (and reloaded) before the answer.
      await new LocalClient({ configFile: b.configFile }).call('authAdd', { peer: c.peerId })
      const rc = await c.start('client')
      await rc.reach(b.peerId)
      const joined = await nextEvent(events, (e) => e.type === 'peer-connected' && e.peerId === c.peerId)
      assert.equal(joined.type === 'peer-connected' && joined.path.type, 'RELAYED')
      await c.stop()
      await nextEvent(events, (e) => e.type === 'peer-disconnected' && e.peerId === c.peerId)
    } finally {
      controller.abort()
    }
  })

  it('status --watch prints a line when a peer connects and leaves', async () => {
    const { watchStatus } = await import('../../../src/cli/commands/status-watch.ts')
    const { readEnv } = await import('../../../src/env.ts')
    const out = new PassThrough()
    const text: string[] = []
    const waiters: Array<{ re: RegExp; resolve: () => void }> = []
    out.setEncoding('utf8').on('data', (d: string) => {
      text.push(d)
      for (const w of waiters.filter((x) => x.re.test(text.join('')))) {
        waiters.splice(waiters.indexOf(w), 1)
        w.resolve()
      }
    })
    const seen = (re: RegExp) =>
      re.test(text.join(''))
        ? Promise.resolve()
        : new Promise<void>((resolve) => waiters.push({ re, resolve }))
    const controller = new AbortController()
    const ready = Promise.withResolvers<void>()
    const watching = watchStatus(
      {
        programName: 'peerup',
        stdout: out,
        stderr: new PassThrough(),
        stdin: new PassThrough(),
        env: readEnv({}),
        cwd: root,
        signal: controller.signal,
      },
      {},
      b.configFile,
      { onReady: ready.resolve },
    )
    await ready.promise
    // Subscribed: a peer is authorized, comes and goes.
    const root4 = await tempDir({ after: (fn) => cleanups.push(fn) })
    const w = await createTestNode(root4, 'w', relay)
    await relay.authorize(w.peerId)
    await new LocalClient({ configFile: b.configFile }).call('authAdd', { peer: w.peerId, name: 'watcher' })
    await seen(/authorized_keys: \+1/)
    const rw = await w.start('client')
    await rw.reach(b.peerId)
    await seen(/connected watcher RELAYED via/)
    await w.stop()
    await seen(/disconnected watcher/)
    controller.abort()
    await watching
  })

  it('status --watch on a terminal shows each peer’s round-trip time as soon as it shows the peer', async () => {
    const { watchStatus } = await import('../../../src/cli/commands/status-watch.ts')
    const { readEnv } = await import('../../../src/env.ts')
    const root5 = await tempDir({ after: (fn) => cleanups.push(fn) })
    const p = await createTestNode(root5, 'p', relay)
    await relay.authorize(p.peerId)
    await new LocalClient({ configFile: b.configFile }).call('authAdd', { peer: p.peerId, name: 'pinged' })
    await p.authorize(b.peerId)
    const rp = await p.start('client')
    cleanups.unshift(() => p.stop())
    await rp.reach(b.peerId)
    const out = Object.assign(new PassThrough(), { isTTY: true })
    const { promise: timed, resolve } = Promise.withResolvers<string>()
    // The view is redrawn whole each time: the row of `pinged` with a time in its RTT column.
    const row = new RegExp(`^pinged\\s+${p.peerId}\\s+RELAYED via \\S+\\s+(\\d+\\.\\d ms)\\s`, 'm')
    let shown = ''
    out.setEncoding('utf8').on('data', (d: string) => {
      shown += d
      const m = row.exec(shown.slice(shown.lastIndexOf('\x1b[2J')))
      if (m !== null) resolve(m[1] as string)
    })
    const controller = new AbortController()
    const watching = watchStatus(
      {
        programName: 'peerup',
        stdout: out,
        stderr: new PassThrough(),
        stdin: new PassThrough(),
        env: readEnv({}),
        cwd: root,
        signal: controller.signal,
      },
      {},
      b.configFile,
      // No second round within the test: the time shown is the one measured when the peer appeared.
      { rttIntervalMs: 3_600_000 },
    )
    assert.match(await timed, /^\d+\.\d ms$/)
    controller.abort()
    await watching
  })

  it('auth remove through the daemon closes the revoked peer’s connections at once', async () => {
    const root3 = await tempDir({ after: (fn) => cleanups.push(fn) })
    const e = await createTestNode(root3, 'e', relay)
    await relay.authorize(e.peerId)
    await new LocalClient({ configFile: b.configFile }).call('authAdd', { peer: e.peerId, comment: 'e' })
    const re = await e.start('client')
    cleanups.unshift(() => e.stop())
    await re.reach(b.peerId)
    const r = await runCli(['auth', 'remove', e.peerId, '--json', '--config', b.configFile], root)
    assert.equal(r.code, 0, r.stderr)
    assert.ok(JSON.parse(r.stdout).closedConnections >= 1)
    const conns = (await new LocalClient({ configFile: b.configFile }).call('peers', { all: true })).filter(
      (p) => p.peerId === e.peerId,
    )
    assert.deepEqual(conns, [])
  })

  it('daemon status answers; daemon stop stops it and removes socket and cookie', async () => {
    const r = await runCli(['daemon', 'status', '--json', '--config', a.configFile], root)
    assert.equal(r.code, 0, r.stderr)
    assert.equal(JSON.parse(r.stdout).peerId, a.peerId)
    const stop = await runCli(['daemon', 'stop', '--config', a.configFile], root)
    assert.equal(stop.code, 0, stop.stderr)
    await da.done
    await assert.rejects(fs.access(da.ready.socketPath))
    await assert.rejects(fs.access(da.ready.cookieFile))
    // Without a daemon the same command falls back to a node of its own.
    const ping = await runCli(['ping', 'b', '-c', '1', '--json', '--config', a.configFile], root)
    assert.equal(ping.code, 0, ping.stderr)
    const status = await runCli(['daemon', 'status', '--config', a.configFile], root)
    assert.equal(status.code, 1)
    assert.match(status.stderr, /not running.*start it with `peerup daemon`/)
  })

  it('after kill -9 the stale socket is replaced and a new daemon starts', async () => {
    const child = await spawnDaemon(a.configFile)
    const exited = once(child, 'exit')
    child.kill('SIGKILL')
    await exited
    // Left behind: a socket nobody answers on, and the old cookie.
    assert.ok((await fs.lstat(da.ready.socketPath)).isSocket())
    const oldCookie = await fs.readFile(da.ready.cookieFile, 'utf8')
    da = await startTestDaemon(a.configFile)
    assert.notEqual(await fs.readFile(da.ready.cookieFile, 'utf8'), oldCookie, 'the cookie is rotated')
    assert.equal((await new LocalClient({ configFile: a.configFile }).call('status', {})).peerId, a.peerId)
  })

  it('SIGTERM stops the real daemon in order: exit 0, socket and cookie gone', async () => {
    await da.stop()
    const child = await spawnDaemon(a.configFile)
    const exited = once(child, 'exit')
    child.kill('SIGTERM')
    const [code] = (await exited) as [number | null]
    assert.equal(code, 0)
    await assert.rejects(fs.access(da.ready.socketPath))
    await assert.rejects(fs.access(da.ready.cookieFile))
    da = await startTestDaemon(a.configFile)
  })

  it('runs with two malloc arenas unless the environment says otherwise, in the same process', {
    skip: process.platform !== 'linux',
  }, async () => {
    await da.stop()
    for (const [given, expected] of [
      [undefined, '2'],
      ['8', '8'],
    ] as const) {
      const env = { ...process.env }
      delete env.MALLOC_ARENA_MAX
      if (given !== undefined) {
        env.MALLOC_ARENA_MAX = given
      }
      const child = await spawnDaemon(a.configFile, env)
      // The process that answers is the one spawned (started again in place), with the variable set.
      const environ = (await fs.readFile(`/proc/${child.pid}/environ`, 'utf8')).split('\0')
      const exited = once(child, 'exit')
      child.kill('SIGTERM')
      await exited
      assert.ok(
        environ.includes(`MALLOC_ARENA_MAX=${expected}`),
        `MALLOC_ARENA_MAX given ${given}: ${environ.filter((v) => v.startsWith('MALLOC'))}`,
      )
    }
    da = await startTestDaemon(a.configFile)
  })

  it('tells systemd READY=1, then WATCHDOG=1 while healthy, then STOPPING=1', async () => {
    await da.stop()
    const notifyPath = path.join(root, 'notify.sock')
    const listener = new DgramSocket()
    const received: string[] = []
    const waiters: Array<() => void> = []
    listener.on('data', (buf: Buffer) => {
      received.push(buf.toString())
      for (const w of waiters.splice(0)) w()
    })
    listener.bind(notifyPath)
    const seen = async (what: RegExp): Promise<void> => {
      while (!received.some((m) => what.test(m))) {
        await new Promise<void>((resolve) => waiters.push(resolve))
      }
    }
    try {
      da = await startTestDaemon(a.configFile, { notifySocket: notifyPath, watchdogUsec: 400_000 })
      await seen(/^READY=1/m)
      await seen(/^WATCHDOG=1$/m)
      await da.stop()
      await seen(/^STOPPING=1$/m)
      const order = ['READY=1', 'WATCHDOG=1', 'STOPPING=1'].map((s) =>
        received.findIndex((m) => m.startsWith(s)),
      )
      assert.deepEqual(
        [...order].sort((x, y) => x - y),
        order,
      )
    } finally {
      listener.close()
    }
  })
})
