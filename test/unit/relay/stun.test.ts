/**
 * The relay's STUN responder against hand-built RFC 5389 messages (so the test does not share the
 * library's view of the format) and against a real ICE agent (libdatachannel, as WebRTC uses it).
 */

import * as assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import * as dgram from 'node:dgram'
import { once } from 'node:events'
import { after, before, describe, it } from 'node:test'
import * as zlib from 'node:zlib'
import { createLogger } from '../../../src/log/index.ts'
import { answerBinding, StunResponder } from '../../../src/relay/stun.ts'

const COOKIE = 0x2112a442
const XOR_MAPPED_ADDRESS = 0x0020
const FINGERPRINT = 0x8028
const SOFTWARE = 0x8022
const OTHER_ADDRESS = 0x802c
const PEERUP_TIME = 0xc0de

/** A Binding request, optionally with a SOFTWARE attribute and a FINGERPRINT (RFC 5389 §15.5). */
function bindingRequest(
  options: { fingerprint?: boolean; corruptFingerprint?: boolean; type?: number; time?: boolean } = {},
) {
  const txid = randomBytes(12)
  const software = Buffer.from('test-agent')
  const padded = Buffer.alloc(Math.ceil(software.length / 4) * 4)
  software.copy(padded)
  const softwareAttr = Buffer.concat([
    u16(SOFTWARE),
    u16(software.length),
    padded,
    // PEERUP-TIME, empty: asks for the relay's clock (src/util/stun.ts).
    ...(options.time === true ? [u16(PEERUP_TIME), u16(0)] : []),
  ])
  const header = (length: number) =>
    Buffer.concat([u16(options.type ?? 0x0001), u16(length), u32(COOKIE), txid])
  if (options.fingerprint !== true) {
    return { txid, bytes: Buffer.concat([header(softwareAttr.length), softwareAttr]) }
  }
  // The CRC covers the message up to the FINGERPRINT attribute, with the length already counting it.
  const body = Buffer.concat([header(softwareAttr.length + 8), softwareAttr])
  const crc = (zlib.crc32(body) ^ 0x5354554e) >>> 0
  const fp = Buffer.concat([
    u16(FINGERPRINT),
    u16(4),
    u32(options.corruptFingerprint === true ? crc ^ 1 : crc),
  ])
  return { txid, bytes: Buffer.concat([body, fp]) }
}

/** The attributes of a STUN message, by type. */
function attributes(msg: Buffer): Map<number, { value: Buffer; offset: number }> {
  const out = new Map<number, { value: Buffer; offset: number }>()
  let at = 20
  while (at + 4 <= msg.length) {
    const type = msg.readUInt16BE(at)
    const length = msg.readUInt16BE(at + 2)
    out.set(type, { value: msg.subarray(at + 4, at + 4 + length), offset: at })
    at += 4 + Math.ceil(length / 4) * 4
  }
  return out
}

function xorMapped(value: Buffer): { family: number; port: number; address: string } {
  const family = value[1] ?? 0
  const port = value.readUInt16BE(2) ^ (COOKIE >>> 16)
  const addr = value.readUInt32BE(4) ^ COOKIE
  return { family, port, address: [24, 16, 8, 0].map((s) => (addr >>> s) & 0xff).join('.') }
}

function u16(n: number): Buffer {
  const b = Buffer.alloc(2)
  b.writeUInt16BE(n)
  return b
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4)
  b.writeUInt32BE(n >>> 0)
  return b
}

