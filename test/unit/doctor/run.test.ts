/**
 * `peerup doctor` on a node directory made by `peerup init`, against real parts on loopback: a TCP
 * listener standing for the relay's port and the relay's STUN responders (two ports, each naming
 * the other). What `--fix` changes on disk, and the command's text and exit code.
 */

import * as assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import * as fs from 'node:fs/promises'
import * as net from 'node:net'
import * as path from 'node:path'
import { after, before, describe, it } from 'node:test'
import type { Check } from '../../../src/doctor/checks.ts'
import { runDoctor } from '../../../src/doctor/run.ts'
import { createLogger } from '../../../src/log/index.ts'
import { StunResponder } from '../../../src/relay/stun.ts'
import { initNodeDir, RELAY_ADDR, runCli, tempDir } from '../../helpers/cli.ts'

const PEER = RELAY_ADDR.split('/p2p/')[1] as string

/** A client for a daemon that must not be asked: no daemon runs in these tests. */
const NO_DAEMON = {
  call: () => {
    throw new Error('the daemon was asked, but its socket does not answer')
  },
}

function byId(checks: Check[], id: string): Check {
  const c = checks.find((x) => x.id === id)
  assert.ok(c !== undefined, `no ${id} check`)
  return c
}

/** A node whose relay is `127.0.0.1:tcpPort` with STUN on `stunPort`. */
async function nodeWithRelay(root: string, tcpPort: number, stunPort: number): Promise<string> {
  const config = await initNodeDir(root)
  const text = await fs.readFile(config, 'utf8')
  await fs.writeFile(
    config,
    text
      .replace(RELAY_ADDR, `/ip4/127.0.0.1/tcp/${tcpPort}/p2p/${PEER}`)
      .replace('  reservation_interval: 2m', `  reservation_interval: 2m\n  stun_port: ${stunPort}`),
  )
  return config
}

/** A socket file left by a process that was killed: nobody listens on it any more. */
async function staleSocket(file: string): Promise<void> {
  const child = spawn(
    process.execPath,
    ['-e', `require('net').createServer().listen(${JSON.stringify(file)}, () => console.log('up'))`],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  )
  await once(child.stdout, 'data')
  child.kill('SIGKILL')
  await once(child, 'exit')
  assert.ok((await fs.lstat(file)).isSocket())
}

