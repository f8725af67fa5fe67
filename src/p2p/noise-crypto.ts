/**
 * The noise channel's ChaCha20-Poly1305 with one `KeyObject` per session key.
 *
 * @chainsafe/libp2p-noise's default crypto calls `createCipheriv()` with the raw 32-byte key for
 * every message, and node:crypto turns a raw key into a key object each time (`prepareSecretKey`,
 * `getKeyObjectSlots`): ~4–9 µs per message, as much as encrypting 16 KiB, and 7–9 % of every
 * hop's CPU in the bench's profiles (docs/benchmarks.md). noise takes a crypto implementation of
 * our choosing (`noise({ crypto })`), so this keeps its defaults and only hands node:crypto a key
 * object made once per key. Messages under 1,200 bytes still go to the WebAssembly implementation,
 * as in the default (faster there).
 *
 * @packageDocumentation
 */

import crypto, { type KeyObject } from 'node:crypto'
import type { ICryptoInterface } from '@chainsafe/libp2p-noise'
import { defaultCrypto } from '@chainsafe/libp2p-noise/crypto'
import { Uint8ArrayList } from 'uint8arraylist'

const CHACHA_POLY1305 = 'chacha20-poly1305'
const TAG_BYTES = 16
/** Below this, the default's WebAssembly ChaCha20-Poly1305 is faster than node:crypto. */
const SMALL_MESSAGE_BYTES = 1200

interface CachedKey {
  /** A copy of the key the object was made from: a key changed in place is noticed. */
  bytes: Buffer
  object: KeyObject
}

/** Key objects by the key array noise keeps for a session (one per direction). */
const keys = new WeakMap<Uint8Array, CachedKey>()

/** The key object for `k`, made once per key array (and again if its bytes ever change). */
export function keyObjectFor(k: Uint8Array): KeyObject {
  const cached = keys.get(k)
  if (cached?.bytes.equals(k)) {
    return cached.object
  }
  const bytes = Buffer.from(k)
  const object = crypto.createSecretKey(bytes)
  keys.set(k, { bytes, object })
  return object
}

type Encrypt = ICryptoInterface['chaCha20Poly1305Encrypt']
type Decrypt = ICryptoInterface['chaCha20Poly1305Decrypt']
/**
 * noise is built against its own copy of uint8arraylist (2.x); lists of either version are told
 * apart by a shared `Symbol.for()` mark, not by class, so ours are accepted wherever it takes one.
 */
type NoiseList = Exclude<ReturnType<Encrypt>, Uint8Array>

const encrypt: Encrypt = (plaintext, nonce, ad, k) => {
  const cipher = crypto.createCipheriv(CHACHA_POLY1305, keyObjectFor(k), nonce, { authTagLength: TAG_BYTES })
  cipher.setAAD(ad, { plaintextLength: plaintext.byteLength })
  if (plaintext instanceof Uint8Array) {
    const updated = cipher.update(plaintext)
    const final = cipher.final()
    const tag = cipher.getAuthTag()
    return Buffer.concat([updated, final, tag], updated.byteLength + final.byteLength + tag.byteLength)
  }
  const output = new Uint8ArrayList()
  for (const buf of plaintext) {
    output.append(cipher.update(buf))
  }
  const final = cipher.final()
  if (final.byteLength > 0) {
    output.append(final)
  }
  output.append(cipher.getAuthTag())
  return output as unknown as NoiseList
}

const decrypt: Decrypt = (ciphertext, nonce, ad, k) => {
  const authTag = ciphertext.subarray(ciphertext.length - TAG_BYTES)
  const decipher = crypto.createDecipheriv(CHACHA_POLY1305, keyObjectFor(k), nonce, {
    authTagLength: TAG_BYTES,
  })
  const text =
    ciphertext instanceof Uint8Array
      ? ciphertext.subarray(0, ciphertext.length - TAG_BYTES)
      : ciphertext.sublist(0, ciphertext.length - TAG_BYTES)
  decipher.setAAD(ad, { plaintextLength: text.byteLength })
  decipher.setAuthTag(authTag)
  if (text instanceof Uint8Array) {
    const output = decipher.update(text)
    const final = decipher.final()
    return final.byteLength > 0
      ? Buffer.concat([output, final], output.byteLength + final.byteLength)
      : output
  }
  const output = new Uint8ArrayList()
  for (const buf of text) {
    output.append(decipher.update(buf))
  }
  const final = decipher.final()
  if (final.byteLength > 0) {
    output.append(final)
  }
  return output as unknown as NoiseList
}

/** noise's default crypto, with the session's key objects kept (see the module's comment). */
export const noiseCrypto: ICryptoInterface = {
  ...defaultCrypto,
  chaCha20Poly1305Encrypt(plaintext, nonce, ad, k) {
    return plaintext.byteLength < SMALL_MESSAGE_BYTES
      ? defaultCrypto.chaCha20Poly1305Encrypt(plaintext, nonce, ad, k)
      : encrypt(plaintext, nonce, ad, k)
  },
  chaCha20Poly1305Decrypt(ciphertext, nonce, ad, k, dst) {
    return ciphertext.byteLength < SMALL_MESSAGE_BYTES
      ? defaultCrypto.chaCha20Poly1305Decrypt(ciphertext, nonce, ad, k, dst)
      : decrypt(ciphertext, nonce, ad, k)
  },
}
