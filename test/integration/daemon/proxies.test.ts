/**
 * Persistent proxies (config.yaml `proxies:`) with real nodes and a real relay: `peerup proxy
 * add|list|remove|enable|disable` without a daemon (the file) and with one (its API); bad input
 * refused in one line with the file left as it was; the daemon listening from its start while the
 * peer is down, a connection waiting and completing byte-exact once the peer comes up; the
 * section hot-reloaded; the wait's bound; a peer name that stops resolving; and the foreground
 * `peerup proxy PEER SERVICE PORT`, which now waits for its peer too.
 */

import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import * as fs from 'node:fs/promises'
import * as net from 'node:net'
import { after, before, describe, it } from 'node:test'
import { LocalClient } from '../../../src/client/local.ts'
import { editConfigFile } from '../../../src/config/edit.ts'
import { loadNodeConfig } from '../../../src/config/load.ts'
import { nodeConfigSchema } from '../../../src/config/schema.ts'
import { NotFoundError, UsageError } from '../../../src/errors.ts'
import { runCli, startCli, tempDir } from '../../helpers/cli.ts'
import { startTestDaemon, type TestDaemon } from '../../helpers/daemon.ts'
import { startRelayAndPair, type TestNode, type TestRelay } from '../../helpers/mesh.ts'
import { checkedExchange, connect, freePort, startTransferServer } from '../../helpers/tcp.ts'

const KiB = 1024

/** Resolves when `socket` has closed, however (a reset included). */
function closed(socket: net.Socket): Promise<void> {
  socket.on('error', () => {})
  return new Promise((resolve) => socket.once('close', () => resolve()))
}

/** Whether something accepts connections on 127.0.0.1:`port`. */
async function listening(port: number): Promise<boolean> {
  try {
    const socket = await connect(port)
    socket.destroy()
    return true
  } catch {
    return false
  }
}

