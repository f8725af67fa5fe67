/**
 * HTTP CONNECT (RFC 9110 §9.3.6) as the gateway's second listener speaks it, for tools that only
 * know HTTP proxies (`curl -x`, `git -c http.proxy=…`, npm, pip): the request head up to its empty
 * line, `Proxy-Authorization: Basic` when credentials are set, and the status line of the answer.
 * Only CONNECT: the gateway tunnels, it does not forward plain requests
 * (docs/decisions/0009-gateway-names.md). The head is read by the same exact-bytes reader as SOCKS
 * (src/proxy/reader.ts), so whatever a client sends after it is kept for the tunnel.
 *
 * @packageDocumentation
 */

import { STATUS_CODES } from 'node:http'
import type * as net from 'node:net'
import { type GatewayTarget, HandshakeError, type HandshakeOptions, HandshakeReader } from './reader.ts'
import { credentialsMatch } from './socks.ts'

/** The longest request head taken (curl's are a few hundred bytes). */
export const MAX_CONNECT_HEAD_BYTES = 16 * 1024

/** A CONNECT request refused; its `answer` is the HTTP status already sent, if any was. */
export class HttpConnectError extends HandshakeError {
  override name = 'HttpConnectError'
}

/**
 * Reads a CONNECT request on `socket` and returns its target; the caller then answers with
 * {@link httpConnectReply} and pipes the socket (left paused). A request the gateway cannot serve
 * (another method, a malformed head, missing or wrong credentials) is answered here, and the
 * promise rejects with an {@link HttpConnectError}.
 */
export async function httpConnectHandshake(
  socket: net.Socket,
  options: HandshakeOptions,
): Promise<GatewayTarget> {
  const reader = new HandshakeReader(socket, options.signal, (message) => new HttpConnectError(message))
  try {
    const refuse = (status: number, message: string, headers: string[] = []): HttpConnectError => {
      httpConnectReply(socket, status, message, headers)
      return new HttpConnectError(message, status)
    }
    const head = await reader.upTo('\r\n\r\n', MAX_CONNECT_HEAD_BYTES, () =>
      refuse(431, `the request head is longer than ${MAX_CONNECT_HEAD_BYTES} bytes`),
    )
    const [requestLine = '', ...fields] = head.toString('latin1').split('\r\n')
    const [method, authority, version, ...rest] = requestLine.split(' ')
    if (rest.length > 0 || !/^HTTP\/1\.[01]$/.test(version ?? '')) {
      throw refuse(400, 'not an HTTP/1.1 request')
    }
    if (method !== 'CONNECT') {
      throw refuse(
        405,
        `${(method ?? '').slice(0, 32)} is not supported: this proxy only tunnels (CONNECT); ask for an https:// URL, or tunnel plain HTTP too (curl --proxytunnel)`,
        ['Allow: CONNECT'],
      )
    }
    const target = /^(?:\[([0-9A-Fa-f:.]+)\]|([^\s:[\]]+)):(\d{1,5})$/.exec(authority ?? '')
    const port = Number(target?.[3])
    if (target === null || port < 1 || port > 65535) {
      throw refuse(400, 'CONNECT needs host:port')
    }
    let user: string | undefined
    if (options.credentials !== undefined) {
      user = basicUser(fields, options.credentials)
      if (user === undefined) {
        // What was given, if anything, is never part of a message.
        throw refuse(407, 'the proxy needs a username and password', [
          'Proxy-Authenticate: Basic realm="peerup"',
        ])
      }
    }
    reader.giveBack()
    return { host: (target[1] ?? target[2]) as string, port, ...(user === undefined ? {} : { user }) }
  } finally {
    reader.stop()
  }
}

/** The user of a `Proxy-Authorization: Basic` field whose credentials are the ones wanted. */
function basicUser(fields: string[], want: { user: string; password: string }): string | undefined {
  for (const field of fields) {
    const m = /^proxy-authorization:\s*basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(field)
    if (m === null) {
      continue
    }
    const decoded = Buffer.from(m[1] as string, 'base64')
    const colon = decoded.indexOf(':')
    if (colon >= 0 && credentialsMatch(decoded.subarray(0, colon), decoded.subarray(colon + 1), want)) {
      return decoded.subarray(0, colon).toString('utf8')
    }
  }
  return undefined
}

/**
 * Sends the answer to a CONNECT request: `200 Connection established`, after which the bytes are
 * the tunnel's, or a refusal with `message` as its body (curl prints the status).
 */
export function httpConnectReply(
  socket: net.Socket,
  status: number,
  message = '',
  headers: string[] = [],
): void {
  if (status === 200) {
    socket.write('HTTP/1.1 200 Connection established\r\n\r\n')
    return
  }
  const body = `${message}\n`
  socket.write(
    [
      `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}`,
      ...headers,
      'Content-Type: text/plain; charset=utf-8',
      `Content-Length: ${Buffer.byteLength(body)}`,
      'Connection: close',
      '',
      body,
    ].join('\r\n'),
  )
}
