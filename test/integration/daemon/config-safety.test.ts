/**
 * Commit-confirmed config changes with a running daemon (docs/decisions/0000-inherited.md): apply + confirm keeps the new
 * config (and the daemon applies it live); apply without confirm restores the old one at the
 * deadline and the daemon goes on with it (running itself again where a key needs a restart); a
 * daemon started after the deadline reverts first; a crash in the middle of an apply never leaves a
 * half-written config.
 */

import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { LocalClient } from '../../../src/client/local.ts'
import { loadNodeConfig } from '../../../src/config/load.ts'
import { applyConfig, readPending, safetyFiles, settlePendingAtStart } from '../../../src/config/safety.ts'
import { runCli, tempDir } from '../../helpers/cli.ts'
import { startTestDaemon } from '../../helpers/daemon.ts'
import { createTestNode, startTestRelay, type TestNode, type TestRelay } from '../../helpers/mesh.ts'

const noValidation = async (): Promise<void> => {}

/** The config text with `network.listen_addresses` set to `[address]`. */
function withListen(text: string, address: string): string {
  const out = text.replace(/(listen_addresses:)[^\n]*(\n(\s+- [^\n]*\n)*)?/, `$1 ["${address}"]\n`)
  assert.notEqual(out, text, 'the config has network.listen_addresses')
  return out
}

/** Subscribes to the daemon's events; `found` resolves with the first `config` event with this action. */
async function configEvent(
  configFile: string,
  action: 'reloaded' | 'confirmed' | 'reverted',
  signal: AbortSignal,
) {
  const events = new LocalClient({ configFile }).lines('events', {}, signal)
  await events.next() // the hello: the subscription is in place once it came
  const found = (async () => {
    for await (const e of events) {
      if (e.type === 'config' && e.action === action) {
        return e
      }
    }
    throw new Error('the event stream ended')
  })()
  return { found }
}