describe('answerBinding', () => {
  const from = { address: '198.18.0.2', port: 40_123 }

  it('answers a Binding request with a success carrying XOR-MAPPED-ADDRESS of the sender', () => {
    const { txid, bytes } = bindingRequest()
    const answer = answerBinding(bytes, from)
    assert.ok(answer)
    assert.equal(answer.readUInt16BE(0), 0x0101, 'Binding success response')
    assert.equal(answer.readUInt16BE(2), answer.length - 20, 'length counts the attributes')
    assert.equal(answer.readUInt32BE(4), COOKIE)
    assert.deepEqual(answer.subarray(8, 20), txid, 'same transaction id')
    const mapped = attributes(answer).get(XOR_MAPPED_ADDRESS)
    assert.ok(mapped)
    assert.deepEqual(xorMapped(mapped.value), { family: 1, ...from })
    assert.equal(attributes(answer).has(FINGERPRINT), false, 'no FINGERPRINT when the request had none')
  })

  it('fingerprints the answer to a fingerprinted request, with a CRC that checks out', () => {
    const { bytes } = bindingRequest({ fingerprint: true })
    const answer = answerBinding(bytes, from)
    assert.ok(answer)
    const fp = attributes(answer).get(FINGERPRINT)
    assert.ok(fp, 'FINGERPRINT present')
    assert.equal(fp.offset, answer.length - 8, 'FINGERPRINT is the last attribute')
    const crc = (zlib.crc32(answer.subarray(0, fp.offset)) ^ 0x5354554e) >>> 0
    assert.equal(fp.value.readUInt32BE(0), crc)
  })

  it('tells its clock (PEERUP-TIME) only when asked, before a FINGERPRINT that checks out', () => {
    const now = 1_765_000_000_123
    assert.equal(
      attributes(answerBinding(bindingRequest().bytes, from, { now: () => now }) as Buffer).has(PEERUP_TIME),
      false,
    )
    const answer = answerBinding(bindingRequest({ time: true, fingerprint: true }).bytes, from, {
      now: () => now,
    })
    assert.ok(answer)
    assert.equal(answer.readUInt16BE(2), answer.length - 20, 'length counts the added attributes')
    const time = attributes(answer).get(PEERUP_TIME)
    assert.ok(time)
    assert.equal(time.value.readBigUInt64BE(0), BigInt(now))
    const fp = attributes(answer).get(FINGERPRINT)
    assert.ok(fp)
    assert.equal(fp.offset, answer.length - 8, 'FINGERPRINT is still the last attribute')
    assert.equal(fp.value.readUInt32BE(0), (zlib.crc32(answer.subarray(0, fp.offset)) ^ 0x5354554e) >>> 0)
    const mapped = attributes(answer).get(XOR_MAPPED_ADDRESS)
    assert.ok(mapped)
    assert.deepEqual(xorMapped(mapped.value), { family: 1, ...from })
  })

  it('names its second port in OTHER-ADDRESS (RFC 5780) when it has one', () => {
    const answer = answerBinding(bindingRequest().bytes, from, { other: { address: '0.0.0.0', port: 3479 } })
    assert.ok(answer)
    const other = attributes(answer).get(OTHER_ADDRESS)
    assert.ok(other)
    // MAPPED-ADDRESS layout, not XORed: family 1, port, address.
    assert.deepEqual(
      [other.value[1], other.value.readUInt16BE(2), [...other.value.subarray(4, 8)]],
      [1, 3479, [0, 0, 0, 0]],
    )
  })

  it('maps an IPv4 client seen on a dual-stack socket to its IPv4 address', () => {
    const answer = answerBinding(bindingRequest().bytes, { address: '::ffff:100.64.1.2', port: 5000 })
    assert.ok(answer)
    const mapped = attributes(answer).get(XOR_MAPPED_ADDRESS)
    assert.ok(mapped)
    assert.deepEqual(xorMapped(mapped.value), { family: 1, address: '100.64.1.2', port: 5000 })
  })

  const dropped: Array<[string, Buffer]> = [
    ['an empty datagram', Buffer.alloc(0)],
    ['a datagram shorter than a header', Buffer.alloc(19)],
    ['random bytes', randomBytes(64)],
    ['an RFC 3489 request without the magic cookie', Buffer.concat([u16(1), u16(0), randomBytes(16)])],
    ['a Binding indication', bindingRequest({ type: 0x0011 }).bytes],
    ['a Binding success response', bindingRequest({ type: 0x0101 }).bytes],
    [
      'a request with a wrong FINGERPRINT',
      bindingRequest({ fingerprint: true, corruptFingerprint: true }).bytes,
    ],
    [
      'a request whose length runs past the datagram',
      Buffer.concat([u16(1), u16(400), u32(COOKIE), randomBytes(12), randomBytes(8)]),
    ],
  ]
  for (const [what, bytes] of dropped) {
    it(`drops ${what}`, () => {
      assert.equal(answerBinding(bytes, from), undefined)
    })
  }
})

