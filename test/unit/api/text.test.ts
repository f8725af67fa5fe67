/** How `daemon status` shows a relay (the reservation, or why there is none and when the next try is) and the sessions. */

import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { type RelayState, relayText, type StatusResponse, statusText, until } from '../../../src/api/index.ts'

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

describe('statusText', () => {
  const base: StatusResponse = {
    version: '0.1.0',
    apiVersion: 1,
    pid: 1,
    peerId: '12D3KooWA',
    network: '',
    startedAt: new Date().toISOString(),
    uptimeSeconds: 0,
    configFile: '/c.yaml',
    listenAddresses: [],
    relays: [],
    services: [],
    connectedPeers: 0,
    proxies: 0,
  }

  it("shows each side's sessions, the ones waiting for their link, and what they did", () => {
    const text = statusText({
      ...base,
      sessions: {
        opened: { open: 2, waiting: 1, resumed: 3, moved: 1, expired: 0 },
        accepted: { open: 0, waiting: 0, resumed: 0, moved: 0, expired: 2 },
      },
    })
    assert.match(
      text,
      /sessions {2}opened {3}2 open \(1 waiting for its link\); since start 3 resumed, 1 moved to direct, 0 expired/,
    )
    assert.match(text, /accepted 0 open; since start 0 resumed, 0 moved to direct, 2 expired/)
  })

  it('says nothing of sessions for an older daemon that sends none', () => {
    assert.doesNotMatch(statusText(base), /sessions/)
  })
})