describe('commit-confirmed config changes', { timeout: 120_000 }, () => {
  let relay: TestRelay
  let node: TestNode
  let root: string
  const cleanups: Array<() => Promise<unknown>> = []

  before(async () => {
    root = await tempDir({ after: (fn) => cleanups.push(fn) })
    relay = await startTestRelay(root)
    cleanups.unshift(() => relay.stop())
    node = await createTestNode(root, 'n', relay)
    await relay.authorize(node.peerId)
  })

  after(async () => {
    for (const fn of cleanups) {
      await fn().catch(() => {})
    }
  })

  it('a successful start archives the config as last-known-good', async () => {
    const d = await startTestDaemon(node.configFile)
    try {
      assert.equal(
        await fs.readFile(safetyFiles(node.configFile).lastGood, 'utf8'),
        await fs.readFile(node.configFile, 'utf8'),
      )
      assert.equal((await fs.stat(safetyFiles(node.configFile).lastGood)).mode & 0o777, 0o600)
    } finally {
      await d.stop()
    }
  })

  it('apply + confirm keeps the new config, which the daemon applies live', async (t) => {
    const d = await startTestDaemon(node.configFile)
    const stream = new AbortController()
    t.after(() => stream.abort())
    try {
      const before = await fs.readFile(node.configFile, 'utf8')
      const next = path.join(root, 'next.yaml')
      await fs.writeFile(
        next,
        before.replace('services: {}', 'services:\n  web: { local_address: 127.0.0.1:8080 }'),
      )
      const reloaded = await configEvent(node.configFile, 'reloaded', stream.signal)
      const r = await runCli(
        ['config', 'apply', next, '--confirm-timeout', '1m', '--config', node.configFile],
        root,
      )
      assert.equal(r.code, 0, r.stderr)
      const reload = await reloaded.found
      assert.ok(reload.type === 'config' && reload.applied.includes('services.web'), JSON.stringify(reload))
      const show = await runCli(['config', 'show', '--json', '--config', node.configFile], root)
      assert.ok(JSON.parse(show.stdout).pendingConfirmation.deadline)
      // The daemon offers the new service without a restart.
      const client = new LocalClient({ configFile: node.configFile })
      assert.ok((await client.call('services', {})).some((s) => s.name === 'web'))
      const confirmed = await configEvent(node.configFile, 'confirmed', stream.signal)
      const confirm = await runCli(['config', 'confirm', '--config', node.configFile], root)
      assert.equal(confirm.code, 0, confirm.stderr)
      assert.equal(await readPending(node.configFile), undefined)
      assert.match(await fs.readFile(node.configFile, 'utf8'), /web:/)
      // Confirmed: it becomes the last-known-good.
      await confirmed.found
      assert.match(await fs.readFile(safetyFiles(node.configFile).lastGood, 'utf8'), /web:/)
      assert.equal((await runCli(['config', 'confirm', '--config', node.configFile], root)).code, 1)
    } finally {
      await d.stop()
    }
  })

  it('apply without confirm: at the deadline the old config is back, and the daemon runs it', async () => {
    const d = await startTestDaemon(node.configFile)
    try {
      const stream = new AbortController()
      const reverted = await configEvent(node.configFile, 'reverted', stream.signal)
      const before = await fs.readFile(node.configFile, 'utf8')
      const next = path.join(root, 'bad-idea.yaml')
      await fs.writeFile(next, before.replace(/web: \{[^}]*\}/, 'web: { local_address: 127.0.0.1:9999 }'))
      const r = await runCli(
        ['config', 'apply', next, '--confirm-timeout', '1s', '--config', node.configFile],
        root,
      )
      assert.equal(r.code, 0, r.stderr)
      const event = await reverted.found
      stream.abort()
      assert.ok(event.type === 'config' && event.applied.includes('services.web'), JSON.stringify(event))
      assert.deepEqual(event.type === 'config' && event.restartNeeded, [])
      assert.equal(await fs.readFile(node.configFile, 'utf8'), before)
      assert.equal(await readPending(node.configFile), undefined)
      // Still running, on the restored config.
      const services = await new LocalClient({ configFile: node.configFile }).call('services', {})
      assert.equal(services.find((s) => s.name === 'web')?.localAddress, '127.0.0.1:8080')
    } finally {
      await d.stop()
    }
    assert.deepEqual(await d.done, { restart: undefined })
  })

  it('a restored config that needs a restart: the daemon stops to run itself again', async () => {
    const before = await fs.readFile(node.configFile, 'utf8')
    // The daemon starts on the applied config (its deadline not passed), which listens elsewhere.
    await applyConfig(node.configFile, withListen(before, '/ip4/127.0.0.1/tcp/0'), {
      validate: noValidation,
      confirmTimeoutMs: 3000,
    })
    const d = await startTestDaemon(node.configFile)
    const exit = await d.done
    assert.deepEqual(exit.restart, ['network'])
    assert.equal(await fs.readFile(node.configFile, 'utf8'), before)
    assert.equal(await readPending(node.configFile), undefined)
  })

  it('`peerup daemon` runs itself again in place: same process, the restored config', async () => {
    const before = await fs.readFile(node.configFile, 'utf8')
    // The daemon must start on the applied config before its deadline: from the sources, on a
    // machine busy with other tests, a start took more than 4 s, the daemon reverted at start
    // instead (the next test's case), and this one waited for a second start that never came.
    await applyConfig(node.configFile, withListen(before, '/ip4/127.0.0.1/tcp/0'), {
      validate: noValidation,
      confirmTimeoutMs: 12_000,
    })
    const entry = path.resolve(import.meta.dirname, '../../../bin/peerup.js')
    const child = spawn(
      process.execPath,
      [entry, 'daemon', '--config', node.configFile, '--log-level', 'info'],
      {
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    )
    cleanups.unshift(async () => {
      child.kill('SIGKILL')
    })
    const exited = once(child, 'exit')
    let err = ''
    const started = (n: number): Promise<void> =>
      new Promise((resolve, reject) => {
        const check = (): void => {
          if (err.split('"msg":"daemon started"').length - 1 >= n) {
            child.stderr?.off('data', check)
            resolve()
          } else if (err.includes('not confirmed before its deadline')) {
            reject(new Error(`the daemon started after the apply's deadline and reverted at start: ${err}`))
          }
        }
        child.stderr?.on('data', check)
        void exited.then(([code]) => reject(new Error(`daemon exited ${code}: ${err}`)))
        check()
      })
    child.stderr?.setEncoding('utf8').on('data', (d: string) => {
      err += d
    })
    await started(1)
    // Started twice, by one process: the second time on the restored config.
    await started(2)
    assert.match(err, /runs itself again/)
    const status = await new LocalClient({ configFile: node.configFile }).call('status', {})
    assert.equal(status.pid, child.pid)
    assert.equal(await fs.readFile(node.configFile, 'utf8'), before)
    child.kill('SIGTERM')
    assert.deepEqual(await exited, [0, null])
  })

  it('a daemon started after the deadline passed reverts first', async () => {
    const before = await fs.readFile(node.configFile, 'utf8')
    await applyConfig(node.configFile, before.replace('127.0.0.1:8080', '127.0.0.1:7070'), {
      validate: noValidation,
      confirmTimeoutMs: 1000,
      now: new Date(Date.now() - 60_000),
    })
    assert.match(await fs.readFile(node.configFile, 'utf8'), /7070/)
    const d = await startTestDaemon(node.configFile)
    try {
      assert.equal(await fs.readFile(node.configFile, 'utf8'), before)
      const services = await new LocalClient({ configFile: node.configFile }).call('services', {})
      assert.equal(services.find((s) => s.name === 'web')?.localAddress, '127.0.0.1:8080')
    } finally {
      await d.stop()
    }
  })

  it('a bad new config is refused and nothing changes', async () => {
    const before = await fs.readFile(node.configFile, 'utf8')
    const bad = path.join(root, 'bad.yaml')
    await fs.writeFile(bad, before.replace('version: 1', 'version: 1\nfrobnicate: true'))
    const r = await runCli(['config', 'apply', bad, '--config', node.configFile], root)
    assert.equal(r.code, 1)
    assert.match(r.stderr, /frobnicate/)
    assert.equal(await fs.readFile(node.configFile, 'utf8'), before)
    assert.equal(await readPending(node.configFile), undefined)
  })

  it('rollback restores the last-known-good config', async () => {
    const good = await fs.readFile(safetyFiles(node.configFile).lastGood, 'utf8')
    await fs.writeFile(node.configFile, good.replace('127.0.0.1:8080', '127.0.0.1:6060'))
    const r = await runCli(['config', 'rollback', '--config', node.configFile], root)
    assert.equal(r.code, 0, r.stderr)
    assert.equal(await fs.readFile(node.configFile, 'utf8'), good)
  })

  it('a crash at any point of an apply leaves a whole config, old or new, and a consistent state', async () => {
    const a = await fs.readFile(node.configFile, 'utf8')
    // Large enough that a write takes a while: comments padding the file to ~1 MB.
    const b = `${a}${'# padding to make the write take a while\n'.repeat(25_000)}`
    const script = `
      import { applyConfig, confirmConfig } from ${JSON.stringify(path.resolve('src/config/safety.ts'))}
      const [file, a, b] = [process.argv[2], process.argv[3], process.argv[4]]
      const fs = await import('node:fs/promises')
      const texts = [await fs.readFile(a, 'utf8'), await fs.readFile(b, 'utf8')]
      for (let i = 0; ; i++) {
        await applyConfig(file, texts[i % 2], { validate: async () => {}, confirmTimeoutMs: 600000 })
        await confirmConfig(file)
      }
    `
    const aFile = path.join(root, 'a.yaml')
    const bFile = path.join(root, 'b.yaml')
    await fs.writeFile(aFile, a)
    await fs.writeFile(bFile, b)
    for (let round = 0; round < 12; round++) {
      const child = spawn(
        process.execPath,
        ['--input-type=module', '-e', script, node.configFile, aFile, bFile],
        {
          stdio: ['ignore', 'ignore', 'pipe'],
        },
      )
      const exited = once(child, 'exit')
      // Let it run a varying while, then kill it without warning.
      await new Promise((resolve) => setTimeout(resolve, 40 + round * 23))
      child.kill('SIGKILL')
      await exited
      const text = await fs.readFile(node.configFile, 'utf8')
      assert.ok(text === a || text === b, `round ${round}: config.yaml is neither the old nor the new one`)
      await loadNodeConfig(node.configFile)
      // A start settles whatever was pending into a state that is again consistent.
      const decision = await settlePendingAtStart(node.configFile)
      assert.ok(['none', 'cleared', 'armed'].includes(decision.action), decision.action)
      if (decision.action === 'armed') {
        assert.equal(await fs.readFile(node.configFile, 'utf8'), text)
        await fs.rm(safetyFiles(node.configFile).pending)
      }
      // Lock files of the killed writer are taken over, so the next round can write.
      await fs.rm(path.join(path.dirname(node.configFile), `.${path.basename(node.configFile)}.lock`), {
        force: true,
      })
    }
    await fs.writeFile(node.configFile, a)
  })
})
