/**
 * The contract's side of persistent proxies: what `POST /v1/proxies` and the dial's `waitMs`
 * take, and how a proxy reads in `proxy list` and `daemon status`.
 */

import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import {
  type PersistentProxyState,
  persistentProxiesText,
  persistentProxyLine,
  persistentProxyStateText,
  placeInput,
  ROUTES,
} from '../../../src/api/index.ts'

function proxy(extra: Partial<PersistentProxyState> = {}): PersistentProxyState {
  return {
    name: 'home-ssh',
    peer: 'home',
    peerId: '12D3KooWHome',
    service: 'ssh',
    bind: '127.0.0.1:2222',
    enabled: true,
    listening: true,
    since: '2026-01-01T12:00:00.000Z',
    activeConnections: 1,
    totalConnections: 4,
    failedConnections: 0,
    bytesIn: 0,
    bytesOut: 0,
    ...extra,
  }
}

describe('POST /v1/proxies', () => {
  const input = ROUTES.proxyAdd.input

  it('takes a name, a peer, a service, and optionally a bind and enabled', () => {
    assert.deepEqual(input.parse({ name: 'home-ssh', peer: 'home', service: 'ssh' }), {
      name: 'home-ssh',
      peer: 'home',
      service: 'ssh',
    })
    assert.equal(
      input.parse({ name: 'p', peer: 'home', service: 'ssh', bind: '2222', enabled: false }).enabled,
      false,
    )
  })

  for (const [body, field] of [
    [{ name: '../x', peer: 'home', service: 'ssh' }, 'name'],
    [{ name: 'p', peer: 'a b', service: 'ssh' }, 'peer'],
    [{ name: 'p', peer: 'home', service: 'SSH' }, 'service'],
    [{ name: 'p', peer: 'home', service: 'ssh', bind: 2222 }, 'bind'],
    [{ name: 'p', peer: 'home', service: 'ssh', enabled: 'yes' }, 'enabled'],
    [{ peer: 'home', service: 'ssh' }, 'name'],
  ] as const) {
    it(`refuses a bad ${field}: ${JSON.stringify(body)}`, () => {
      const r = input.safeParse(body)
      assert.equal(r.success, false)
      assert.deepEqual(r.error?.issues[0]?.path, [field])
    })
  }
})

describe('the dial route’s waitMs', () => {
  it('travels in the query and is read back as a number', () => {
    const { query } = placeInput(ROUTES.dial, { peer: 'home', service: 'ssh', waitMs: 30_000 })
    assert.equal(query.toString(), 'peer=home&service=ssh&waitMs=30000')
    assert.equal(ROUTES.dial.input.parse(Object.fromEntries(query)).waitMs, 30_000)
    assert.equal(ROUTES.dial.input.parse({ peer: 'home', service: 'ssh' }).waitMs, undefined)
  })

  it('refuses what is not a whole number of ms up to a day', () => {
    for (const waitMs of ['-1', '1.5', 'soon', '86400001', 1e20]) {
      assert.equal(
        ROUTES.dial.input.safeParse({ peer: 'home', service: 'ssh', waitMs }).success,
        false,
        String(waitMs),
      )
    }
  })
})

describe('how a proxy reads', () => {
  it('listening, disabled, not listening and why, a peer name that does not resolve', () => {
    assert.equal(persistentProxyStateText(proxy()), 'listening')
    assert.equal(persistentProxyStateText(proxy({ enabled: false, listening: false })), 'disabled')
    assert.equal(
      persistentProxyStateText(
        proxy({ listening: false, reason: 'cannot listen on 127.0.0.1:2222: the port is in use' }),
      ),
      'not listening: cannot listen on 127.0.0.1:2222: the port is in use',
    )
    assert.equal(
      persistentProxyStateText(
        proxy({ peerId: undefined, peerError: 'unknown peer "home": not a name in names: nor a peer id' }),
      ),
      'listening; unknown peer "home": not a name in names: nor a peer id',
    )
    assert.equal(persistentProxyLine(proxy()), 'home-ssh 127.0.0.1:2222 → home/ssh (listening)')
  })

  it('as a table in `proxy list`', () => {
    assert.equal(
      persistentProxiesText([
        proxy(),
        proxy({
          name: 'web',
          bind: '127.0.0.1:8080',
          service: 'web',
          lastError: 'home did not become reachable within 30 s',
        }),
      ]),
      [
        'NAME      BIND            PEER  SERVICE  STATE      OPEN  TOTAL  LAST FAILURE',
        'home-ssh  127.0.0.1:2222  home  ssh      listening  1     4      -',
        'web       127.0.0.1:8080  home  web      listening  1     4      home did not become reachable within 30 s',
      ].join('\n'),
    )
    assert.match(persistentProxiesText([]), /^no proxies \(`peerup proxy add/)
  })
})
