/**
 * The NAT measurement of `peerup doctor` against real STUN responders (the relay's own,
 * src/relay/stun.ts) on loopback: two endpoints that see one socket with one mapping make a cone;
 * a relay with a second port (OTHER-ADDRESS) is enough on its own; silence is UDP blocked; the
 * relay's clock comes back in PEERUP-TIME. The symmetric case needs a real NAT: the rule is tested
 * with its inputs here and end to end in test/e2e/doctor.test.ts.
 */

import * as assert from 'node:assert/strict'
import * as dgram from 'node:dgram'
import { once } from 'node:events'
import { after, before, describe, it } from 'node:test'
import { classifyMapping, measureNat, type NatProbe } from '../../../src/doctor/nat.ts'
import { createLogger } from '../../../src/log/index.ts'
import { answerBinding, StunResponder } from '../../../src/relay/stun.ts'
import { bindingRequest, parseBindingAnswer } from '../../../src/util/stun.ts'

const log = createLogger('test.stun')
const RELAY = '/ip4/127.0.0.1/tcp/7777/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN'
const RELAY2 = '/ip4/127.0.0.2/tcp/7777/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN'

/** A UDP port nobody listens on (bound, then closed). */
async function deadPort(): Promise<number> {
  const s = dgram.createSocket('udp4')
  s.bind(0, '127.0.0.1')
  await once(s, 'listening')
  const { port } = s.address()
  await new Promise<void>((resolve) => s.close(() => resolve()))
  return port
}

describe('measureNat against the relay’s STUN responder', () => {
  let one: StunResponder
  let two: StunResponder
  let primary: StunResponder
  let alternate: StunResponder

  before(async () => {
    one = new StunResponder({ log }, { listenAddress: '127.0.0.1:0' })
    two = new StunResponder({ log }, { listenAddress: '127.0.0.1:0' })
    // A relay with stun.alternate_listen_address: each names the other, as src/relay/server.ts wires them.
    primary = new StunResponder({ log }, { listenAddress: '127.0.0.1:0', other: () => alternate.endpoint })
    alternate = new StunResponder({ log }, { listenAddress: '0.0.0.0:0', other: () => primary.endpoint })
    for (const r of [one, two, primary, alternate]) {
      await r.start()
    }
  })

  after(async () => {
    for (const r of [one, two, primary, alternate]) {
      await r.stop()
    }
  })

  it('two responders on two ports see the same mapping: endpoint-independent (cone), no NAT on loopback', async () => {
    const nat = await measureNat([
      { relay: RELAY, address: { address: '127.0.0.1', port: one.address.port } },
      { relay: RELAY2, address: { address: '127.0.0.1', port: two.address.port } },
    ])
    assert.equal(nat.mapping, 'endpoint-independent')
    assert.equal(nat.behindNat, false)
    assert.equal(nat.probes.length, 2)
    for (const p of nat.probes) {
      assert.deepEqual(p.answer?.mapped, { address: '127.0.0.1', port: nat.localPort })
      assert.equal(p.alternate, false)
    }
  })

  it('one relay with a second port: the second request goes to the port OTHER-ADDRESS names', async () => {
    const nat = await measureNat([
      { relay: RELAY, address: { address: '127.0.0.1', port: primary.address.port } },
    ])
    assert.equal(nat.mapping, 'endpoint-independent')
    assert.deepEqual(
      nat.probes.map((p) => [p.endpoint, p.alternate]),
      [
        [`127.0.0.1:${primary.address.port}`, false],
        // The alternate listens on 0.0.0.0: "the host you already asked".
        [`127.0.0.1:${alternate.address.port}`, true],
      ],
    )
    assert.equal(alternate.counters.answered, 1)
  })

  it('one relay without a second port: unknown (nothing to compare with)', async () => {
    const nat = await measureNat([
      { relay: RELAY, address: { address: '127.0.0.1', port: one.address.port } },
    ])
    assert.equal(nat.mapping, 'unknown')
    assert.equal(nat.probes.length, 1)
  })

  it('no answer from anywhere: UDP blocked', async () => {
    const nat = await measureNat(
      [{ relay: RELAY, address: { address: '127.0.0.1', port: await deadPort() } }],
      { timeoutMs: 300 },
    )
    assert.equal(nat.mapping, 'udp-blocked')
    assert.equal(nat.behindNat, undefined)
    assert.equal(nat.probes[0]?.answer, undefined)
  })

  it('the answer carries the relay’s clock (PEERUP-TIME) between our send and receive', async () => {
    const sent = Date.now()
    const nat = await measureNat([
      { relay: RELAY, address: { address: '127.0.0.1', port: one.address.port } },
    ])
    const answer = nat.probes[0]?.answer
    assert.ok(answer?.serverTimeMs !== undefined)
    assert.ok(
      answer.serverTimeMs >= sent && answer.serverTimeMs <= answer.receivedAtMs,
      JSON.stringify(answer),
    )
  })

  it('an answer to another transaction is not ours', () => {
    const a = bindingRequest()
    const b = bindingRequest()
    const from = { address: '198.18.0.2', port: 4000 }
    const bytes = answerBinding(a.datagram, from, { now: () => 1_700_000_000_000 })
    assert.ok(bytes !== undefined)
    assert.deepEqual(parseBindingAnswer(bytes, a.transactionId), {
      mapped: from,
      serverTimeMs: 1_700_000_000_000,
    })
    assert.equal(parseBindingAnswer(bytes, b.transactionId), undefined)
  })
})

describe('classifyMapping', () => {
  const probe = (endpoint: string, mapped?: string): NatProbe => {
    const [address = '', port = '0'] = mapped?.split(':') ?? []
    return {
      endpoint,
      relay: RELAY,
      alternate: false,
      ...(mapped === undefined
        ? {}
        : { answer: { mapped: { address, port: Number(port) }, rttMs: 1, receivedAtMs: 0 } }),
    }
  }
  const cases: Array<[string, NatProbe[], string]> = [
    [
      'same public port both ways',
      [probe('a:1', '198.18.0.2:4000'), probe('b:1', '198.18.0.2:4000')],
      'endpoint-independent',
    ],
    [
      'a new port per destination (--random-fully)',
      [probe('a:1', '198.18.0.2:4000'), probe('b:1', '198.18.0.2:51234')],
      'endpoint-dependent',
    ],
    [
      'a new address per destination',
      [probe('a:1', '198.18.0.2:4000'), probe('b:1', '198.18.0.3:4000')],
      'endpoint-dependent',
    ],
    ['one answer only', [probe('a:1', '198.18.0.2:4000'), probe('b:1')], 'unknown'],
    ['no answer', [probe('a:1'), probe('b:1')], 'udp-blocked'],
    ['nothing asked', [], 'udp-blocked'],
  ]
  for (const [name, probes, want] of cases) {
    it(`${name}: ${want}`, () => {
      assert.equal(classifyMapping(probes), want)
    })
  }
})
