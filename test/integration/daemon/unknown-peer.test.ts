/**
 * A name nobody knows, given to a command that reaches peers: each says what `peerup resolve`
 * says (unknown peer, and the names it knows), in one line with exit 1 — through a running daemon
 * and with a node of its own. `peerup ssh` says it before ssh runs, with nothing of ssh's after it.
 */

import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { configureLogging } from '../../../src/log/index.ts'
import { initNodeDir, runCli, tempDir } from '../../helpers/cli.ts'
import { startTestDaemon, type TestDaemon } from '../../helpers/daemon.ts'

// The daemon's node cannot reach the test relay address: failures are asserted, not read from logs.
configureLogging({ level: 'error' })

const COMMANDS = [
  ['ping', 'nosuch', '-c', '1'],
  ['traceroute', 'nosuch'],
  ['proxy', 'nosuch', 'ssh', '0'],
  ['proxy', '--stdio', 'nosuch', 'ssh'],
]

describe('an unknown peer name', { timeout: 60_000 }, () => {
  let root: string
  let config: string
  let expected: string
  const cleanups: Array<() => Promise<unknown>> = []

  before(async () => {
    root = await tempDir({ after: (fn) => cleanups.push(fn) })
    config = await initNodeDir(root)
    const known = peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()
    const named = await runCli(['auth', 'add', known, '--name', 'home', '--config', config], root)
    assert.equal(named.code, 0, named.stderr)
    const resolved = await runCli(['resolve', 'nosuch', '--config', config], root)
    assert.equal(resolved.code, 1)
    expected = resolved.stderr
    assert.match(expected, /^peerup: unknown peer "nosuch": .* — known names: home\n$/)
  })

  after(async () => {
    for (const fn of cleanups.reverse()) {
      await fn().catch(() => {})
    }
  })

  it('is reported as `resolve` reports it by a node of the command’s own', async () => {
    for (const args of COMMANDS) {
      const r = await runCli([...args, '--no-daemon', '--config', config], root)
      assert.deepEqual([r.code, r.stderr, r.stdout], [1, expected, ''], args.join(' '))
    }
  })

  it('is reported by `peerup ssh` before ssh runs', async () => {
    for (const target of ['nosuch', 'me@nosuch']) {
      const r = await runCli(['ssh', target, '--config', config, '-p', '22', 'uname'], root)
      assert.deepEqual([r.code, r.stderr, r.stdout], [1, expected, ''], target)
    }
  })

  it('is reported as `resolve` reports it through a running daemon', async () => {
    const daemon: TestDaemon = await startTestDaemon(config)
    cleanups.push(() => daemon.stop())
    for (const args of COMMANDS) {
      const r = await runCli([...args, '--config', config], root)
      assert.deepEqual([r.code, r.stderr, r.stdout], [1, expected, ''], args.join(' '))
    }
    const ssh = await runCli(['ssh', 'nosuch', '--config', config], root)
    assert.deepEqual([ssh.code, ssh.stderr], [1, expected])
  })
})
