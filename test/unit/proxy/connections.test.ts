/**
 * The table of proxied connections (src/proxy/connections.ts): how a reset reads (by what reset
 * it), the history newest first and bounded, the totals of open and ended connections together,
 * the rate from two looks at the counters (on a mocked clock), and the path remembered for a
 * session that ended without a link.
 */

import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { ApiPath } from '../../../src/api/index.ts'
import {
  FramingCutError,
  ListenerClosedError,
  LocalClosedError,
  RemoteResetError,
  TransferInterruptedError,
} from '../../../src/pipe/errors.ts'
import { SessionExpiredError, SessionRefusedError } from '../../../src/pipe/session.ts'
import {
  CONNECTION_HISTORY,
  type ConnectionInit,
  connectionEnd,
  ProxiedConnections,
  RATE_INTERVAL_MS,
  sumBy,
} from '../../../src/proxy/connections.ts'
import { ServiceClosedError } from '../../../src/proxy/errors.ts'

const RELAYED: ApiPath = { type: 'RELAYED', relay: 'r', transport: 'tcp', remoteAddr: '/x', limited: false }

function init(over: Partial<ConnectionInit> = {}): ConnectionInit {
  return {
    side: 'outbound',
    peerId: 'peer-a',
    service: 'ssh',
    local: '127.0.0.1:2222',
    resumable: true,
    path: () => RELAYED,
    ...over,
  }
}

const clean = { bytesIn: 0, bytesOut: 0, reset: false }
const reset = (error: Error) => ({ bytesIn: 0, bytesOut: 0, reset: true, error })

describe('connectionEnd', () => {
  const table: Array<[Error | undefined, ReturnType<typeof connectionEnd>]> = [
    [undefined, 'clean'],
    [new SessionExpiredError('the connection did not come back within 120 s'), 'expired'],
    [new ListenerClosedError('the proxy listener was closed'), 'closed'],
    [new ServiceClosedError('ssh'), 'closed'],
    [new SessionRefusedError('the session is over'), 'refused'],
    [new TransferInterruptedError('the connection went'), 'interrupted'],
    [new RemoteResetError('reset'), 'reset'],
    [new LocalClosedError('closed'), 'reset'],
    [new FramingCutError('cut'), 'reset'],
    [Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }), 'reset'],
    [new Error('something else'), 'failed'],
  ]
  for (const [error, want] of table) {
    it(`${error === undefined ? 'no error' : `${error.name} (${error.message})`} → ${want}`, () => {
      assert.equal(connectionEnd(error === undefined ? clean : reset(error)), want)
    })
  }
})

describe('ProxiedConnections', () => {
  it('moves an ended connection to the history with how it ended, newest first, at most 100', () => {
    const table = new ProxiedConnections()
    const first = table.open(init())
    first.bytesIn += 10
    first.bytesOut += 3
    assert.equal(table.list().length, 1)
    assert.equal(table.list()[0]?.bytesIn, 10)
    first.done({ bytesIn: 10, bytesOut: 3, reset: false })
    first.done({ bytesIn: 10, bytesOut: 3, reset: false })
    assert.equal(table.list().length, 0)
    const [ended] = table.history()
    assert.equal(ended?.end, 'clean')
    assert.equal(ended?.error, undefined)
    assert.deepEqual([ended?.bytesIn, ended?.bytesOut, ended?.path], [10, 3, RELAYED])
    for (let i = 0; i < CONNECTION_HISTORY + 5; i++) {
      table.open(init()).done(reset(new RemoteResetError('the session was reset')))
    }
    const history = table.history()
    assert.equal(history.length, CONNECTION_HISTORY)
    assert.equal(history[0]?.id, CONNECTION_HISTORY + 6)
    assert.equal(history[0]?.end, 'reset')
    assert.equal(history[0]?.error, 'the session was reset')
    table.stop()
  })

  it('keeps the path a session had for when it ends without a link', () => {
    const table = new ProxiedConnections()
    let path: ApiPath | undefined = RELAYED
    const live = table.open(init({ path: () => path }))
    path = undefined
    assert.equal(table.list()[0]?.path, undefined, 'waiting for its link')
    live.done(reset(new SessionExpiredError('the connection did not come back within 120 s')))
    assert.deepEqual(table.history()[0]?.path, RELAYED)
    assert.equal(table.history()[0]?.end, 'expired')
  })

  it('totals open and ended connections together, by side, peer and service', () => {
    const table = new ProxiedConnections()
    const a = table.open(init())
    a.bytesOut += 100
    a.done({ bytesIn: 0, bytesOut: 100, reset: false })
    const b = table.open(init())
    b.bytesOut += 50
    table.open(init({ side: 'inbound', peerId: 'peer-b', service: 'web' })).bytesIn += 7
    const totals = table.totals()
    const byPeer = sumBy(totals, (t) => t.peerId).map(({ of, ...sum }) => ({ peer: of.peerId, ...sum }))
    assert.deepEqual(byPeer, [
      { peer: 'peer-a', connections: 2, bytesIn: 0, bytesOut: 150 },
      { peer: 'peer-b', connections: 1, bytesIn: 7, bytesOut: 0 },
    ])
    assert.deepEqual(table.openBytesOf('nobody'), { bytesIn: 0, bytesOut: 0 })
    table.stop()
  })

  it('rates are the bytes moved since the last look, per second', (t) => {
    t.mock.timers.enable({ apis: ['setInterval', 'Date'] })
    const table = new ProxiedConnections()
    const live = table.open(init())
    live.bytesIn += 3000
    live.bytesOut += 500
    t.mock.timers.tick(RATE_INTERVAL_MS)
    assert.deepEqual([table.list()[0]?.bytesInPerSecond, table.list()[0]?.bytesOutPerSecond], [3000, 500])
    t.mock.timers.tick(RATE_INTERVAL_MS)
    assert.equal(table.list()[0]?.bytesInPerSecond, 0, 'nothing moved in the last second')
    live.done(clean)
    table.stop()
  })
})
