/** How `daemon status` shows a relay: the reservation, or why there is none and when the next try is. */

import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { type RelayState, relayText, until } from '../../../src/api/index.ts'

const now = Date.parse('2026-01-01T12:00:00Z')
const at = (offsetMs: number): string => new Date(now + offsetMs).toISOString()

function relay(extra: Partial<RelayState>): RelayState {
  return {
    peerId: '12D3KooWRelay',
    addrs: [],
    connected: true,
    reserved: false,
    since: at(-4 * 60_000),
    ...extra,
  }
}

describe('relayText', () => {
  it('shows a reservation held, and since when', () => {
    assert.equal(relayText(relay({ reserved: true, failures: 0 }), now), 'reservation held (since 4m)')
  })

  it("shows the relay's refusal and when the next try is", () => {
    assert.equal(
      relayText(
        relay({
          reason: 'refused by the relay: not in relay_authorized_keys',
          failures: 6,
          nextAttemptAt: at(12_000),
        }),
        now,
      ),
      'connected, no reservation (since 4m): refused by the relay: not in relay_authorized_keys; next try in 12s',
    )
  })

  it('shows an unreachable relay with the dial error, and a try that is due as "now"', () => {
    assert.equal(
      relayText(relay({ connected: false, lastError: 'connect ECONNREFUSED', nextAttemptAt: at(-300) }), now),
      'unreachable (since 4m): connect ECONNREFUSED; next try now',
    )
  })

  it('reads like before for a daemon that sends neither reason nor next try', () => {
    assert.equal(relayText(relay({}), now), 'connected, no reservation (since 4m)')
  })
})

describe('until', () => {
  it('counts down in the units of `ago`', () => {
    assert.equal(until(at(12_400), now), 'in 12s')
    assert.equal(until(at(125_000), now), 'in 2m')
    assert.equal(until(at(0), now), 'now')
  })
})
