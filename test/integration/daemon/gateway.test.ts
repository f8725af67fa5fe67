/**
 * The gateway (src/daemon/gateway.ts) in a's daemon, with real nodes, a real relay and b's daemon
 * offering real TCP services: SOCKS5 and HTTP CONNECT by name (`xfer.home.peerup`) and by port
 * (`home.peerup:<port>`, a `ports:` range included), byte-exact both ways with half-close; the
 * reply codes of refusals and their audit lines; `socks:` hot-reloaded, with a login; and
 * `peerup socks` holding a gateway of its own, in the daemon or (`--no-daemon`) in a node of its own.
 */

import assert from 'node:assert/strict'
import { once } from 'node:events'
import * as fs from 'node:fs/promises'
import type * as net from 'node:net'
import * as path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { LocalClient } from '../../../src/client/local.ts'
import { editConfigFile } from '../../../src/config/edit.ts'
import { nodeConfigSchema } from '../../../src/config/schema.ts'
import { startCli, tempDir } from '../../helpers/cli.ts'
import { startTestDaemon, type TestDaemon } from '../../helpers/daemon.ts'
import { httpConnect, socksConnect } from '../../helpers/gateway-client.ts'
import { startRelayAndPair, type TestNode, type TestRelay } from '../../helpers/mesh.ts'
import { checkedExchange, connect, freePort, startTransferServer } from '../../helpers/tcp.ts'

const KiB = 1024

