/**
 * The client side of STUN Binding (RFC 5389), as `peerup doctor` uses it to measure this node's
 * NAT against the relays' responders (src/relay/stun.ts), and the one attribute of ours both sides
 * share: PEERUP-TIME, the relay's clock (docs/decisions/0012-doctor-nat-and-clock.md).
 *
 * @packageDocumentation
 */

import { randomBytes } from 'node:crypto'
import type * as dgram from 'node:dgram'
import * as zlib from 'node:zlib'

/** RFC 5389 §6: bytes 4–7 of every message. */
export const STUN_MAGIC_COOKIE = 0x2112a442

const BINDING_REQUEST = 0x0001
const BINDING_SUCCESS = 0x0101
const XOR_MAPPED_ADDRESS = 0x0020
const FINGERPRINT = 0x8028
const FINGERPRINT_XOR = 0x5354554e

/** RFC 5780 §7.4: where the server answers from a second address or port. */
export const OTHER_ADDRESS = 0x802c

/**
 * PEERUP-TIME, a comprehension-optional attribute (≥ 0x8000: agents that do not know it ignore
 * it, RFC 5389 §15): in a request, an empty value asks for the relay's clock; in the answer, its
 * milliseconds since the epoch as an unsigned 64-bit integer.
 */
export const PEERUP_TIME = 0xc0de

/** How long one Binding exchange waits for its answer, retransmitting meanwhile. */
export const DEFAULT_STUN_TIMEOUT_MS = 2_000

/** RFC 5389 §7.2.1 starts retransmitting at 500 ms; a lost datagram costs no more than that. */
const RETRANSMIT_MS = 500

/** A transport address. */
export interface TransportAddress {
  address: string
  port: number
}

/** What one Binding request learned. */
export interface BindingAnswer {
  /** Where the server saw the request come from: our NAT's public mapping of the socket. */
  mapped: TransportAddress
  /** RFC 5780 OTHER-ADDRESS: the server's second endpoint, when it has one. */
  other?: TransportAddress
  /** The server's clock (PEERUP-TIME), ms since the epoch, when it told it. */
  serverTimeMs?: number
  /** From the first send to the answer (retransmissions included). */
  rttMs: number
  /** Our clock when the answer arrived, ms since the epoch. */
  receivedAtMs: number
}

/** A Binding request asking for PEERUP-TIME: the bytes and the transaction id its answer carries. */
export function bindingRequest(): { transactionId: Buffer; datagram: Buffer } {
  const transactionId = randomBytes(12)
  const header = Buffer.alloc(20)
  header.writeUInt16BE(BINDING_REQUEST, 0)
  header.writeUInt16BE(4, 2)
  header.writeUInt32BE(STUN_MAGIC_COOKIE, 4)
  transactionId.copy(header, 8)
  const attr = Buffer.alloc(4)
  attr.writeUInt16BE(PEERUP_TIME, 0)
  return { transactionId, datagram: Buffer.concat([header, attr]) }
}

/** The attributes of a message, in order (a value is a view into `msg`). */
export function stunAttributes(msg: Buffer): Array<{ type: number; value: Buffer }> {
  const out: Array<{ type: number; value: Buffer }> = []
  const end = Math.min(msg.length, 20 + msg.readUInt16BE(2))
  let at = 20
  while (at + 4 <= end) {
    const type = msg.readUInt16BE(at)
    const length = msg.readUInt16BE(at + 2)
    if (at + 4 + length > end) {
      break
    }
    out.push({ type, value: msg.subarray(at + 4, at + 4 + length) })
    at += 4 + Math.ceil(length / 4) * 4
  }
  return out
}

/**
 * Appends one attribute to an encoded message and fixes its length; when `fingerprint` is set,
 * then a FINGERPRINT (RFC 5389 §15.5) over the whole, as the relay does for ICE agents.
 */
export function appendStunAttribute(msg: Buffer, type: number, value: Buffer, fingerprint: boolean): Buffer {
  const padded = Buffer.alloc(Math.ceil(value.length / 4) * 4)
  value.copy(padded)
  const head = Buffer.alloc(4)
  head.writeUInt16BE(type, 0)
  head.writeUInt16BE(value.length, 2)
  let out = Buffer.concat([msg, head, padded])
  out.writeUInt16BE(out.length - 20 + (fingerprint ? 8 : 0), 2)
  if (fingerprint) {
    const fp = Buffer.alloc(8)
    fp.writeUInt16BE(FINGERPRINT, 0)
    fp.writeUInt16BE(4, 2)
    fp.writeUInt32BE((zlib.crc32(out) ^ FINGERPRINT_XOR) >>> 0, 4)
    out = Buffer.concat([out, fp])
  }
  return out
}

