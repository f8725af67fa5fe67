/**
 * What the daemon's modules load before it runs (docs/decisions/0018-daemon-idle-memory.md):
 * prom-client (with @opentelemetry/api, and node:https and node:tls through its pushgateway) only
 * when metrics are on, so importing src/daemon/run.ts must not load it. In a child process, so that
 * nothing the test runner loaded counts.
 */

import * as assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import * as path from 'node:path'
import { describe, it } from 'node:test'
import { pathToFileURL } from 'node:url'
import { promisify } from 'node:util'

const RUN = pathToFileURL(path.resolve(import.meta.dirname, '../../../src/daemon/run.ts')).href

const CHILD = `
import { createRequire } from 'node:module'
await import(${JSON.stringify(RUN)})
const loaded = Object.keys(createRequire(import.meta.url).cache)
console.log(JSON.stringify({
  promClient: loaded.some((file) => file.includes('/prom-client/')),
  https: process.moduleLoadList.includes('NativeModule https'),
}))
`

describe('the daemon modules', () => {
  it('do not load prom-client until metrics are on', { timeout: 60_000 }, async () => {
    const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', CHILD], {
      timeout: 50_000,
      killSignal: 'SIGKILL',
    })
    const out = JSON.parse(stdout.trim().split('\n').at(-1) ?? '{}')
    assert.deepEqual(out, { promClient: false, https: false })
  })
})
