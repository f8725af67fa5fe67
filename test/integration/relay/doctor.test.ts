/**
 * `peerup doctor`'s view of a real relay started in this process (src/relay/server.ts) with its
 * STUN responder on a second port too: the relay's TCP port answers, the node's one socket gets the
 * same mapping from both STUN ports (no NAT on loopback), found through OTHER-ADDRESS, and the
 * relay's clock comes back with them.
 */

import * as assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { Check } from '../../../src/doctor/checks.ts'
import { runDoctor } from '../../../src/doctor/run.ts'
import { tempDir } from '../../helpers/cli.ts'
import { createTestNode, startTestRelay } from '../../helpers/mesh.ts'

const NO_DAEMON = {
  call: () => {
    throw new Error('no daemon runs in this test')
  },
}

describe('doctor against a relay with two STUN ports', () => {
  it('relay reachable, endpoint-independent mapping through OTHER-ADDRESS, clock told', async (t) => {
    const root = await tempDir(t)
    const relay = await startTestRelay(root, { stun: true, stunAlternate: true })
    t.after(() => relay.stop())
    const node = await createTestNode(root, 'a', relay)
    const { checks } = await runDoctor({ configFile: node.configFile, fix: false, client: NO_DAEMON })
    const byId = (id: string): Check => checks.find((c) => c.id === id) as Check
    assert.equal(byId('relay').status, 'ok', byId('relay').summary)
    assert.equal(byId('relay').details?.relay, relay.address)
    const nat = byId('nat')
    assert.equal(nat.details?.mapping, 'endpoint-independent', nat.summary)
    const probes = nat.details?.probes as Array<{ endpoint: string; alternate: boolean }>
    assert.deepEqual(
      probes.map((p) => p.alternate),
      [false, true],
    )
    // The second port is the relay's own second responder, not a guess.
    assert.equal(probes[0]?.endpoint, `127.0.0.1:${relay.handle.stun?.address.port}`)
    assert.notEqual(probes[1]?.endpoint, probes[0]?.endpoint)
    assert.equal(byId('clock').status, 'ok', byId('clock').summary)
    assert.equal(byId('direct').status, 'ok')
  })
})
