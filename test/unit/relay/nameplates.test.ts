/**
 * The nameplates of short codes on a relay (src/relay/invites.ts): handed out lowest first to a
 * member with an open invite, one per member, forgotten when the invite closes or is consumed,
 * when the member releases it, or when it expires.
 */

import * as assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { OpenInvites } from '../../../src/relay/invites.ts'

describe('nameplates on the relay', () => {
  function relay() {
    let now = 1_000_000
    const invites = new OpenInvites(() => now)
    return { invites, advance: (ms: number) => (now += ms) }
  }

  it('only a member with an open invite gets one, lowest free first, one each', () => {
    const { invites } = relay()
    assert.equal(invites.claimNameplate('m1', 60_000, ''), undefined)
    invites.open('m1', 60_000)
    invites.open('m2', 60_000)
    assert.equal(invites.claimNameplate('m1', 60_000, ''), 1)
    assert.equal(invites.claimNameplate('m2', 60_000, 'lab'), 2)
    assert.deepEqual(invites.lookupNameplate(2), { member: 'm2', network: 'lab' })
    // A second claim replaces the first.
    assert.equal(invites.claimNameplate('m1', 60_000, ''), 1)
    assert.equal(invites.lookupNameplate(3), undefined)
  })

  it('released, closed, consumed or expired: forgotten, and free for the next', () => {
    const { invites, advance } = relay()
    for (const m of ['m1', 'm2', 'm3', 'm4']) invites.open(m, 600_000)
    assert.equal(invites.claimNameplate('m1', 60_000, ''), 1)
    assert.equal(invites.claimNameplate('m2', 600_000, ''), 2)
    assert.equal(invites.claimNameplate('m3', 600_000, ''), 3)
    invites.releaseNameplate('m2')
    assert.equal(invites.lookupNameplate(2), undefined)
    invites.close('m3')
    assert.equal(invites.lookupNameplate(3), undefined)
    assert.equal(invites.admit('m4', 'joiner'), true)
    assert.equal(invites.claimNameplate('m4', 600_000, ''), 2)
    assert.equal(invites.consume('m4', 'joiner'), true)
    assert.equal(invites.lookupNameplate(2), undefined)
    advance(60_000)
    assert.equal(invites.lookupNameplate(1), undefined, 'expired with its TTL')
    invites.open('m5', 600_000)
    assert.equal(invites.claimNameplate('m5', 600_000, ''), 1)
  })
})