/** Reads an (XOR-)MAPPED-ADDRESS style value: family, port, address (RFC 5389 §15.1–15.2). */
function readAddress(value: Buffer, xor: Buffer | undefined): TransportAddress | undefined {
  const family = value[1]
  if (value.length < 8) {
    return undefined
  }
  const mask = (i: number): number => (xor === undefined ? 0 : (xor[i] ?? 0))
  const port = value.readUInt16BE(2) ^ ((mask(0) << 8) | mask(1))
  if (family === 0x01) {
    const bytes = [0, 1, 2, 3].map((i) => (value[4 + i] ?? 0) ^ mask(i))
    return { address: bytes.join('.'), port }
  }
  if (family === 0x02 && value.length >= 20) {
    const bytes = Buffer.from(Array.from({ length: 16 }, (_v, i) => (value[4 + i] ?? 0) ^ mask(i)))
    const groups = Array.from({ length: 8 }, (_v, i) => bytes.readUInt16BE(i * 2).toString(16))
    return { address: groups.join(':'), port }
  }
  return undefined
}

/**
 * The answer in `datagram` to the request `transactionId`, or undefined when the datagram is
 * something else (another transaction, not a Binding success, no mapped address).
 */
export function parseBindingAnswer(
  datagram: Buffer,
  transactionId: Buffer,
): Omit<BindingAnswer, 'rttMs' | 'receivedAtMs'> | undefined {
  if (
    datagram.length < 20 ||
    datagram.readUInt16BE(0) !== BINDING_SUCCESS ||
    datagram.readUInt32BE(4) !== STUN_MAGIC_COOKIE ||
    !datagram.subarray(8, 20).equals(transactionId)
  ) {
    return undefined
  }
  // XOR with the cookie, then the transaction id (RFC 5389 §15.2).
  const xor = datagram.subarray(4, 20)
  let mapped: TransportAddress | undefined
  let other: TransportAddress | undefined
  let serverTimeMs: number | undefined
  for (const { type, value } of stunAttributes(datagram)) {
    if (type === XOR_MAPPED_ADDRESS) {
      mapped = readAddress(value, xor)
    } else if (type === OTHER_ADDRESS) {
      other = readAddress(value, undefined)
    } else if (type === PEERUP_TIME && value.length === 8) {
      serverTimeMs = Number(value.readBigUInt64BE(0))
    }
  }
  if (mapped === undefined) {
    return undefined
  }
  return {
    mapped,
    ...(other === undefined ? {} : { other }),
    ...(serverTimeMs === undefined ? {} : { serverTimeMs }),
  }
}

/**
 * Sends a Binding request from `socket` (bound already) to `host:port` and resolves with the
 * answer, or with undefined when none came within `timeoutMs` (UDP blocked, no responder). Several
 * exchanges may share the socket at once: each answer is matched by its transaction id.
 */
export function stunBinding(
  socket: dgram.Socket,
  target: TransportAddress,
  options: { timeoutMs?: number; signal?: AbortSignal } = {},
): Promise<BindingAnswer | undefined> {
  const { transactionId, datagram } = bindingRequest()
  const started = performance.now()
  return new Promise((resolve) => {
    const send = (): void => {
      socket.send(datagram, target.port, target.address, () => {
        // A send error (no route, ICMP) is the same as no answer: the timer settles it.
      })
    }
    const done = (answer: BindingAnswer | undefined): void => {
      clearInterval(retransmit)
      clearTimeout(timer)
      socket.off('message', onMessage)
      options.signal?.removeEventListener('abort', onAbort)
      resolve(answer)
    }
    const onMessage = (msg: Buffer): void => {
      const answer = parseBindingAnswer(msg, transactionId)
      if (answer !== undefined) {
        done({ ...answer, rttMs: performance.now() - started, receivedAtMs: Date.now() })
      }
    }
    const onAbort = (): void => done(undefined)
    socket.on('message', onMessage)
    options.signal?.addEventListener('abort', onAbort, { once: true })
    const retransmit = setInterval(send, RETRANSMIT_MS)
    const timer = setTimeout(() => done(undefined), options.timeoutMs ?? DEFAULT_STUN_TIMEOUT_MS)
    send()
  })
}
