/**
 * `peerup invite` without a reservation: it says on the progress line why a relay refuses while it
 * waits, and fails with each relay's reason and what to do (src/invite/invite.ts).
 */

import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { shortId } from '../../../src/api/text.ts'
import { InviteUnavailableError } from '../../../src/invite/errors.ts'
import { inviteOn, noReservationError, type PairingHost } from '../../../src/invite/invite.ts'
import { createLogger } from '../../../src/log/index.ts'
import type { RelayState } from '../../../src/p2p/reservations.ts'

const RELAY = '12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN'
const SELF = '12D3KooWRKZF1tN8tvqNrLdf6CGPAKnec5KJMqWvEfcn7AEUh3R1'

function state(extra: Partial<RelayState>): RelayState {
  return {
    peerId: RELAY,
    addrs: [`/ip4/198.18.0.1/tcp/7777/p2p/${RELAY}`],
    connected: true,
    reserved: false,
    since: Date.now(),
    lastError: undefined,
    reason: undefined,
    failures: 0,
    nextAttemptAt: undefined,
    ...extra,
  }
}

describe('an invite without a reservation', () => {
  it("says why on the progress line, then fails with the relay's reason and the command to run", async () => {
    const refused = state({ reason: 'refused by the relay: not in relay_authorized_keys', failures: 3 })
    // A supervisor that reports the refusal and whose wait runs out at once.
    const host = {
      peerId: SELF,
      config: { relay: { addresses: refused.addrs } },
      supervisor: {
        status: () => [refused],
        onUpdate: (listener: (s: RelayState) => void) => {
          listener(refused)
          listener(refused)
          return () => {}
        },
        waitForReservation: () => Promise.reject(new Error('The operation was aborted due to timeout')),
      },
    } as unknown as PairingHost
    const progress: string[] = []
    const err = await inviteOn(host, {
      log: createLogger('invite'),
      name: undefined,
      ttlMs: 60_000,
      signal: new AbortController().signal,
      onCode: () => assert.fail('no code without a reservation'),
      onProgress: (m) => progress.push(m),
    }).catch((e: unknown) => e)
    assert.ok(err instanceof InviteUnavailableError)
    assert.match(err.message, /no relay gave this node a reservation within 30 s/)
    assert.match(err.message, /refused by the relay: not in relay_authorized_keys/)
    assert.match(err.hint ?? '', new RegExp(`peerup relay authorize ${SELF}`))
    assert.deepEqual(progress, [
      'waiting for a reservation on the relay (up to 30 s)…',
      `relay ${shortId(RELAY)}: refused by the relay: not in relay_authorized_keys; still trying…`,
    ])
  })

  it('points at the address and the relay itself when the relay cannot be reached', () => {
    const err = noReservationError(SELF, [
      state({ connected: false, reason: 'cannot reach the relay: connect ECONNREFUSED 198.18.0.1:7777' }),
    ])
    assert.match(err.message, /cannot reach the relay: connect ECONNREFUSED/)
    assert.match(err.hint ?? '', /peerup relay list/)
  })
})
