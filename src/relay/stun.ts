/**
 * The relay's STUN responder (RFC 5389 Binding only): a node behind NAT sends a Binding request
 * to the relay's UDP port and learns, from the XOR-MAPPED-ADDRESS of the answer, the public
 * address and port its NAT gave that socket — the server-reflexive ICE candidate that lets two
 * NATed peers build a direct WebRTC path (docs/decisions/0002-webrtc-direct-path.md). Message
 * parsing and encoding come from `@msimerson/stun`; this module owns the socket, the lifecycle
 * and what is answered.
 *
 * @packageDocumentation
 */

import * as dgram from 'node:dgram'
import { once } from 'node:events'
import * as net from 'node:net'
import stun from '@msimerson/stun'
import type { Logger } from '../log/index.ts'
import { parseHostPort } from '../util/address.ts'
import type { Component } from '../util/components.ts'
import { appendStunAttribute, OTHER_ADDRESS, PEERUP_TIME } from '../util/stun.ts'
import { VERSION } from '../version.ts'
import { RelayStartError } from './errors.ts'

const { STUN_BINDING_REQUEST, STUN_BINDING_RESPONSE, STUN_ATTR_FINGERPRINT } = stun.constants

/** RFC 5389 §6: the fixed value in bytes 4–7 of every message that is not RFC 3489 legacy. */
const MAGIC_COOKIE = 0x2112a442

/** A STUN header is 20 bytes; anything shorter is not STUN. */
const HEADER_BYTES = 20

/** What an answer adds beside the mapped address. */
export interface AnswerOptions {
  /**
   * RFC 5780 OTHER-ADDRESS: the responder's second endpoint (`stun.alternate_listen_address`), so
   * that `peerup doctor` can compare the mappings towards two ports of one relay. An unspecified
   * host (`0.0.0.0`, `::`) means "the address you sent this request to".
   */
  other?: { address: string; port: number }
  /** The clock PEERUP-TIME reads (src/util/stun.ts); Date.now by default. */
  now?: () => number
}

/**
 * Answers one datagram: the Binding success response to send back to `from`, or `undefined` when
 * the datagram is to be dropped silently (RFC 5389 §7.3: a server discards what it cannot parse
 * and never answers indications or responses). A request carrying PEERUP-TIME gets the relay's
 * clock in the answer; others get exactly what they always got.
 */
export function answerBinding(
  datagram: Buffer,
  from: { address: string; port: number },
  options: AnswerOptions = {},
): Buffer | undefined {
  // Cheap checks first: whatever else lands on the port costs no decoding.
  if (
    datagram.length < HEADER_BYTES ||
    (datagram[0] ?? 0xff) > 0x3f ||
    datagram.readUInt32BE(4) !== MAGIC_COOKIE ||
    datagram.readUInt16BE(0) !== STUN_BINDING_REQUEST
  ) {
    return undefined
  }
  let request: ReturnType<typeof stun.decode>
  try {
    request = stun.decode(datagram)
  } catch {
    return undefined
  }
  // RFC 5389 §7.3: a message with a FINGERPRINT that does not match is not ours to answer.
  const fingerprinted = request.hasAttribute(STUN_ATTR_FINGERPRINT)
  if (fingerprinted && !stun.validateFingerprint(request)) {
    return undefined
  }
  const response = stun.createMessage(STUN_BINDING_RESPONSE, request.transactionId)
  // An IPv4 client on a dual-stack socket shows up as ::ffff:a.b.c.d; it asked about its IPv4 mapping.
  const address =
    from.address.startsWith('::ffff:') && net.isIPv4(from.address.slice(7))
      ? from.address.slice(7)
      : from.address
  response.addXorAddress(address, from.port)
  if (options.other !== undefined) {
    response.addAttribute(OTHER_ADDRESS, options.other.address, options.other.port)
  }
  response.addSoftware(`peerup-relay/${VERSION}`)
  if (request.hasAttribute(PEERUP_TIME)) {
    // The library does not encode attributes it does not know: appended by hand, the
    // FINGERPRINT (which must come last) after it.
    const time = Buffer.alloc(8)
    time.writeBigUInt64BE(BigInt(Math.max(0, Math.floor((options.now ?? Date.now)()))))
    return appendStunAttribute(response.toBuffer(), PEERUP_TIME, time, fingerprinted)
  }
  // Agents that fingerprint their requests (ICE agents do) expect it back (RFC 5389 §15.5).
  if (fingerprinted) {
    response.addFingerprint()
  }
  return response.toBuffer()
}

