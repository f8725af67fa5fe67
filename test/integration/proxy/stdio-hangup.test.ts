/**
 * `peerup proxy --stdio` as ssh runs it: OpenSSH sends its ProxyCommand SIGHUP as it exits, right
 * after closing the pipes. The session has ended well by then, and the peer must see it end so —
 * not a reset — with and without a daemon. Real processes: the built-from-source executable for
 * the proxy and a's daemon, a relay and b in this process.
 */

import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { once } from 'node:events'
import * as net from 'node:net'
import * as path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { configureLogging, type LogLevel } from '../../../src/log/index.ts'
import { tempDir } from '../../helpers/cli.ts'
import { spawnDaemon } from '../../helpers/daemon.ts'
import { startRelayAndPair, type TestNode } from '../../helpers/mesh.ts'

const ENTRY = path.resolve(import.meta.dirname, '../../../bin/peerup.js')

interface Closed {
  reset: boolean
  bytesIn: number
  bytesOut: number
}

describe('proxy --stdio hung up by ssh', { timeout: 90_000 }, () => {
  let a: TestNode
  let b: TestNode
  let daemon: ChildProcess | undefined
  const cleanups: Array<() => Promise<unknown>> = []
  /** `service connection closed` lines logged by b, in order. */
  const closed: Closed[] = []
  let closedWaiter: (() => void) | undefined
  /** How each connection reaching the service ended: its client's `end`, or an error. */
  const serviceEnds: string[] = []

  before(async () => {
    configureLogging({
      level: 'info' satisfies LogLevel,
      format: 'json',
      write: (line: string) => {
        const rec = JSON.parse(line) as { msg: string; reset: boolean; bytes_in: number; bytes_out: number }
        if (rec.msg === 'service connection closed') {
          closed.push({ reset: rec.reset, bytesIn: rec.bytes_in, bytesOut: rec.bytes_out })
          closedWaiter?.()
        }
      },
    })
    const root = await tempDir({ after: (fn) => cleanups.push(fn) })
    const trio = await startRelayAndPair(root)
    cleanups.unshift(() => trio.relay.stop())
    ;({ a, b } = trio)
    // Answers each line, and ends its side once the client has ended its own — like sshd, which
    // closes after the client's disconnect.
    const server = net.createServer({ allowHalfOpen: true }, (s) => {
      s.on('data', () => s.write('reply\n'))
      s.on('end', () => {
        serviceEnds.push('end')
        s.end()
      })
      s.on('error', (err) => serviceEnds.push(`error ${err.message}`))
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    cleanups.unshift(() => new Promise((resolve) => server.close(resolve)))
    await b.addService('ssh', `127.0.0.1:${(server.address() as net.AddressInfo).port}`)
    await b.start('daemon')
    cleanups.unshift(() => b.stop())
  })

  after(async () => {
    daemon?.kill('SIGKILL')
    for (const fn of cleanups) {
      await fn()
    }
  })

  /** One session as ssh makes it: a request, its reply, then stdin closed and SIGHUP at once. */
  async function session(extra: string[]): Promise<{ code: number | null; signal: string | null }> {
    const before = closed.length
    const child = spawn(
      process.execPath,
      [ENTRY, '--config', a.configFile, 'proxy', '--stdio', b.peerId, 'ssh', ...extra],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    )
    let stderr = ''
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d
    })
    const exited = once(child, 'exit') as Promise<[number | null, string | null]>
    child.stdin.write('hello\n')
    const [reply] = (await once(child.stdout, 'data')) as [Buffer]
    assert.equal(reply.toString(), 'reply\n', stderr)
    child.stdin.end()
    child.kill('SIGHUP')
    const [code, signal] = await exited
    if (closed.length === before) {
      await new Promise<void>((resolve) => {
        closedWaiter = resolve
      })
    }
    closedWaiter = undefined
    assert.equal(closed.length, before + 1)
    return { code, signal }
  }

  it('without a daemon: the peer sees the session end in order', async () => {
    const ends = serviceEnds.length
    const { code, signal } = await session(['--no-daemon'])
    assert.equal(signal, null, 'not killed by the SIGHUP')
    assert.equal(code, 0)
    assert.deepEqual(closed.at(-1), { reset: false, bytesIn: 6, bytesOut: 6 })
    assert.deepEqual(serviceEnds.slice(ends), ['end'])
  })

  it('through the daemon: the peer sees the session end in order', async () => {
    daemon = await spawnDaemon(a.configFile)
    const ends = serviceEnds.length
    const { code, signal } = await session([])
    assert.equal(signal, null, 'not killed by the SIGHUP')
    assert.equal(code, 0)
    assert.deepEqual(closed.at(-1), { reset: false, bytesIn: 6, bytesOut: 6 })
    assert.deepEqual(serviceEnds.slice(ends), ['end'])
  })
})
