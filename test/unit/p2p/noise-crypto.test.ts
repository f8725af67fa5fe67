import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import { test } from 'node:test'
import { defaultCrypto, pureJsCrypto } from '@chainsafe/libp2p-noise/crypto'
import { Uint8ArrayList } from 'uint8arraylist'
import { keyObjectFor, noiseCrypto } from '../../../src/p2p/noise-crypto.ts'

/** noise's own uint8arraylist is 2.x: the same lists by their shared mark, another type to tsc. */
type NoiseInput = Parameters<typeof noiseCrypto.chaCha20Poly1305Encrypt>[0]
const asNoise = (list: Uint8ArrayList): NoiseInput => list as unknown as NoiseInput

const SIZES = [0, 100, 1199, 1200, 16 * 1024, 65535 - 16]

function flat(x: Uint8Array | { subarray(): Uint8Array }): Buffer {
  return Buffer.from(x instanceof Uint8Array ? x : x.subarray())
}

test('seals exactly as the default and the pure-JS crypto do, and opens what they seal', () => {
  const k = crypto.randomBytes(32)
  const ad = crypto.randomBytes(32)
  for (const size of SIZES) {
    const nonce = crypto.randomBytes(12)
    const plain = crypto.randomBytes(size)
    const ours = flat(noiseCrypto.chaCha20Poly1305Encrypt(plain, nonce, ad, k))
    assert.deepEqual(ours, flat(defaultCrypto.chaCha20Poly1305Encrypt(plain, nonce, ad, k)), `size ${size}`)
    assert.deepEqual(ours, flat(pureJsCrypto.chaCha20Poly1305Encrypt(plain, nonce, ad, k)), `size ${size}`)
    // A list in (yamux hands noise header and payload as one), the same bytes out.
    const list = new Uint8ArrayList(plain.subarray(0, size >> 1), plain.subarray(size >> 1))
    assert.deepEqual(
      flat(noiseCrypto.chaCha20Poly1305Encrypt(asNoise(list), nonce, ad, k)),
      ours,
      `list, size ${size}`,
    )
    const theirs = flat(pureJsCrypto.chaCha20Poly1305Encrypt(plain, nonce, ad, k))
    assert.deepEqual(flat(noiseCrypto.chaCha20Poly1305Decrypt(theirs, nonce, ad, k)), plain, `size ${size}`)
    const sealedList = new Uint8ArrayList(theirs.subarray(0, 7), theirs.subarray(7))
    assert.deepEqual(flat(noiseCrypto.chaCha20Poly1305Decrypt(asNoise(sealedList), nonce, ad, k)), plain)
  }
})

test('a tampered message, a wrong nonce or a wrong key is refused', () => {
  const k = crypto.randomBytes(32)
  const nonce = crypto.randomBytes(12)
  const ad = new Uint8Array(0)
  const sealed = flat(noiseCrypto.chaCha20Poly1305Encrypt(crypto.randomBytes(4096), nonce, ad, k))
  const tampered = Buffer.from(sealed)
  tampered[100] = (tampered[100] as number) ^ 1
  assert.throws(() => noiseCrypto.chaCha20Poly1305Decrypt(tampered, nonce, ad, k))
  assert.throws(() => noiseCrypto.chaCha20Poly1305Decrypt(sealed, crypto.randomBytes(12), ad, k))
  assert.throws(() => noiseCrypto.chaCha20Poly1305Decrypt(sealed, nonce, ad, crypto.randomBytes(32)))
})

test('one key object per key; a key changed in place gets a new one', () => {
  const k = crypto.randomBytes(32)
  const first = keyObjectFor(k)
  assert.equal(keyObjectFor(k), first, 'made once, then reused')
  const nonce = crypto.randomBytes(12)
  const plain = crypto.randomBytes(8192)
  crypto.randomFillSync(k)
  assert.notEqual(keyObjectFor(k), first)
  assert.deepEqual(
    flat(noiseCrypto.chaCha20Poly1305Encrypt(plain, nonce, new Uint8Array(0), k)),
    flat(pureJsCrypto.chaCha20Poly1305Encrypt(plain, nonce, new Uint8Array(0), k)),
    'sealed with the new key',
  )
})
