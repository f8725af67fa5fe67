/**
 * `peerup demo`, the README's run command: a relay, a daemon, a proxy and a ping, each a real
 * peerup process, on loopback; everything it started is gone afterwards.
 */

import assert from 'node:assert/strict'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { test } from 'node:test'
import { runDemo } from '../../../src/demo/run.ts'

const ENTRY = path.resolve(import.meta.dirname, '../../../bin/peerup.js')

function demoDirs(): string[] {
  return fs.readdirSync(os.tmpdir()).filter((d) => d.startsWith('peerup-demo-'))
}

test('the demo reaches home through the relay and leaves nothing behind', { timeout: 120_000 }, async () => {
  const before = new Set(demoDirs())
  const lines: string[] = []
  await runDemo((line) => lines.push(line), { peerup: [process.execPath, ENTRY] })
  const text = lines.join('\n')
  assert.match(text, /listening on 127\.0\.0\.1:\d+, path RELAYED via/)
  assert.match(text, /home's service answered: "home got "hello from laptop""/)
  assert.match(text, /3 sent, 3 received, 0% loss/)
  assert.deepEqual(
    demoDirs().filter((d) => !before.has(d)),
    [],
    'the temporary directory was removed',
  )
})