describe('StunResponder', () => {
  let responder: StunResponder

  before(async () => {
    responder = new StunResponder({ log: createLogger('stun') }, { listenAddress: '127.0.0.1:0' })
    await responder.start()
  })

  after(async () => {
    await responder.stop()
  })

  it('answers over UDP with the address and port the request came from', async () => {
    const client = dgram.createSocket('udp4')
    try {
      await new Promise<void>((resolve) => client.bind(0, '127.0.0.1', resolve))
      const { txid, bytes } = bindingRequest({ fingerprint: true })
      const reply = once(client, 'message') as Promise<[Buffer, dgram.RemoteInfo]>
      client.send(randomBytes(32), responder.address.port, '127.0.0.1')
      client.send(bytes, responder.address.port, '127.0.0.1')
      const [answer] = await reply
      assert.deepEqual(answer.subarray(8, 20), txid)
      const mapped = attributes(answer).get(XOR_MAPPED_ADDRESS)
      assert.ok(mapped)
      assert.deepEqual(xorMapped(mapped.value), {
        family: 1,
        address: '127.0.0.1',
        port: client.address().port,
      })
      assert.equal(responder.counters.answered, 1)
      assert.equal(responder.counters.dropped, 1)
    } finally {
      client.close()
    }
  })

  it('answers the Binding requests of a real ICE agent (libdatachannel)', { timeout: 20_000 }, async (t) => {
    // A responder and the agent in a child process, killed at the end or when the test times out
    // (t.signal): libdatachannel's threads can keep a process alive after cleanup()
    // (murat-dogan/node-datachannel#349), and a child left running keeps this test file alive.
    // The peer connection is held by globalThis: nothing in JavaScript refers to it once the
    // script has run, and a collection in the middle of gathering destroyed it (1 run in ~10), so
    // gathering never completed.
    const script = `
      const { StunResponder } = await import(process.argv[1])
      const { createLogger } = await import(process.argv[2])
      const ndc = await import('node-datachannel')
      const responder = new StunResponder({ log: createLogger('stun') }, { listenAddress: '127.0.0.1:0' })
      await responder.start()
      const pc = new ndc.PeerConnection('stun-test', {
        iceServers: ['stun:127.0.0.1:' + responder.address.port],
      })
      globalThis.pc = pc
      const candidates = []
      pc.onLocalCandidate((c) => candidates.push(c))
      pc.onGatheringStateChange((state) => {
        if (state === 'complete') {
          process.stdout.write(JSON.stringify({ answered: responder.counters.answered, candidates }) + '\\n')
        }
      })
      pc.createDataChannel('probe')
    `
    const child = spawn(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        script,
        new URL('../../../src/relay/stun.ts', import.meta.url).href,
        new URL('../../../src/log/index.ts', import.meta.url).href,
      ],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
        cwd: new URL('../../..', import.meta.url).pathname,
        signal: t.signal,
        killSignal: 'SIGKILL',
      },
    )
    child.on('error', () => {}) // the abort, reported by the test's own timeout
    try {
      const [line] = (await once(child.stdout, 'data', { signal: t.signal })) as [Buffer]
      const result = JSON.parse(line.toString()) as { answered: number; candidates: string[] }
      assert.ok(result.answered > 0, 'the agent asked us')
      assert.ok(
        result.candidates.some((c) => c.includes('typ srflx') && c.includes('127.0.0.1')),
        'the agent took our answer for its server-reflexive candidate',
      )
    } finally {
      child.kill('SIGKILL')
    }
  })

  it('refuses an address that is already taken, and stop() is idempotent', async () => {
    const taken = new StunResponder(
      { log: createLogger('stun') },
      { listenAddress: `127.0.0.1:${responder.address.port}` },
    )
    await assert.rejects(taken.start(), /EADDRINUSE/)
    const other = new StunResponder({ log: createLogger('stun') }, { listenAddress: '127.0.0.1:0' })
    await other.start()
    await other.stop()
    await other.stop()
  })
})
