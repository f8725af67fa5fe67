/**
 * SOCKS5 (RFC 1928) as the gateway's listener speaks it: the server side of the handshake up to
 * the CONNECT request, and the reply. Only CONNECT; authentication is none, or username/password
 * (RFC 1929) when credentials are set — which a listener bound beyond loopback requires. What the
 * request names is read by {@link peerupTarget}: `<service>.<peer>.peerup`, or `<peer>.peerup` and
 * the port.
 *
 * The handshake reads exactly the bytes it needs and gives back whatever came after the request
 * (a client may send data before the reply) with `socket.unshift()`, so nothing the client wrote is
 * lost before the pipe takes over.
 *
 * @packageDocumentation
 */

import { timingSafeEqual } from 'node:crypto'
import type * as net from 'node:net'
import { SERVICE_NAME_PATTERN, withoutPeerupDomain } from '../api/names.ts'
import { type GatewayTarget, HandshakeError, type HandshakeOptions, HandshakeReader } from './reader.ts'

/** The reply codes of RFC 1928 §6 that the gateway sends. */
export const SocksReply = {
  succeeded: 0x00,
  generalFailure: 0x01,
  notAllowed: 0x02,
  networkUnreachable: 0x03,
  hostUnreachable: 0x04,
  connectionRefused: 0x05,
  ttlExpired: 0x06,
  commandNotSupported: 0x07,
  addressTypeNotSupported: 0x08,
} as const

export type SocksReplyCode = (typeof SocksReply)[keyof typeof SocksReply]

/** A SOCKS5 handshake that failed; its `answer` is the reply code already sent, if any was. */
export class SocksError extends HandshakeError {
  override name = 'SocksError'
}

const VERSION = 5
const AUTH_NONE = 0x00
const AUTH_PASSWORD = 0x02
const NO_ACCEPTABLE = 0xff

/**
 * Runs the server side of a SOCKS5 handshake on `socket` up to the CONNECT request and returns it;
 * the caller then answers with {@link socksReply} and pipes the socket (left paused, with no
 * listeners of the handshake's). A request the gateway cannot serve (another command, wrong
 * credentials) is answered here, and the promise rejects with a {@link SocksError}: the caller
 * then closes the socket.
 */
export async function socksHandshake(socket: net.Socket, options: HandshakeOptions): Promise<GatewayTarget> {
  const reader = new HandshakeReader(socket, options.signal, (message) => new SocksError(message))
  try {
    const [version, count] = await reader.bytes(2)
    if (version !== VERSION) {
      throw new SocksError(`not a SOCKS5 client (version byte ${version})`)
    }
    const methods = await reader.bytes(count as number)
    const want = options.credentials === undefined ? AUTH_NONE : AUTH_PASSWORD
    if (!methods.includes(want)) {
      socket.write(Uint8Array.of(VERSION, NO_ACCEPTABLE))
      throw new SocksError(
        want === AUTH_NONE
          ? 'the client offers no way to connect without authentication'
          : 'the client offers no username/password authentication, which this listener requires',
      )
    }
    socket.write(Uint8Array.of(VERSION, want))
    let user: string | undefined
    if (options.credentials !== undefined) {
      user = await checkPassword(reader, socket, options.credentials)
    }
    const [v, command, , type] = await reader.bytes(4)
    if (v !== VERSION) {
      throw new SocksError(`malformed request (version byte ${v})`)
    }
    const host = await readAddress(reader, type as number, socket)
    const port = (await reader.bytes(2)).readUInt16BE(0)
    if (command !== 0x01) {
      socksReply(socket, SocksReply.commandNotSupported)
      throw new SocksError(
        `command ${command} is not supported (only CONNECT)`,
        SocksReply.commandNotSupported,
      )
    }
    reader.giveBack()
    return { host, port, ...(user === undefined ? {} : { user }) }
  } finally {
    reader.stop()
  }
}

/** Sends the reply to a CONNECT request (the bound address is reported as 0.0.0.0:0). */
export function socksReply(socket: net.Socket, code: SocksReplyCode): void {
  socket.write(Uint8Array.of(VERSION, code, 0, 0x01, 0, 0, 0, 0, 0, 0))
}

/**
 * The peer and the service a request names: `<service>.<peer>.peerup` (any port: the service
 * named), or `<peer>.peerup` and the port (the service the peer offers on that port, asked for as
 * `port:<n>`: docs/decisions/0009-gateway-names.md). A peer's name may hold dots (`my.box`):
 * `isPeerName` says whether the whole name is one, which then wins. Anything else is not for the
 * gateway: undefined.
 */
export function peerupTarget(
  host: string,
  port: number,
  isPeerName: (name: string) => boolean = () => false,
): { peer: string; service: string } | undefined {
  const name = withoutPeerupDomain(host)
  if (name === undefined || name.startsWith('.')) {
    return undefined
  }
  const dot = name.indexOf('.')
  if (dot < 0 || isPeerName(name)) {
    return { peer: name, service: `port:${port}` }
  }
  const service = name.slice(0, dot)
  const peer = name.slice(dot + 1)
  return SERVICE_NAME_PATTERN.test(service) && peer !== '' ? { peer, service } : undefined
}

async function checkPassword(
  reader: HandshakeReader,
  socket: net.Socket,
  credentials: { user: string; password: string },
): Promise<string> {
  const [version, userLength] = await reader.bytes(2)
  const user = (await reader.bytes(userLength as number)).toString('utf8')
  const [passwordLength] = await reader.bytes(1)
  const password = await reader.bytes(passwordLength as number)
  const ok = version === 0x01 && credentialsMatch(Buffer.from(user), password, credentials)
  socket.write(Uint8Array.of(0x01, ok ? 0x00 : 0x01))
  if (!ok) {
    // The password is never part of a message.
    throw new SocksError(
      `wrong username or password (user ${JSON.stringify(user.slice(0, 64))})`,
      SocksReply.notAllowed,
    )
  }
  return user
}

/** Whether a client's username and password are the ones wanted, compared in constant time. */
export function credentialsMatch(
  user: Buffer,
  password: Buffer,
  want: { user: string; password: string },
): boolean {
  // Both compared whatever the first gives, so the time says nothing about which was wrong.
  const userOk = same(user, Buffer.from(want.user))
  const passwordOk = same(password, Buffer.from(want.password))
  return userOk && passwordOk
}

function same(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b)
}

async function readAddress(reader: HandshakeReader, type: number, socket: net.Socket): Promise<string> {
  switch (type) {
    case 0x01:
      return [...(await reader.bytes(4))].join('.')
    case 0x03: {
      const [length] = await reader.bytes(1)
      return (await reader.bytes(length as number)).toString('latin1')
    }
    case 0x04: {
      const b = await reader.bytes(16)
      const groups = Array.from({ length: 8 }, (_, i) => b.readUInt16BE(i * 2).toString(16))
      return groups.join(':')
    }
    default:
      socksReply(socket, SocksReply.addressTypeNotSupported)
      throw new SocksError(`address type ${type} is not supported`, SocksReply.addressTypeNotSupported)
  }
}
