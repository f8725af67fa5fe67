/**
 * A config directory of the release before several networks (docs/decisions/0017-several-networks.md)
 * starts unchanged. test/fixtures/single-network/ is what `peerup init --non-interactive --relay
 * <RELAY_ADDR>` then `peerup service add ssh localhost:22` wrote before the feature (the keys in it
 * are test-only). Copied to a temporary directory (0700, the key 0600: git keeps no modes), it is
 * started by the daemon: the same peer id and services, one network named default, and every
 * file byte-identical afterwards — nothing rewritten, no networks/ made.
 */

import assert from 'node:assert/strict'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import { describe, it } from 'node:test'
import { loadIdentity, peerIdOf } from '../../../src/auth/identity.ts'
import { LocalClient } from '../../../src/client/local.ts'
import { configureLogging } from '../../../src/log/index.ts'
import { runCli, tempDir } from '../../helpers/cli.ts'
import { startTestDaemon } from '../../helpers/daemon.ts'

// Quiet unless a test asks: failures are asserted, not read from logs.
configureLogging({ level: (process.env.PEERUP_TEST_LOG as 'debug' | undefined) ?? 'error' })

const FIXTURE = path.resolve(import.meta.dirname, '../../fixtures/single-network')

/** The files of a directory and their bytes. */
async function snapshot(dir: string): Promise<Map<string, Buffer>> {
  const files = new Map<string, Buffer>()
  for (const name of (await fs.readdir(dir)).sort()) {
    files.set(name, await fs.readFile(path.join(dir, name)))
  }
  return files
}

describe('a single-network config of the previous release', { timeout: 120_000 }, () => {
  it('starts unchanged: same peer id and services, one network, its files not rewritten', async (t) => {
    const root = await tempDir(t)
    const dir = path.join(root, 'peerup')
    await fs.cp(FIXTURE, dir, { recursive: true })
    await fs.chmod(dir, 0o700)
    await fs.chmod(path.join(dir, 'identity.key'), 0o600)
    const before = await snapshot(dir)
    assert.deepEqual([...before.keys()], ['authorized_keys', 'config.yaml', 'identity.key'])
    const peerId = peerIdOf(await loadIdentity(path.join(dir, 'identity.key')))
    const configFile = path.join(dir, 'config.yaml')

    const daemon = await startTestDaemon(configFile)
    try {
      assert.equal(daemon.ready.peerId, peerId)
      assert.deepEqual(daemon.ready.services, ['ssh'])
      assert.deepEqual(daemon.ready.networks, [{ name: 'default', peerId }])
      const client = new LocalClient({ configFile })
      const status = await client.call('status', {})
      assert.equal(status.peerId, peerId)
      assert.equal(status.network, '')
      assert.equal(status.networkName, 'default')
      assert.deepEqual(
        (await client.call('networkList', {})).map((n) => [n.name, n.main, n.running, n.dir]),
        [['default', true, true, dir]],
      )
      // The CLI of this release talks to it as before, no --network needed.
      const r = await runCli(['--config', configFile, 'daemon', 'services', '--json'], root)
      assert.equal(r.code, 0, r.stderr)
      assert.deepEqual(
        (JSON.parse(r.stdout) as Array<{ name: string }>).map((s) => s.name),
        ['ssh'],
      )
    } finally {
      await daemon.stop()
    }
    const afterStop = await snapshot(dir)
    for (const [name, bytes] of before) {
      assert.deepEqual(afterStop.get(name), bytes, `${name} was rewritten`)
    }
    // What the daemon adds is what it added before: the last-good copy of the config it ran.
    assert.deepEqual(
      [...afterStop.keys()].filter((n) => !before.has(n)),
      ['.config.last-good.yaml'],
    )
    assert.equal((await fs.stat(path.join(dir, 'identity.key'))).mode & 0o777, 0o600)
  })
})