describe('the gateway in the daemon', { timeout: 300_000 }, () => {
  let root: string
  let relay: TestRelay
  let a: TestNode
  let b: TestNode
  let server: Awaited<ReturnType<typeof startTransferServer>>
  /** A second transfer server, on the one port of service `range`'s `ports:`. */
  let rangeServer: Awaited<ReturnType<typeof startTransferServer>>
  /** Ports nothing listens on: `range`'s own address, and the one `twin-a` and `twin-b` share. */
  let nothing: number
  let shared: number
  let da: TestDaemon
  let db: TestDaemon
  let socksPort: number
  let httpPort: number
  const cleanups: Array<() => Promise<unknown>> = []

  /** 256 KiB each way through `socket` (a tunnel to `to`), both hashes checked. */
  const transferThrough = (socket: net.Socket, to = server): Promise<void> =>
    checkedExchange(socket, to, 256 * KiB)

  /** Waits for a's daemon to have applied a change of config.yaml that touched `socks`. */
  const socksReloaded = async (edit: () => Promise<void>): Promise<void> => {
    const controller = new AbortController()
    const events = new LocalClient({ configFile: a.configFile }).lines('events', {}, controller.signal)
    await events.next()
    try {
      await edit()
      for await (const e of events) {
        if (e.type === 'config' && e.action === 'reloaded' && e.applied.includes('socks')) {
          return
        }
      }
    } finally {
      controller.abort()
    }
  }

  before(async () => {
    root = await tempDir({ after: (fn) => cleanups.push(fn) })
    ;({ relay, a, b } = await startRelayAndPair(root))
    cleanups.unshift(() => relay.stop())
    server = await startTransferServer(256 * KiB)
    cleanups.unshift(() => server.close())
    rangeServer = await startTransferServer(256 * KiB)
    cleanups.unshift(() => rangeServer.close())
    ;[socksPort, httpPort, nothing, shared] = await Promise.all([
      freePort(),
      freePort(),
      freePort(),
      freePort(),
    ])
    await editConfigFile(b.configFile, nodeConfigSchema, (doc) => {
      doc.setIn(
        ['services'],
        doc.createNode({
          xfer: { local_address: `127.0.0.1:${server.port}` },
          // The same port, for b alone: asked for by port, a gets xfer.
          secret: { local_address: `127.0.0.1:${server.port}`, allowed_peers: [b.peerId] },
          range: { local_address: `127.0.0.1:${nothing}`, ports: [rangeServer.port] },
          'twin-a': { local_address: `127.0.0.1:${shared}` },
          'twin-b': { local_address: `127.0.0.1:${shared}` },
        }),
      )
    })
    await editConfigFile(a.configFile, nodeConfigSchema, (doc) => {
      doc.setIn(['names'], doc.createNode({ home: b.peerId }))
      doc.setIn(
        ['socks'],
        doc.createNode({
          enabled: true,
          listen_address: `127.0.0.1:${socksPort}`,
          http_listen_address: `127.0.0.1:${httpPort}`,
        }),
      )
      doc.setIn(['telemetry'], doc.createNode({ audit: { enabled: true } }))
    })
    db = await startTestDaemon(b.configFile)
    cleanups.unshift(() => db.stop())
    da = await startTestDaemon(a.configFile)
    cleanups.unshift(() => da.stop())
  })

  after(async () => {
    for (const fn of cleanups) {
      await fn().catch(() => {})
    }
  })

  it('SOCKS5 to <service>.<peer>.peerup carries bytes exactly, both ways, with half-close', async () => {
    const { socket, reply } = await socksConnect(socksPort, 'xfer.home.peerup', 443)
    assert.equal(reply, 0)
    await transferThrough(socket)
  })

  it('SOCKS5 to <peer>.peerup:<port>: the service on that port a may use, or the port of a ports: range', async () => {
    const byPort = await socksConnect(socksPort, 'home.peerup', server.port)
    assert.equal(byPort.reply, 0)
    await transferThrough(byPort.socket)
    const inRange = await socksConnect(socksPort, 'home.peerup', rangeServer.port)
    assert.equal(inRange.reply, 0)
    await transferThrough(inRange.socket, rangeServer)
  })

  it('HTTP CONNECT carries bytes exactly; the head of a refusal says why', async () => {
    const { socket, status, head } = await httpConnect(httpPort, 'xfer.home.peerup:443')
    assert.equal(status, 200, head)
    await transferThrough(socket)
    for (const [authority, want] of [
      ['nope.peerup:80', 404],
      ['secret.home.peerup:80', 403],
      [`home.peerup:${nothing}`, 502],
    ] as const) {
      const r = await httpConnect(httpPort, authority)
      assert.equal(r.status, want, `${authority}: ${r.head}`)
      r.socket.destroy()
    }
  })

  it('a plain HTTP request to the CONNECT listener is answered 405', async () => {
    const socket = await connect(httpPort)
    let answer = ''
    socket.setEncoding('latin1').on('data', (text: string) => {
      answer += text
    })
    socket.write('GET http://xfer.home.peerup/ HTTP/1.1\r\nHost: xfer.home.peerup\r\n\r\n')
    // The gateway ends its side after the answer.
    await once(socket, 'end')
    socket.destroy()
    assert.match(answer, /^HTTP\/1\.1 405 Method Not Allowed\r\n/)
    assert.match(answer, /\r\nAllow: CONNECT\r\n/)
    assert.match(answer, /only tunnels \(CONNECT\)/)
  })

  it('refusals get their SOCKS reply code, and an audit line each', async () => {
    const cases: Array<[string, number, number]> = [
      ['nope.peerup', 80, 4],
      ['example.com', 80, 4],
      ['secret.home.peerup', 80, 2],
      ['home.peerup', nothing, 5],
      // range's own address, where nothing listens.
      ['range.home.peerup', 80, 5],
      // Two services a may use on that port: it must name one.
      ['home.peerup', shared, 5],
    ]
    for (const [host, port, code] of cases) {
      const r = await socksConnect(socksPort, host, port)
      assert.equal(r.reply, code, `${host}:${port}`)
      r.socket.destroy()
    }
    const audit = (await fs.readFile(path.join(a.dir, 'audit.log'), 'utf8'))
      .split('\n')
      .filter((l) => l.includes('"role":"gateway"'))
      .map((l) => JSON.parse(l) as { what: string; target: string; reply: number; reason: string })
    for (const [host, port, code] of cases) {
      assert.ok(
        audit.some((e) => e.what === 'socks' && e.target === `${host}:${port}` && e.reply === code),
        `no audit line for ${host}:${port}: ${JSON.stringify(audit)}`,
      )
    }
    assert.match(
      audit.find((e) => e.target === `home.peerup:${shared}`)?.reason ?? '',
      /offered by services twin-a and twin-b: ask for one by name/,
    )
  })

  it('socks: follows config.yaml: with a login, only the right one passes', async () => {
    await fs.writeFile(path.join(a.dir, 'socks.pw'), 'open sesame\n', { mode: 0o600 })
    await socksReloaded(() =>
      editConfigFile(a.configFile, nodeConfigSchema, (doc) => {
        doc.setIn(['socks', 'username'], 'me')
        doc.setIn(['socks', 'password_file'], 'socks.pw')
      }).then(() => {}),
    )
    const none = await socksConnect(socksPort, 'xfer.home.peerup', 80)
    assert.equal(none.reply, 'refused')
    none.socket.destroy()
    const wrong = await socksConnect(socksPort, 'xfer.home.peerup', 80, { user: 'me', password: 'open' })
    assert.equal(wrong.reply, 'refused')
    wrong.socket.destroy()
    const right = await socksConnect(socksPort, 'xfer.home.peerup', 80, {
      user: 'me',
      password: 'open sesame',
    })
    assert.equal(right.reply, 0)
    await transferThrough(right.socket)
    const anonymous = await httpConnect(httpPort, 'xfer.home.peerup:80')
    assert.equal(anonymous.status, 407)
    anonymous.socket.destroy()
    const basic = `Proxy-Authorization: Basic ${Buffer.from('me:open sesame').toString('base64')}`
    const logged = await httpConnect(httpPort, 'xfer.home.peerup:80', [basic])
    assert.equal(logged.status, 200, logged.head)
    await transferThrough(logged.socket)
    // The password is in no log line and no audit line.
    const audit = await fs.readFile(path.join(a.dir, 'audit.log'), 'utf8')
    assert.ok(!audit.includes('open sesame') && !audit.includes(' sesame'))
  })

  it('peerup socks holds a gateway of its own in the daemon until it stops', async () => {
    const port = await freePort()
    const cli = startCli(['socks', `127.0.0.1:${port}`, '--config', a.configFile], root)
    try {
      await cli.stderr(new RegExp(`SOCKS5 on 127\\.0\\.0\\.1:${port}`))
      const { socket, reply } = await socksConnect(port, 'xfer.home.peerup', 80)
      assert.equal(reply, 0)
      await transferThrough(socket)
    } finally {
      cli.stop()
    }
    const r = await cli.done
    assert.equal(r.code, 0, r.stderr)
    // The daemon closes the gateway once it sees the request end, a moment after the command.
    for (let i = 0; ; i++) {
      const refused = await connect(port).then(
        (s) => {
          s.destroy()
          return false
        },
        () => true,
      )
      if (refused) {
        break
      }
      assert.ok(i < 50, 'the gateway still listens 5 s after peerup socks stopped')
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
  })

  it('peerup socks --no-daemon runs the gateway in a node of its own, --http beside it', async () => {
    const [port, http] = await Promise.all([freePort(), freePort()])
    const cli = startCli(
      ['socks', `127.0.0.1:${port}`, '--http', `127.0.0.1:${http}`, '--no-daemon', '--config', a.configFile],
      root,
    )
    try {
      await cli.stderr(
        new RegExp(`SOCKS5 on 127\\.0\\.0\\.1:${port}, HTTP CONNECT on 127\\.0\\.0\\.1:${http}`),
      )
      const { socket, reply } = await socksConnect(port, 'xfer.home.peerup', 80)
      assert.equal(reply, 0)
      await transferThrough(socket)
      const tunnel = await httpConnect(http, 'xfer.home.peerup:443')
      assert.equal(tunnel.status, 200, tunnel.head)
      await transferThrough(tunnel.socket)
    } finally {
      cli.stop()
    }
    const r = await cli.done
    assert.equal(r.code, 0, r.stderr)
    // Its own node stopped with it: nothing listens.
    await assert.rejects(connect(port))
  })

  it('the password file must not be readable by other users: refused with a chmod hint', async () => {
    const pw = path.join(a.dir, 'socks.pw')
    await fs.chmod(pw, 0o644)
    const { configGatewaySettings } = await import('../../../src/daemon/gateway.ts')
    const { loadNodeConfig } = await import('../../../src/config/load.ts')
    const { config, dir } = await loadNodeConfig(a.configFile)
    await assert.rejects(configGatewaySettings(config, dir), (err: Error & { hint?: string }) => {
      assert.match(err.message, /socks\.pw has mode 0644, readable by other users$/)
      assert.equal(err.hint, `run: chmod 600 ${pw}`)
      return true
    })
    await fs.chmod(pw, 0o600)
    assert.equal((await configGatewaySettings(config, dir))?.credentials?.user, 'me')
  })

  it('peerup socks refuses an address beyond loopback in one line', async () => {
    const cli = startCli(['socks', '0.0.0.0:0', '--config', a.configFile], root)
    const r = await cli.done
    assert.equal(r.code, 2, r.stderr)
    assert.match(r.stderr, /0\.0\.0\.0:0 is not a loopback address/)
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr)
  })
})