/**
 * The responder: `start()` binds the UDP socket on `listenAddress` (`host:port` or `[v6]:port`,
 * config `stun.listen_address`) and answers Binding requests on it, `stop()` closes it. A relay that cannot bind its STUN port does not start (a {@link RelayStartError}
 * saying which config key to change): nodes would otherwise lose their direct path unnoticed.
 */
export class StunResponder implements Component {
  /**
   * What the responder has done since it started (for logs and tests): Binding requests answered,
   * and datagrams dropped (not STUN, not a Binding request, malformed, or a bad FINGERPRINT).
   */
  readonly counters = { answered: 0, dropped: 0 }
  readonly #log: Logger
  readonly #listen: string
  #socket: dgram.Socket | undefined
  #address: { host: string; port: number } | undefined
  #closed: Promise<void> | undefined

  readonly #other: (() => { address: string; port: number } | undefined) | undefined

  /**
   * `other`: the relay's second responder (`stun.alternate_listen_address`), announced in every
   * answer as OTHER-ADDRESS once it listens.
   */
  constructor(
    components: { log: Logger },
    init: { listenAddress: string; other?: () => { address: string; port: number } | undefined },
  ) {
    this.#log = components.log
    this.#listen = init.listenAddress
    this.#other = init.other
  }

  /** The bound address, or undefined when not listening (for the other responder's OTHER-ADDRESS). */
  get endpoint(): { address: string; port: number } | undefined {
    return this.#address === undefined ? undefined : { address: this.#address.host, port: this.#address.port }
  }

  /** The bound address (the real port when the config said 0); only once started. */
  get address(): { host: string; port: number } {
    if (this.#address === undefined) {
      throw new Error('the STUN responder is not listening')
    }
    return this.#address
  }

  async start(): Promise<void> {
    const { host, port } = parseHostPort(this.#listen)
    const socket = dgram.createSocket({ type: net.isIPv6(host) ? 'udp6' : 'udp4' })
    const log = this.#log
    socket.on('message', (datagram, rinfo) => {
      const other = this.#other?.()
      const answer = answerBinding(datagram, rinfo, other === undefined ? {} : { other })
      if (answer === undefined) {
        this.counters.dropped++
        return
      }
      this.counters.answered++
      socket.send(answer, rinfo.port, rinfo.address, (err) => {
        if (err !== null) {
          log.debug('STUN answer not sent', { to: `${rinfo.address}:${rinfo.port}`, error: err.message })
        }
      })
    })
    try {
      socket.bind(port, host)
      await once(socket, 'listening')
    } catch (err) {
      socket.close()
      throw new RelayStartError(`cannot listen for STUN on udp ${this.#listen}: ${(err as Error).message}`, {
        hint: 'pick another stun.listen_address in relay-server.yaml, or set stun.enabled: false (nodes then get no direct path across NAT)',
        cause: err,
      })
    }
    // After binding, a socket error (e.g. ICMP-triggered on some systems) must not crash the relay.
    socket.on('error', (err) => log.warn('STUN socket error', { error: err.message }))
    const bound = socket.address()
    this.#socket = socket
    this.#address = { host: bound.address, port: bound.port }
    this.#closed = undefined
    log.info('STUN responder listening', { listen: `udp ${bound.address}:${bound.port}` })
  }

  /** Closes the socket; safe to call twice. */
  stop(): Promise<void> {
    const socket = this.#socket
    if (socket === undefined) {
      return this.#closed ?? Promise.resolve()
    }
    this.#socket = undefined
    this.#closed = new Promise<void>((resolve) => socket.close(() => resolve()))
    return this.#closed
  }
}
