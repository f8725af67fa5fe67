/** The reservation supervisor's schedule of tries and its wording of a refusal (src/p2p/reservations.ts). */

import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { RESERVATION_RETRY_MAX_MS } from '../../../src/p2p/constants.ts'
import { describeReservationFailure, reservationRetryDelayMs } from '../../../src/p2p/reservations.ts'

describe('reservationRetryDelayMs', () => {
  it('doubles from 1 s and stops at 30 s (no jitter drawn)', (t) => {
    t.mock.method(Math, 'random', () => 0)
    const delays = Array.from({ length: 9 }, (_, i) => reservationRetryDelayMs(i + 1))
    assert.deepEqual(delays, [1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000, 30_000])
    assert.equal(RESERVATION_RETRY_MAX_MS, 30_000)
  })

  it('takes up to a fifth off at random, never more, never past the cap', (t) => {
    t.mock.method(Math, 'random', () => 0.999_999)
    assert.equal(reservationRetryDelayMs(1), 800)
    assert.equal(reservationRetryDelayMs(6), 24_000)
    t.mock.restoreAll()
    for (let failures = 1; failures <= 2_000; failures++) {
      const nominal = Math.min(1_000 * 2 ** Math.min(failures - 1, 30), 30_000)
      const d = reservationRetryDelayMs(failures)
      assert.ok(d <= nominal && d >= nominal * 0.8, `after ${failures} failures: ${d} ms`)
    }
  })

  it('treats "no failure yet" as the first', (t) => {
    t.mock.method(Math, 'random', () => 0)
    assert.equal(reservationRetryDelayMs(0), 1_000)
  })
})

describe('describeReservationFailure', () => {
  const denied = new Error('reservation failed with status PERMISSION_DENIED')

  it('gives the reason the relay told, when it told one', () => {
    assert.equal(
      describeReservationFailure(denied, 'not in relay_authorized_keys'),
      'refused by the relay: not in relay_authorized_keys',
    )
  })

  it('says what PERMISSION_DENIED can mean when the relay said nothing more', () => {
    assert.match(
      describeReservationFailure(denied, undefined),
      /PERMISSION_DENIED: not in its relay_authorized_keys/,
    )
  })

  it('names a full relay, and passes anything else on', () => {
    assert.match(
      describeReservationFailure(new Error('reservation failed with status RESERVATION_REFUSED'), 'x'),
      /as many reservations as it may/,
    )
    assert.equal(
      describeReservationFailure(new Error('stream reset'), undefined),
      'reservation failed: stream reset',
    )
  })
})
