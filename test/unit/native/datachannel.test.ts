import * as assert from 'node:assert/strict'
import * as path from 'node:path'
import { describe, it } from 'node:test'
import { DATACHANNEL_ADDON, datachannelSelftest } from '../../../src/native/datachannel.ts'

describe('datachannelSelftest', () => {
  it('rejects with the reason of an already aborted signal', async () => {
    const reason = new Error('stop')
    await assert.rejects(datachannelSelftest({ signal: AbortSignal.abort(reason) }), (err) => err === reason)
  })

  it('produces a local offer with the addon from node_modules', { timeout: 15_000 }, async () => {
    const result = await datachannelSelftest({ signal: AbortSignal.timeout(10_000) })
    assert.equal(result.ok, true)
    assert.equal(result.addon, 'node_modules')
    assert.equal(result.offerType, 'offer')
    assert.ok(result.sdpBytes > 0)
    assert.ok(result.elapsedMs < 10_000)
    assert.equal(path.basename(result.addonPath ?? ''), DATACHANNEL_ADDON)
    assert.match(result.addonPath ?? '', /node_modules/)
  })
})