describe('persistent proxies', { timeout: 300_000 }, () => {
  let root: string
  let relay: TestRelay
  let a: TestNode
  let b: TestNode
  let server: Awaited<ReturnType<typeof startTransferServer>>
  let da: TestDaemon | undefined
  let db: TestDaemon | undefined
  /** The port of the proxy `first`. */
  let firstPort: number
  const cleanups: Array<() => Promise<unknown>> = []

  const cli = (args: string[]) => runCli([...args, '--config', a.configFile], root)
  const aClient = () => new LocalClient({ configFile: a.configFile })
  const startB = async (): Promise<void> => {
    db ??= await startTestDaemon(b.configFile)
  }
  const stopB = async (): Promise<void> => {
    await db?.stop()
    db = undefined
  }
  const proxyState = async (name: string) => {
    const found = (await aClient().call('proxyList', {})).find((p) => p.name === name)
    assert.ok(found, `no proxy ${name}`)
    return found
  }

  /**
   * Subscribes to a's daemon's events; `found` resolves with the next `config` reload whose
   * applied keys `match` accepts.
   */
  const nextReload = async (match: (applied: string[]) => boolean) => {
    const controller = new AbortController()
    const events = aClient().lines('events', {}, controller.signal)
    await events.next() // hello: subscribed
    const found = (async () => {
      try {
        for await (const e of events) {
          if (e.type === 'config' && e.action === 'reloaded' && match(e.applied)) {
            return e.applied
          }
        }
        throw new Error('the event stream ended')
      } finally {
        controller.abort()
      }
    })()
    return { found }
  }

  /** Moves 256 KiB each way through a's local `port` and checks both hashes against the service's. */
  const transferThrough = async (port: number, socket?: net.Socket): Promise<void> =>
    checkedExchange(socket ?? (await connect(port)), server, 256 * KiB)

  before(async () => {
    root = await tempDir({ after: (fn) => cleanups.push(fn) })
    ;({ relay, a, b } = await startRelayAndPair(root))
    cleanups.unshift(() => relay.stop())
    server = await startTransferServer(256 * KiB)
    cleanups.unshift(() => server.close())
    await b.addService('xfer', `127.0.0.1:${server.port}`)
    const config = await fs.readFile(a.configFile, 'utf8')
    await fs.writeFile(
      a.configFile,
      config.replace('names: {}', `names:\n  b: ${b.peerId}\n  bee: ${b.peerId}`),
    )
    cleanups.unshift(async () => {
      await da?.stop()
      await db?.stop()
    })
  })

  after(async () => {
    for (const fn of cleanups) {
      await fn().catch(() => {})
    }
  })

  it('without a daemon: bad input is refused in one line and config.yaml stays as it was', async () => {
    const taken = net.createServer()
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve))
    const takenPort = (taken.address() as net.AddressInfo).port
    try {
      const before = await fs.readFile(a.configFile, 'utf8')
      const cases: Array<[string[], number, RegExp]> = [
        [
          ['nobody', 'xfer', '2222'],
          1,
          /unknown peer "nobody": not a name in names: nor a peer id — known names: b, bee/,
        ],
        [['b', 'xfer', 'abc:def'], 2, /invalid bind address "abc:def" — give \[host:\]port/],
        [['b', 'xfer', '99999'], 2, /invalid bind address "99999"/],
        [['b', 'No_Such', '2222'], 2, /invalid service name "No_Such"/],
        [
          ['b', 'xfer', String(takenPort)],
          1,
          new RegExp(`cannot listen on 127.0.0.1:${takenPort}: the port is in use`),
        ],
        [['b', 'xfer', '203.0.113.9:2222'], 2, /203\.0\.113\.9 is not an address of this machine/],
      ]
      for (const [args, code, message] of cases) {
        const r = await cli(['proxy', 'add', 'first', ...args])
        assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`)
        assert.match(r.stderr, message)
        assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr)
        assert.match(r.stderr, /^peerup: /)
        assert.equal(await fs.readFile(a.configFile, 'utf8'), before, `${args.join(' ')} changed the file`)
      }
      const badName = await cli(['proxy', 'add', 'no/such', 'b', 'xfer'])
      assert.equal(badName.code, 2)
      assert.match(badName.stderr, /invalid proxy name "no\/such"/)
    } finally {
      await new Promise((resolve) => taken.close(resolve))
    }
  })

  it('without a daemon: add, list, disable, enable, remove edit config.yaml', async () => {
    firstPort = await freePort()
    const add = await cli(['proxy', 'add', 'first', 'b', 'xfer', String(firstPort), '--json'])
    assert.equal(add.code, 0, add.stderr)
    const added = JSON.parse(add.stdout)
    assert.equal(added.bind, `127.0.0.1:${firstPort}`)
    assert.equal(added.listening, false)
    assert.deepEqual((await loadNodeConfig(a.configFile)).config.proxies.first, {
      peer: 'b',
      service: 'xfer',
      bind: `127.0.0.1:${firstPort}`,
      enabled: true,
    })
    // No bind: a free port is picked and recorded.
    const picked = await cli(['proxy', 'add', 'spare', 'b', 'xfer', '--json'])
    assert.equal(picked.code, 0, picked.stderr)
    assert.match(JSON.parse(picked.stdout).bind, /^127\.0\.0\.1:[1-9]\d*$/)
    const dup = await cli(['proxy', 'add', 'first', 'b', 'xfer', '2222'])
    assert.equal(dup.code, 1)
    assert.match(
      dup.stderr,
      /a proxy named first already exists .* — choose another name, or remove it first/,
    )
    const sameBind = await cli(['proxy', 'add', 'other', 'b', 'xfer', String(firstPort)])
    assert.equal(sameBind.code, 1)
    assert.match(sameBind.stderr, new RegExp(`proxy first already listens on 127.0.0.1:${firstPort}`))
    const list = await cli(['proxy', 'list'])
    assert.equal(list.code, 0, list.stderr)
    assert.match(
      list.stdout,
      /first\s+127\.0\.0\.1:\d+\s+b\s+xfer\s+not listening: the daemon is not running/,
    )
    const disable = await cli(['proxy', 'disable', 'spare'])
    assert.equal(disable.code, 0, disable.stderr)
    assert.equal((await loadNodeConfig(a.configFile)).config.proxies.spare?.enabled, false)
    assert.equal((await cli(['proxy', 'enable', 'spare'])).code, 0)
    assert.equal((await loadNodeConfig(a.configFile)).config.proxies.spare?.enabled, true)
    const remove = await cli(['proxy', 'remove', 'spare'])
    assert.equal(remove.code, 0, remove.stderr)
    assert.equal((await loadNodeConfig(a.configFile)).config.proxies.spare, undefined)
    const missing = await cli(['proxy', 'remove', 'spare'])
    assert.equal(missing.code, 1)
    assert.match(missing.stderr, /no proxy named spare — proxies: first/)
  })

  it('the daemon listens from its start while the peer is down; a connection waits and completes byte-exact when the peer comes up', async () => {
    assert.equal(db, undefined, "b's daemon is not running")
    da = await startTestDaemon(a.configFile)
    const state = await proxyState('first')
    assert.equal(state.listening, true)
    assert.equal(state.peerId, b.peerId)
    const socket = await connect(firstPort)
    const started = Date.now()
    // The connection is accepted and waits; b's daemon comes up meanwhile.
    const transfer = transferThrough(firstPort, socket)
    await startB()
    await transfer
    const waited = Date.now() - started
    assert.ok(waited < 30_000, `waited ${waited} ms`)
    const after = await proxyState('first')
    assert.equal(after.totalConnections, 1)
    assert.equal(after.failedConnections, 0)
    assert.ok(after.bytesOut >= 256 * KiB && after.bytesIn >= 256 * KiB)
  })

  it('through the daemon: add listens when the command returns; list, disable, enable, remove; refusals leave the file as it was', async () => {
    const add = await cli(['proxy', 'add', 'second', 'b', 'xfer', '--json'])
    assert.equal(add.code, 0, add.stderr)
    const second = JSON.parse(add.stdout)
    assert.equal(second.listening, true)
    const port = Number(second.bind.split(':').pop())
    await transferThrough(port)
    const before = await fs.readFile(a.configFile, 'utf8')
    const taken = net.createServer()
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve))
    try {
      const takenPort = (taken.address() as net.AddressInfo).port
      const cases: Array<[string[], number, RegExp]> = [
        [['second', 'b', 'xfer'], 1, /a proxy named second already exists/],
        [['third', 'b', 'xfer', String(takenPort)], 1, /the port is in use — choose another port/],
        [['third', 'b', 'xfer', second.bind], 1, /proxy second already listens on/],
        [['third', 'nobody', 'xfer'], 1, /unknown peer "nobody"/],
        [['third', 'b', 'xfer', 'x:y:z'], 2, /invalid bind address/],
      ]
      for (const [args, code, message] of cases) {
        const r = await cli(['proxy', 'add', ...args])
        assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`)
        assert.match(r.stderr, message)
        assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr)
        assert.equal(await fs.readFile(a.configFile, 'utf8'), before, `${args.join(' ')} changed the file`)
      }
      // Switched off, its port is only recorded; switching it on binds first, and a port in use
      // keeps it off.
      const off = await cli(['proxy', 'add', 'off', 'b', 'xfer', String(takenPort), '--disabled', '--json'])
      assert.equal(off.code, 0, off.stderr)
      assert.equal(JSON.parse(off.stdout).listening, false)
      const on = await cli(['proxy', 'enable', 'off'])
      assert.equal(on.code, 1)
      assert.match(on.stderr, /the port is in use/)
      assert.equal((await loadNodeConfig(a.configFile)).config.proxies.off?.enabled, false)
      assert.equal((await cli(['proxy', 'remove', 'off'])).code, 0)
      assert.equal(await fs.readFile(a.configFile, 'utf8'), before)
    } finally {
      await new Promise((resolve) => taken.close(resolve))
    }
    // The API itself: the same checks, as the kinds of error they are.
    await assert.rejects(
      aClient().call('proxyAdd', { name: 'third', peer: 'nobody', service: 'xfer' }),
      NotFoundError,
    )
    await assert.rejects(
      aClient().call('proxyAdd', { name: 'th ird', peer: 'b', service: 'xfer' }),
      UsageError,
    )
    assert.equal(await fs.readFile(a.configFile, 'utf8'), before)

    const list = await cli(['proxy', 'list', '--json'])
    assert.deepEqual(
      JSON.parse(list.stdout).map((p: { name: string; listening: boolean }) => [p.name, p.listening]),
      [
        ['first', true],
        ['second', true],
      ],
    )
    const disabled = await aClient().call('proxyDisable', { name: 'second' })
    assert.equal(disabled.listening, false)
    assert.equal(await listening(port), false)
    assert.equal((await loadNodeConfig(a.configFile)).config.proxies.second?.enabled, false)
    const enable = await cli(['proxy', 'enable', 'second'])
    assert.equal(enable.code, 0, enable.stderr)
    assert.match(enable.stdout, /^enabled proxy second 127\.0\.0\.1:\d+ → b\/xfer \(listening\)$/m)
    await transferThrough(port)
    const status = await cli(['daemon', 'status'])
    assert.match(
      status.stdout,
      /proxies \(2\)\n {2}first {8}127\.0\.0\.1:\d+ → b\/xfer {2}listening, 0 open, 1 total/,
    )
    const remove = await cli(['proxy', 'remove', 'second'])
    assert.equal(remove.code, 0, remove.stderr)
    assert.equal(await listening(port), false)
    assert.equal((await loadNodeConfig(a.configFile)).config.proxies.second, undefined)
    const again = await cli(['proxy', 'remove', 'second'])
    assert.equal(again.code, 1)
    assert.match(again.stderr, /no proxy named second/)
  })

  it('config.yaml proxies: is followed as it changes: added, moved, removed', async () => {
    const [p1, p2] = [await freePort(), await freePort()]
    let reloaded = await nextReload((applied) => applied.includes('proxies.hot'))
    await editConfigFile(a.configFile, nodeConfigSchema, (doc) => {
      doc.setIn(['proxies', 'hot'], doc.createNode({ peer: 'b', service: 'xfer', bind: p1 }))
    })
    await reloaded.found
    assert.equal((await proxyState('hot')).bind, `127.0.0.1:${p1}`)
    await transferThrough(p1)
    reloaded = await nextReload((applied) => applied.includes('proxies.hot'))
    await editConfigFile(a.configFile, nodeConfigSchema, (doc) => {
      doc.setIn(['proxies', 'hot', 'bind'], `127.0.0.1:${p2}`)
    })
    await reloaded.found
    assert.equal(await listening(p1), false)
    await transferThrough(p2)
    reloaded = await nextReload((applied) => applied.includes('proxies.hot'))
    await editConfigFile(a.configFile, nodeConfigSchema, (doc) => {
      doc.deleteIn(['proxies', 'hot'])
    })
    await reloaded.found
    assert.equal(await listening(p2), false)
    assert.deepEqual(
      (await aClient().call('proxyList', {})).map((p) => p.name),
      ['first'],
    )
  })

  it('a connection whose peer does not answer within proxy.connect_timeout is closed, and the proxy says why', async () => {
    const reloaded = await nextReload(() => true)
    await editConfigFile(a.configFile, nodeConfigSchema, (doc) => {
      doc.setIn(['proxy', 'connect_timeout'], '2s')
    })
    await reloaded.found
    await stopB()
    const socket = await connect(firstPort)
    const started = Date.now()
    await closed(socket)
    const took = Date.now() - started
    assert.ok(took >= 1_500 && took < 15_000, `closed after ${took} ms`)
    const state = await proxyState('first')
    assert.equal(state.listening, true, 'the proxy itself keeps listening')
    assert.equal(state.failedConnections, 1)
    assert.match(state.lastError ?? '', /^b did not become reachable within 2 s/)
    // The next connection after the peer is back goes through.
    await startB()
    await transferThrough(firstPort)
    await editConfigFile(a.configFile, nodeConfigSchema, (doc) => {
      doc.deleteIn(['proxy', 'connect_timeout'])
    })
  })

  it('a peer name that stops resolving fails the connection with the resolve error; put back, it works again', async () => {
    const add = await cli(['proxy', 'add', 'named', 'bee', 'xfer', '--json'])
    assert.equal(add.code, 0, add.stderr)
    const port = Number(JSON.parse(add.stdout).bind.split(':').pop())
    await transferThrough(port)
    let reloaded = await nextReload((applied) => applied.includes('names'))
    await editConfigFile(a.configFile, nodeConfigSchema, (doc) => {
      doc.deleteIn(['names', 'bee'])
    })
    await reloaded.found
    const state = await proxyState('named')
    assert.equal(state.listening, true)
    assert.match(state.peerError ?? '', /^unknown peer "bee": not a name in names: nor a peer id$/)
    // Refused at once: the reset may come before the connect is reported here.
    await closed(net.connect({ host: '127.0.0.1', port }))
    const failed = await proxyState('named')
    assert.equal(failed.failedConnections, 1)
    assert.match(failed.lastError ?? '', /unknown peer "bee"/)
    assert.doesNotMatch(failed.lastError ?? '', /multibase|decoder/)
    const list = await cli(['proxy', 'list'])
    assert.match(list.stdout, /named .* listening; unknown peer "bee"/)
    reloaded = await nextReload((applied) => applied.includes('names'))
    await editConfigFile(a.configFile, nodeConfigSchema, (doc) => {
      doc.setIn(['names', 'bee'], b.peerId)
    })
    await reloaded.found
    await transferThrough(port)
    assert.equal((await cli(['proxy', 'remove', 'named'])).code, 0)
  })

  for (const mode of ['through the daemon', 'with a node of its own (no daemon runs)'] as const) {
    it(`\`peerup proxy PEER SERVICE PORT\` ${mode} listens at once while the peer is down; the connection completes when it comes up`, async () => {
      await stopB()
      if (mode !== 'through the daemon') {
        await da?.stop()
        da = undefined
      }
      const proxy = startCli(['proxy', 'b', 'xfer', '0', '--json', '--config', a.configFile], root)
      try {
        const [, port] = (await proxy.stdout(/"listen": "127\.0\.0\.1:(\d+)"/)) as RegExpMatchArray
        await proxy.stderr(/b does not answer now \(.*\); each connection waits up to 30 s for it/)
        const socket = await connect(Number(port))
        const transfer = transferThrough(Number(port), socket)
        await startB()
        await transfer
      } finally {
        proxy.stop()
      }
      const r = await proxy.done
      assert.equal(r.code, 0, r.stderr)
    })
  }

  it("`peerup proxy --stdio` (ssh's ProxyCommand) waits for a peer that is down, says so, and completes", async () => {
    await stopB()
    const upload = 'through stdin, once b is back\n'.repeat(1000)
    const proxy = startCli(['proxy', '--stdio', 'b', 'xfer', '--config', a.configFile], root, {
      stdin: upload,
    })
    try {
      await proxy.stderr(/waiting for b to answer \(up to 30 s\)/)
      await startB()
      const r = await proxy.done
      assert.equal(r.code, 0, r.stderr)
      const theirs = await server.transfer(createHash('sha256').update(upload).digest('hex'))
      assert.equal(theirs.received, upload.length)
    } finally {
      proxy.stop()
    }
  })

  it('`peerup proxy` with a name that is not in names: fails at once with the resolve error', async () => {
    const r = await cli(['proxy', 'nobody', 'xfer', '0'])
    assert.equal(r.code, 1)
    assert.match(
      r.stderr,
      /^peerup: unknown peer "nobody": not a name in names: nor a peer id — known names: b, bee\n$/,
    )
  })

  it('a restarted daemon brings its proxies back', async () => {
    assert.equal(da, undefined, "a's daemon was stopped above")
    assert.equal(await listening(firstPort), false)
    da = await startTestDaemon(a.configFile)
    assert.equal((await proxyState('first')).listening, true)
    await transferThrough(firstPort)
  })
})
