/**
 * The tiny protocol the benchmark's own client and server speak over every path under test, and
 * the payload both sides can regenerate, so the server can check samples of what arrived.
 *
 * The client's first byte picks the mode:
 * - `T` + length (8 bytes BE) + seed (4 bytes BE): the client sends `length` bytes of payload; the
 *   server counts them, compares sampled MiBs with what it expects and answers `K` (or `X` + reason);
 * - `E`: echo everything back until the client ends (latency, held connections).
 *
 * @packageDocumentation
 */

import { createCipheriv, createHash } from 'node:crypto'

/** Payload is made of 1 MiB blocks: the same pseudo-random block with its index in the first 4 bytes. */
export const BLOCK_BYTES = 1024 * 1024

/** Every SAMPLE_EVERY-th MiB (and the last one) is compared byte for byte by the server. */
export const SAMPLE_EVERY = 8

/** Mode bytes. */
export const MODE_THROUGHPUT = 0x54 // 'T'
export const MODE_ECHO = 0x45 // 'E'
export const REPLY_OK = 0x4b // 'K'
export const REPLY_ERROR = 0x58 // 'X'

/** Length of the throughput header: mode, length, seed. */
export const THROUGHPUT_HEADER_BYTES = 1 + 8 + 4

/** The pseudo-random block of a seed: AES-256-CTR of zeros, so it is fast and incompressible. */
export function payloadBlock(seed: number): Buffer {
  const key = createHash('sha256').update(`peerup-bench-${seed}`).digest()
  const cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16))
  return Buffer.concat([cipher.update(Buffer.alloc(BLOCK_BYTES)), cipher.final()])
}

/** The `index`-th MiB of the payload of `block` (a fresh copy). */
export function payloadMiB(block: Buffer, index: number): Buffer {
  const out = Buffer.from(block)
  out.writeUInt32BE(index >>> 0, 0)
  return out
}

/** Whether MiB `index` of a payload of `totalMiB` is checked. */
export function isSampled(index: number, totalMiB: number): boolean {
  return index % SAMPLE_EVERY === 0 || index === totalMiB - 1
}