describe('runDoctor', () => {
  const log = createLogger('test.stun')
  let relayPort: number
  let relay: net.Server
  let primary: StunResponder
  let alternate: StunResponder

  before(async () => {
    relay = net.createServer((s) => s.destroy()).listen(0, '127.0.0.1')
    await once(relay, 'listening')
    relayPort = (relay.address() as net.AddressInfo).port
    primary = new StunResponder({ log }, { listenAddress: '127.0.0.1:0', other: () => alternate.endpoint })
    alternate = new StunResponder({ log }, { listenAddress: '127.0.0.1:0', other: () => primary.endpoint })
    await primary.start()
    await alternate.start()
  })

  after(async () => {
    relay.close()
    await primary.stop()
    await alternate.stop()
  })

  it('a relay reachable on TCP and STUN: relay, nat, direct and clock are ok', async (t) => {
    const config = await nodeWithRelay(await tempDir(t), relayPort, primary.address.port)
    const { version, checks } = await runDoctor({ configFile: config, fix: false, client: NO_DAEMON })
    assert.equal(version, 1)
    assert.deepEqual(
      checks.map((c) => c.id),
      [
        'config',
        'file-modes',
        'daemon',
        'socket',
        'relay',
        'reservation',
        'nat',
        'direct',
        'clock',
        'paths',
        'native-addon',
      ],
    )
    assert.match(
      byId(checks, 'relay').summary,
      new RegExp(`^relay 127\\.0\\.0\\.1:${relayPort} reachable over TCP in `),
    )
    const nat = byId(checks, 'nat')
    assert.equal(nat.details?.mapping, 'endpoint-independent')
    assert.equal(
      nat.summary.startsWith('no NAT (this machine has the address the relays see)'),
      true,
      nat.summary,
    )
    assert.equal(byId(checks, 'direct').status, 'ok')
    assert.equal(byId(checks, 'clock').status, 'ok')
    assert.equal(byId(checks, 'daemon').status, 'warn')
    assert.ok(
      checks.every((c) => c.status !== 'fail'),
      JSON.stringify(checks.filter((c) => c.status === 'fail')),
    )
  })

  it('--fix narrows the modes and removes a stale socket, and says what it did', async (t) => {
    const config = await nodeWithRelay(await tempDir(t), relayPort, primary.address.port)
    const dir = path.dirname(config)
    await fs.chmod(path.join(dir, 'identity.key'), 0o644)
    await fs.chmod(path.join(dir, 'authorized_keys'), 0o666)
    await staleSocket(path.join(dir, 'peerup.sock'))

    const before = await runDoctor({ configFile: config, fix: false, client: NO_DAEMON })
    assert.equal(byId(before.checks, 'file-modes').status, 'fail')
    assert.match(
      byId(before.checks, 'file-modes').summary,
      /identity\.key has mode 0644, readable by other users/,
    )
    // The loader refuses the key too, with the same chmod.
    assert.equal(byId(before.checks, 'config').status, 'fail')
    assert.match(byId(before.checks, 'socket').summary, /is stale: nobody listens on it/)

    const fixed = await runDoctor({ configFile: config, fix: true, client: NO_DAEMON })
    assert.equal(byId(fixed.checks, 'file-modes').status, 'ok')
    assert.equal(
      byId(fixed.checks, 'file-modes').fixed,
      `chmod 0600 ${path.join(dir, 'identity.key')}; chmod 0644 ${path.join(dir, 'authorized_keys')}`,
    )
    assert.equal(byId(fixed.checks, 'config').status, 'ok')
    assert.equal(byId(fixed.checks, 'socket').fixed, `removed ${path.join(dir, 'peerup.sock')}`)
    assert.equal((await fs.stat(path.join(dir, 'identity.key'))).mode & 0o777, 0o600)
    assert.equal((await fs.stat(path.join(dir, 'authorized_keys'))).mode & 0o777, 0o644)
    await assert.rejects(fs.lstat(path.join(dir, 'peerup.sock')), { code: 'ENOENT' })
  })

  it('a config that does not load: its problems with their line, and the checks that need it not run', async (t) => {
    const config = await initNodeDir(await tempDir(t))
    await fs.writeFile(config, `${await fs.readFile(config, 'utf8')}\nbogus_key: 1\n`)
    const { checks } = await runDoctor({ configFile: config, fix: false, client: NO_DAEMON })
    const c = byId(checks, 'config')
    assert.equal(c.status, 'fail')
    assert.match(
      c.summary,
      new RegExp(`^a problem in the config: ${config.replaceAll('.', '\\.')}:\\d+: bogus_key`),
    )
    for (const id of ['relay', 'reservation', 'nat', 'direct', 'clock']) {
      assert.deepEqual(
        [byId(checks, id).status, byId(checks, id).summary],
        ['warn', 'not checked: the config does not load'],
      )
    }
  })

  it('`peerup doctor` exits 1 when a check fails, naming the relay that does not answer', async (t) => {
    const root = await tempDir(t)
    // A port nobody listens on: bound, then closed.
    const closed = net.createServer().listen(0, '127.0.0.1')
    await once(closed, 'listening')
    const deadPort = (closed.address() as net.AddressInfo).port
    await new Promise<void>((resolve) => closed.close(() => resolve()))
    const config = await nodeWithRelay(root, deadPort, primary.address.port)
    const r = await runCli(['doctor', '--config', config], root)
    assert.equal(r.code, 1, r.stderr)
    assert.equal(r.stderr, '')
    assert.match(r.stdout, /^1 failed, \d+ warnings, \d+ ok\n/)
    assert.match(
      r.stdout,
      new RegExp(
        `\\nFAIL  relay +relay 127\\.0\\.0\\.1:${deadPort} unreachable: ECONNREFUSED\\n +fix: check that the relay runs`,
      ),
    )
    const json = await runCli(['doctor', '--json', '--config', config], root)
    assert.equal(json.code, 1)
    assert.equal(JSON.parse(json.stdout).checks.find((c: Check) => c.id === 'relay').status, 'fail')
  })
})
