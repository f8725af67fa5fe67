/**
 * The pairing code format: every field combination round-trips, every single-character typo in a
 * sample is caught, expiry and version are reported as such.
 */

import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { crc32 } from 'node:zlib'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import {
  assertNotExpired,
  CODE_VERSION,
  createInviteCode,
  decodeInviteCode,
  encodeInviteCode,
  formatExpiry,
  type InviteCode,
  relayMultiaddr,
} from '../../../src/invite/code.ts'
import {
  CodeExpiredError,
  CodeTypoError,
  CodeVersionError,
  MalformedCodeError,
} from '../../../src/invite/errors.ts'

const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ'

async function peerId(type: 'Ed25519' | 'secp256k1' | 'RSA'): Promise<string> {
  const key = type === 'RSA' ? await generateKeyPair('RSA', 1024) : await generateKeyPair(type)
  return peerIdFromPrivateKey(key).toString()
}

const ids = {
  ed25519: await peerId('Ed25519'),
  ed25519b: await peerId('Ed25519'),
  secp256k1: await peerId('secp256k1'),
  rsa: await peerId('RSA'),
}

const addresses = [
  '/ip4/203.0.113.7/tcp/7777',
  '/ip6/2001:db8::1/tcp/7777',
  '/ip6/::1/tcp/443/ws',
  '/dns4/relay.example.com/tcp/7777',
  '/dns6/relay.example.com/tcp/7777',
  '/dns/relay.example.com/tcp/443/ws',
]

const expiries = [new Date('2026-12-01T10:00:00Z'), new Date(0), new Date((2 ** 32 - 1) * 1000)]

function sample(overrides: Partial<InviteCode> = {}): InviteCode {
  return createInviteCode({
    kind: 'peer',
    expires: new Date('2030-01-01T00:00:00Z'),
    relayAddress: '/ip4/203.0.113.7/tcp/7777',
    relayPeerId: ids.ed25519,
    inviterPeerId: ids.ed25519b,
    network: '',
    ...overrides,
  })
}

function roundTrip(code: InviteCode): InviteCode {
  const text = encodeInviteCode(code)
  assert.match(text, /^[0-9A-HJKMNP-TV-Z]{1,4}(-[0-9A-HJKMNP-TV-Z]{1,4})*$/)
  assert.ok(
    text
      .split('-')
      .slice(0, -1)
      .every((g) => g.length === 4),
  )
  return decodeInviteCode(text)
}

