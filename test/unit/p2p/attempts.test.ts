/**
 * The direct-path attempt scheduler: which methods are tried and in what order
 * (src/p2p/upgrade.ts attemptPlan), how long it waits after failures (upgradeRetryMs), the reason
 * a timeout records, and when each side of a punch round starts (src/p2p/punch.ts).
 */

import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { PUNCH_LEAD_MS, PUNCH_ROUNDS, roundStartMs } from '../../../src/p2p/punch.ts'
import {
  attemptPlan,
  noConnectionAfter,
  UPGRADE_RETRY_BASE_MS,
  UPGRADE_RETRY_MAX_MS,
  upgradeRetryMs,
} from '../../../src/p2p/upgrade.ts'

describe('attemptPlan', () => {
  const none = { lanTcp: false, publicTcp: false, punch: false, webrtc: false, webrtcHere: true }

  it('tries LAN TCP, public TCP, then the punch, then WebRTC, each only where it can work', () => {
    assert.deepEqual(
      attemptPlan({ lanTcp: true, publicTcp: true, punch: true, webrtc: true, webrtcHere: true }),
      {
        methods: ['lan', 'public', 'punch', 'webrtc'],
      },
    )
    assert.deepEqual(attemptPlan({ ...none, publicTcp: true, webrtc: true }), {
      methods: ['public', 'webrtc'],
    })
    assert.deepEqual(attemptPlan({ ...none, punch: true, webrtc: true }), { methods: ['punch', 'webrtc'] })
    assert.deepEqual(attemptPlan({ ...none, webrtc: true }), { methods: ['webrtc'] })
    assert.deepEqual(attemptPlan({ ...none, lanTcp: true }), { methods: ['lan'] })
  })

  it('says why there is nothing to try, naming what is missing here or there', () => {
    const there = attemptPlan(none)
    assert.ok('unavailable' in there)
    assert.match(
      there.unavailable,
      /the peer listens for neither WebRTC .* or a public address, and takes no TCP punch/,
    )
    const here = attemptPlan({ ...none, webrtcHere: false })
    assert.ok('unavailable' in here)
    assert.match(here.unavailable, /^WebRTC is off here \(\/webrtc is not in network\.listen_addresses\)/)
  })
})

describe('upgradeRetryMs', () => {
  it('waits 5 s after the first failure and doubles up to 10 min', () => {
    const waits = [1, 2, 3, 4, 5, 6, 7, 8, 9, 20].map((n) =>
      upgradeRetryMs(n, UPGRADE_RETRY_BASE_MS, UPGRADE_RETRY_MAX_MS),
    )
    assert.deepEqual(
      waits,
      [5_000, 10_000, 20_000, 40_000, 80_000, 160_000, 320_000, 600_000, 600_000, 600_000],
    )
  })

  it('never waits less than the base (a count of 0 is treated as the first failure)', () => {
    assert.equal(upgradeRetryMs(0, 1_000, 60_000), 1_000)
  })

  it('the third try comes after UDP conntrack entries (30 s) of the first have expired', () => {
    const sinceFirst =
      upgradeRetryMs(1, UPGRADE_RETRY_BASE_MS, UPGRADE_RETRY_MAX_MS) +
      upgradeRetryMs(2, UPGRADE_RETRY_BASE_MS, UPGRADE_RETRY_MAX_MS) +
      upgradeRetryMs(3, UPGRADE_RETRY_BASE_MS, UPGRADE_RETRY_MAX_MS)
    assert.ok(sinceFirst > 30_000, `${sinceFirst} ms`)
  })
})

describe('noConnectionAfter', () => {
  it('says how long it waited, and for WebRTC what usually stops ICE', () => {
    assert.equal(noConnectionAfter('tcp', 3_012), 'no connection after 3.0 s')
    assert.equal(
      noConnectionAfter('webrtc', 6_049),
      'no connection after 6.0 s (ICE found no working UDP path: symmetric NAT or UDP blocked?)',
    )
    assert.equal(
      noConnectionAfter('webrtc', 15_000, "the peer's SDP answer"),
      "no connection 15.0 s after the peer's SDP answer (ICE found no working UDP path: symmetric NAT or UDP blocked?)",
    )
  })
})

describe('punch rounds', () => {
  it('are together, then the initiator first, then the responder first', () => {
    assert.deepEqual(PUNCH_ROUNDS, ['together', 'initiator', 'responder'])
  })

  // GO leaves the initiator at 0 and reaches the responder at rtt/2: the start times below, in the
  // initiator's clock, are what each side's wait gives.
  const rtt = 80
  const starts = (lead: (typeof PUNCH_ROUNDS)[number]) => ({
    initiator: roundStartMs(lead, 'initiator', rtt, PUNCH_LEAD_MS),
    responder: rtt / 2 + roundStartMs(lead, 'responder', 0, PUNCH_LEAD_MS),
  })

  it('together: both start when GO reaches the responder', () => {
    assert.deepEqual(starts('together'), { initiator: 40, responder: 40 })
  })

  it('one side first: the follower starts PUNCH_LEAD_MS after the leader or later', () => {
    const i = starts('initiator')
    assert.equal(i.initiator, 0)
    assert.ok(i.responder - i.initiator >= PUNCH_LEAD_MS)
    const r = starts('responder')
    assert.equal(r.responder, 40)
    assert.equal(r.initiator - r.responder, PUNCH_LEAD_MS)
  })
})
