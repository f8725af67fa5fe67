/** How `daemon status` shows a relay (the reservation, or why there is none and when the next try is) and the sessions. */

import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import {
  type ApiPath,
  type PingResponse,
  pingSummaryText,
  type RelayState,
  relayedReason,
  relayText,
  type StatusResponse,
  statusText,
  until,
} from '../../../src/api/index.ts'

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

describe('relayedReason', () => {
  const now = Date.parse('2026-01-01T00:00:00Z')
  const cases: Array<[Parameters<typeof relayedReason>[0], string]> = [
    [undefined, 'no direct attempt from this side (the side that dialled the relayed connection tries)'],
    [{ state: 'upgrading', attempts: 1, failures: 0 }, 'a direct attempt is running'],
    [
      {
        state: 'failed',
        attempts: 2,
        failures: 2,
        lastError: 'webrtc: ICE failed',
        nextRetryAt: now + 20_000,
      },
      'the direct attempt failed: webrtc: ICE failed; next try in 20s',
    ],
    [
      { state: 'unavailable', attempts: 0, failures: 0, lastError: 'the peer offers no direct transport' },
      'no direct path to try: the peer offers no direct transport',
    ],
    [
      { state: 'direct', attempts: 1, failures: 0, nextRetryAt: now + 1_000 },
      'the direct connection closed; trying again (next try in 1s)',
    ],
  ]
  for (const [upgrade, want] of cases) {
    it(`${upgrade?.state ?? 'never tried'}: ${want}`, () => {
      assert.equal(relayedReason(upgrade, now), want)
    })
  }
})

describe('pingSummaryText', () => {
  const relayed: ApiPath = {
    type: 'RELAYED',
    relay: '12D3KooWRelay',
    transport: 'tcp',
    remoteAddr: '/ip4/198.18.0.1/tcp/7777',
    limited: false,
  }
  const report = (finalPath: ApiPath): PingResponse => ({
    peer: 'b',
    peerId: '12D3KooWPeer',
    via: 'relay',
    connectMs: 12,
    path: relayed,
    replies: [],
    sent: 2,
    received: 2,
    minMs: 1,
    avgMs: 1.5,
    maxMs: 2,
    pathChanges: [],
    finalPath,
    upgrade: { state: 'failed', attempts: 1, failures: 1, lastError: 'webrtc: ICE failed' },
  })
  it('a RELAYED result says why, with the relay by name', () => {
    assert.equal(
      pingSummaryText(report(relayed), { relay: '12D3KooWRelay' }),
      '--- b: 2 sent, 2 received, 0% loss, rtt min/avg/max 1.0/1.5/2.0 ms\nRELAYED via relay because: the direct attempt failed: webrtc: ICE failed',
    )
    assert.match(
      pingSummaryText(report(relayed), {}, 'symmetric NAT on this side; x'),
      /because: symmetric NAT on this side; x$/,
    )
  })
  it('a DIRECT result is one line', () => {
    const direct: ApiPath = {
      type: 'DIRECT',
      transport: 'webrtc',
      remoteAddr: '/ip4/198.18.0.3/udp/1/webrtc',
      limited: false,
    }
    assert.equal(
      pingSummaryText(report(direct)),
      '--- b: 2 sent, 2 received, 0% loss, rtt min/avg/max 1.0/1.5/2.0 ms',
    )
  })
})