describe('pairing code', () => {
  it('round-trips every field combination', () => {
    let n = 0
    for (const kind of ['peer', 'group'] as const) {
      for (const relay of Object.values(ids)) {
        for (const inviter of kind === 'group' ? [relay] : Object.values(ids)) {
          for (const relayAddress of addresses) {
            for (const network of ['', 'lab', 'a-very_long-network-name-0123456789'.slice(0, 63)]) {
              for (const expires of expiries) {
                const code = sample({
                  kind,
                  relayPeerId: relay,
                  inviterPeerId: inviter,
                  relayAddress,
                  network,
                  expires,
                })
                const back = roundTrip(code)
                assert.deepEqual(back, code)
                assert.equal(back.version, CODE_VERSION)
                n++
              }
            }
          }
        }
      }
    }
    assert.ok(n > 500, `${n} combinations`)
  })

  it('makes a fresh 128-bit token each time', () => {
    const a = sample()
    const b = sample()
    assert.equal(a.token.length, 16)
    assert.notDeepEqual(a.token, b.token)
  })

  it('reads what a person types back: lower case, spaces, line breaks, I/L/O for 1/1/0', () => {
    const code = sample()
    const text = encodeInviteCode(code)
    assert.deepEqual(decodeInviteCode(text.toLowerCase()), code)
    assert.deepEqual(decodeInviteCode(` ${text.replaceAll('-', ' ')}\n`), code)
    assert.deepEqual(decodeInviteCode(text.replaceAll('-', '').replace(/(.{20})/g, '$1\n')), code)
    assert.deepEqual(decodeInviteCode(text.replaceAll('1', 'l').replaceAll('0', 'O')), code)
  })

  it('builds the relay address the joiner configures', () => {
    const code = sample({ relayAddress: '/dns4/relay.example.com/tcp/7777' })
    assert.equal(relayMultiaddr(code), `/dns4/relay.example.com/tcp/7777/p2p/${ids.ed25519}`)
  })

  it('catches every single-character substitution, deletion, insertion and adjacent swap in a sample', () => {
    for (const code of [sample(), sample({ kind: 'group', inviterPeerId: ids.ed25519, network: 'lab' })]) {
      const text = encodeInviteCode(code).replaceAll('-', '')
      const variants: string[] = []
      for (let i = 0; i < text.length; i++) {
        for (const c of ALPHABET) {
          if (c !== text[i]) variants.push(text.slice(0, i) + c + text.slice(i + 1))
        }
        variants.push(text.slice(0, i) + text.slice(i + 1))
        variants.push(`${text.slice(0, i)}7${text.slice(i)}`)
        if (i + 1 < text.length && text[i] !== text[i + 1]) {
          variants.push(text.slice(0, i) + text[i + 1] + text[i] + text.slice(i + 2))
        }
      }
      assert.ok(variants.length > 3000, `${variants.length} variants`)
      for (const v of variants) {
        assert.throws(
          () => decodeInviteCode(v, { locateTypo: false }),
          (err: unknown) => err instanceof CodeTypoError || err instanceof MalformedCodeError,
          'a typo must never decode',
        )
      }
      // A substitution is called a typo, and named by its group.
      const i = 37
      const wrong = text.slice(0, i) + (text[i] === 'A' ? 'B' : 'A') + text.slice(i + 1)
      assert.throws(
        () => decodeInviteCode(wrong),
        (err: unknown) => {
          assert.ok(err instanceof CodeTypoError)
          assert.match(err.message, /typo, probably in group 10\b/)
          assert.ok(!err.message.includes(wrong.slice(0, 8)), 'no part of the code in the message')
          return true
        },
      )
    }
  })

  it('calls a character outside the alphabet a typo and names its group', () => {
    const text = encodeInviteCode(sample())
    assert.throws(
      () => decodeInviteCode(`${text.slice(0, 5)}U${text.slice(6)}`),
      (err: unknown) => err instanceof CodeTypoError && /group 2\b/.test(err.message),
    )
  })

  it('refuses empty and absurd input as not a code', () => {
    assert.throws(() => decodeInviteCode('  - '), MalformedCodeError)
    assert.throws(() => decodeInviteCode('A'.repeat(2000)), MalformedCodeError)
    assert.throws(() => decodeInviteCode('ABCD'), CodeTypoError)
  })

  it('says "upgrade peerup" for a code from a newer format, and not a typo', () => {
    const text = encodeInviteCode(sample())
    const bytes = decodeRaw(text)
    bytes[0] = CODE_VERSION + 1
    const forged = encodeRaw(bytes)
    assert.throws(
      () => decodeInviteCode(forged),
      (err: unknown) => err instanceof CodeVersionError && /upgrade peerup/.test(err.hint ?? ''),
    )
  })

  it('reports an expired code as expired, with the time', () => {
    const code = sample({ expires: new Date('2026-01-01T00:00:00Z') })
    assert.doesNotThrow(() => assertNotExpired(code, new Date('2025-12-31T23:59:59Z')))
    assert.throws(
      () => assertNotExpired(code, new Date('2026-01-01T00:00:00Z')),
      (err: unknown) =>
        err instanceof CodeExpiredError && err.message.includes(`expired at ${formatExpiry(code.expires)}`),
    )
  })

  it('prints an expiry with date, time and the local zone as an offset', () => {
    const saved = process.env.TZ
    try {
      for (const [tz, shown] of [
        ['Europe/Berlin', '2026-12-06 14:05 UTC+01:00'],
        ['UTC', '2026-12-06 13:05 UTC+00:00'],
        ['America/St_Johns', '2026-12-06 09:35 UTC-03:30'],
        ['Asia/Kolkata', '2026-12-06 18:35 UTC+05:30'],
      ] as const) {
        process.env.TZ = tz
        assert.equal(formatExpiry(new Date('2026-12-06T13:05:59Z')), shown, tz)
      }
    } finally {
      if (saved === undefined) delete process.env.TZ
      else process.env.TZ = saved
    }
  })

  it('refuses fields that cannot be encoded', () => {
    assert.throws(
      () => encodeInviteCode(sample({ relayAddress: `/ip4/1.2.3.4/tcp/1/p2p/${ids.ed25519}` })),
      RangeError,
    )
    assert.throws(() => encodeInviteCode(sample({ network: 'Bad Name' })), RangeError)
    assert.throws(() => encodeInviteCode(sample({ expires: new Date(2 ** 32 * 1000) })), RangeError)
    assert.throws(() => encodeInviteCode(sample({ kind: 'group' })), RangeError)
  })
})

// Raw access for forging a newer version with a valid checksum.
function decodeRaw(text: string): Uint8Array {
  const chars = text.replaceAll('-', '')
  const out: number[] = []
  let buffer = 0
  let bits = 0
  for (const c of chars) {
    buffer = (buffer << 5) | ALPHABET.indexOf(c)
    bits += 5
    if (bits >= 8) {
      out.push((buffer >>> (bits - 8)) & 0xff)
      bits -= 8
    }
    buffer &= (1 << bits) - 1
  }
  return Uint8Array.from(out.slice(0, -4))
}

function encodeRaw(body: Uint8Array): string {
  const all = new Uint8Array(body.length + 4)
  all.set(body)
  new DataView(all.buffer).setUint32(body.length, crc32(body) >>> 0)
  let out = ''
  let buffer = 0
  let bits = 0
  for (const b of all) {
    buffer = (buffer << 8) | b
    bits += 8
    while (bits >= 5) {
      out += ALPHABET[(buffer >>> (bits - 5)) & 31]
      bits -= 5
    }
    buffer &= (1 << bits) - 1
  }
  if (bits > 0) out += ALPHABET[(buffer << (5 - bits)) & 31]
  return out
}
