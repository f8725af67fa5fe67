/**
 * CPace over ristretto255 (src/invite/cpace.ts) against the test vectors of draft-irtf-cfrg-cpace
 * (its testvectors.json, `G_Coffee25519` and `G_Coffee25519_points`, github.com/cfrg/draft-irtf-cfrg-cpace
 * at 8fb4056), then the properties a short code relies on.
 */

import * as assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { ristretto255 } from '@noble/curves/ed25519.js'
import {
  CPaceParty,
  calculateGenerator,
  lvCat,
  prependLen,
  scalarMultVfy,
} from '../../../src/invite/cpace.ts'

const hex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s, 'hex'))
const toHex = (b: Uint8Array | undefined): string =>
  Buffer.from(b ?? [])
    .toString('hex')
    .toUpperCase()
const text = (s: string): Uint8Array => new TextEncoder().encode(s)

const V = {
  PRS: '50617373776F7264',
  CI: '0B415F696E69746961746F720B425F726573706F6E646572',
  sid: '7E4B4791D6A8EF019B936C79FB7F2C57',
  g: '222B6B195FE84B1652BADB6F6A3AE3D24341E7306967F0B8115B40D5698C7E56',
  ya: 'DA3D23700A9E5699258AEF94DC060DFDA5EBB61F02A5EA77FAD53F4FF0976D08',
  ADa: '414461',
  Ya: 'D6BAC480F2C386C394EFC7C47ADB9925DCD2630B64F240C50F8D0EEC482B9157',
  yb: 'D2316B454718C35362D83D69DF6320F38578ED5984651435E2949762D900B80D',
  ADb: '414462',
  Yb: '3EA7E0B19560D7C0B0F5734F63B955286DFA8232B5EBE63324E2D9E7433F7258',
  ISK_IR:
    'B69EFFBF61B51D56401C0F65601ABE428DE8206FEAAF0E32198896DCAE7B35CD2B38950A39DFD5D4A79164614C2984F7DAA460B588C1E80C3FA2068AF7900447',
}
const POINTS = {
  s: '7CD0E075FA7955BA52C02759A6C90DBBFC10E6D40AEA8D283E407D88CF538A05',
  X: '2C3C6B8C4F3800E7AEF6864025B4ED79BD599117E427C41BD47D93D654B4A51C',
  sX: '7C13645FE790A468F62C39BEB7388E541D8405D1ADE69D1778C5FE3E7F6B600E',
  invalid1: '2B3C6B8C4F3800E7AEF6864025B4ED79BD599117E427C41BD47D93D654B4A51C',
  invalid2: '0000000000000000000000000000000000000000000000000000000000000000',
}

const le = (h: string): bigint => BigInt(`0x${Buffer.from(hex(h)).reverse().toString('hex')}`)

describe('CPace ristretto255/SHA-512: the draft test vectors', () => {
  const inputs = { prs: hex(V.PRS), ci: hex(V.CI), sid: hex(V.sid) }

  it('prepend_len and lv_cat', () => {
    assert.equal(toHex(prependLen(text(''))), '00')
    assert.equal(toHex(prependLen(text('1234'))), '0431323334')
    assert.equal(toHex(prependLen(new Uint8Array(128)).subarray(0, 2)), '8001')
    assert.equal(toHex(lvCat(text('1234'), text('5'), text(''), text('678'))), '043132333401350003363738')
  })

  it('the generator', () => {
    assert.equal(toHex(calculateGenerator(inputs).toBytes()), V.g)
  })

  it('both messages and the ISK', () => {
    const a = new CPaceParty('initiator', inputs, { ad: hex(V.ADa), scalar: hex(V.ya) })
    const b = new CPaceParty('responder', inputs, { ad: hex(V.ADb), scalar: hex(V.yb) })
    assert.equal(toHex(a.share), V.Ya)
    assert.equal(toHex(b.share), V.Yb)
    assert.equal(toHex(a.finish(b.share, hex(V.ADb))), V.ISK_IR)
    assert.equal(toHex(b.finish(a.share, hex(V.ADa))), V.ISK_IR)
  })

  it('scalar_mult_vfy: a valid point, and the two invalid encodings abort', () => {
    assert.equal(toHex(scalarMultVfy(le(POINTS.s), hex(POINTS.X))), POINTS.sX)
    assert.equal(scalarMultVfy(le(POINTS.s), hex(POINTS.invalid1)), undefined)
    assert.equal(scalarMultVfy(le(POINTS.s), hex(POINTS.invalid2)), undefined)
  })
})

describe('CPace: what a short code relies on', () => {
  const run = (prsA: string, prsB: string, ci = 'ci', sid = 'sid') => {
    const a = new CPaceParty('initiator', { prs: text(prsA), ci: text(ci), sid: text(sid) })
    const b = new CPaceParty('responder', { prs: text(prsB), ci: text(ci), sid: text(sid) })
    return { a: a.finish(b.share), b: b.finish(a.share), shares: [a.share, b.share] }
  }

  it('the same password gives both sides the same key', () => {
    const r = run('acorn-zebra', 'acorn-zebra')
    assert.ok(r.a !== undefined && r.a.length === 64)
    assert.deepEqual(r.a, r.b)
  })

  it('a different password, channel or session gives different keys', () => {
    const wrong = run('acorn-zebra', 'acorn-zebre')
    assert.notDeepEqual(wrong.a, wrong.b)
    const a = new CPaceParty('initiator', { prs: text('p'), ci: text('ci-1'), sid: text('s') })
    const b = new CPaceParty('responder', { prs: text('p'), ci: text('ci-2'), sid: text('s') })
    assert.notDeepEqual(a.finish(b.share), b.finish(a.share))
  })

  it('fresh scalars: two runs with one password share nothing on the wire', () => {
    const one = run('acorn-zebra', 'acorn-zebra')
    const two = run('acorn-zebra', 'acorn-zebra')
    assert.notDeepEqual(one.shares[0], two.shares[0])
    assert.notDeepEqual(one.a, two.a)
  })

  it('the identity or a non-point as the other share aborts', () => {
    const a = new CPaceParty('initiator', { prs: text('p'), ci: text('c'), sid: text('s') })
    assert.equal(a.finish(ristretto255.Point.ZERO.toBytes()), undefined)
    assert.equal(a.finish(hex(POINTS.invalid1)), undefined)
    assert.equal(a.finish(new Uint8Array(31)), undefined)
  })
})
