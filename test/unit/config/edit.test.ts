import assert from 'node:assert/strict'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import { describe, it } from 'node:test'
import { ConfigError } from '../../../src/config/errors.ts'
import {
  addRelay,
  addService,
  removeRelay,
  removeService,
  setServiceEnabled,
} from '../../../src/config/ops.ts'
import { ConflictError, NotFoundError, UsageError } from '../../../src/errors.ts'
import { tempDir } from '../../helpers/cli.ts'

const FIXTURE = new URL('../../fixtures/commented-config.yaml', import.meta.url)
const RELAY_B = '/ip6/2001:db8::1/tcp/7777/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN'

async function fixture(t: Parameters<typeof tempDir>[0]): Promise<{ file: string; original: string }> {
  const dir = await tempDir(t)
  const file = path.join(dir, 'config.yaml')
  const original = await fs.readFile(FIXTURE, 'utf8')
  await fs.writeFile(file, original, { mode: 0o600 })
  return { file, original }
}

function commentLines(text: string): string[] {
  return text.split('\n').filter((l) => l.includes('#'))
}

describe('editing a hand-written config', () => {
  it('keeps every comment and the key order when adding a service', async (t) => {
    const { file, original } = await fixture(t)
    await addService(file, 'ssh', 'localhost:22')
    const after = await fs.readFile(file, 'utf8')
    assert.deepEqual(commentLines(after), commentLines(original))
    const keys = (text: string): string[] => text.split('\n').filter((l) => /^[a-z]/.test(l))
    assert.deepEqual(keys(after), keys(original))
    assert.match(after, / {2}ssh:\n {4}enabled: true\n {4}local_address: localhost:22\n/)
  })

  it('add then remove gives back the file byte for byte', async (t) => {
    const { file, original } = await fixture(t)
    await addService(file, 'ssh', '22')
    await removeService(file, 'ssh')
    assert.equal(await fs.readFile(file, 'utf8'), original)
    await addRelay(file, RELAY_B)
    await removeRelay(file, RELAY_B)
    assert.equal(await fs.readFile(file, 'utf8'), original)
  })

  it('changes only the touched line when disabling a service', async (t) => {
    const { file, original } = await fixture(t)
    await setServiceEnabled(file, 'admin', false)
    const after = await fs.readFile(file, 'utf8')
    assert.deepEqual(commentLines(after), commentLines(original))
    assert.match(
      after,
      /admin:\n {4}local_address: localhost:8080\n {4}allowed_peers: \[laptop\]\n {4}enabled: false\n/,
    )
  })

  it('refuses conflicting and unknown edits without touching the file', async (t) => {
    const { file, original } = await fixture(t)
    await assert.rejects(addService(file, 'admin', 'localhost:1'), ConflictError)
    await assert.rejects(addService(file, 'Bad Name', 'localhost:1'), UsageError)
    await assert.rejects(addService(file, 'db', 'localhost:99999'), UsageError)
    await assert.rejects(addService(file, 'db', 'localhost:5432', { allowedPeers: ['stranger'] }), UsageError)
    await assert.rejects(removeService(file, 'nope'), NotFoundError)
    await assert.rejects(addRelay(file, '/ip4/198.18.0.1/tcp/7777'), UsageError)
    await assert.rejects(
      removeRelay(file, '12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN'),
      ConflictError,
    )
    assert.equal(await fs.readFile(file, 'utf8'), original)
    const leftovers = (await fs.readdir(path.dirname(file))).filter((f) => f !== 'config.yaml')
    assert.deepEqual(leftovers, [])
  })

  it('removes the last relay only with force', async (t) => {
    const { file } = await fixture(t)
    const removed = await removeRelay(file, '12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN', true)
    assert.equal(removed.length, 1)
    assert.match(await fs.readFile(file, 'utf8'), /# the VPS in Frankfurt|addresses: \[\]/)
  })

  it('refuses to edit a config that is already invalid', async (t) => {
    const { file } = await fixture(t)
    await fs.writeFile(file, 'version: 1\nbogus: true\n')
    await assert.rejects(addService(file, 'ssh', '22'), ConfigError)
    assert.equal(await fs.readFile(file, 'utf8'), 'version: 1\nbogus: true\n')
  })

  it('keeps the file mode', async (t) => {
    const { file } = await fixture(t)
    await fs.chmod(file, 0o640)
    await addService(file, 'ssh', '22')
    assert.equal((await fs.stat(file)).mode & 0o777, 0o640)
  })

  it('serialises concurrent edits instead of losing one', async (t) => {
    const { file } = await fixture(t)
    await Promise.all(['a', 'b', 'c', 'd', 'e'].map((n, i) => addService(file, n, String(1000 + i))))
    const text = await fs.readFile(file, 'utf8')
    for (const n of ['a', 'b', 'c', 'd', 'e']) {
      assert.match(text, new RegExp(`\\n {2}${n}:\\n`))
    }
  })
})
