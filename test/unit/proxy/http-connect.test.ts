/**
 * The HTTP CONNECT handshake of the gateway (src/proxy/http-connect.ts): driven by the real curl
 * where it is installed (`curl -p -x`, `--proxy-user`) and by hand-made requests: the target, the
 * login, the answers to what it does not serve, and bytes a client sends right after its head.
 */

import assert from 'node:assert/strict'
import { once } from 'node:events'
import * as net from 'node:net'
import { describe, it } from 'node:test'
import { httpConnectHandshake, httpConnectReply } from '../../../src/proxy/http-connect.ts'
import type { GatewayTarget, HandshakeOptions } from '../../../src/proxy/reader.ts'
import { curl, NO_CURL, tunnelServer, webServer } from '../../helpers/curl.ts'

type After = { after: (fn: () => void) => void }

/** A CONNECT proxy on loopback that tunnels `web.home.peerup:*` to `target` and answers the rest 404. */
function proxy(
  t: After,
  target: number,
  options: Omit<HandshakeOptions, 'signal'> = {},
  seen: GatewayTarget[] = [],
): Promise<number> {
  return tunnelServer(
    t,
    target,
    (socket, signal) => httpConnectHandshake(socket, { ...options, signal }),
    (socket, request) => {
      const ok = request.host === 'web.home.peerup'
      httpConnectReply(socket, ok ? 200 : 404, ok ? '' : `${request.host} is not a peer's name`)
      return ok
    },
    seen,
  )
}

/** Sends `request` raw and returns everything the proxy answered until it closed. */
async function raw(port: number, request: string): Promise<string> {
  const socket = net.connect(port, '127.0.0.1')
  socket.on('error', () => {})
  let answer = ''
  socket.setEncoding('latin1').on('data', (text: string) => {
    answer += text
  })
  socket.write(request)
  await once(socket, 'close')
  return answer
}

describe('httpConnectHandshake with curl', { skip: NO_CURL }, () => {
  it('curl -p -x tunnels to the name it gave, unresolved', async (t) => {
    const seen: GatewayTarget[] = []
    const port = await proxy(t, await webServer(t), {}, seen)
    const r = await curl(['-p', '-x', `http://127.0.0.1:${port}`, 'http://web.home.peerup/x'])
    assert.equal(r.code, 0, r.err)
    assert.equal(r.out, 'hello from b /x\n')
    assert.deepEqual(seen, [{ host: 'web.home.peerup', port: 80 }])
  })

  it('a refusal is a status curl reports', async (t) => {
    const port = await proxy(t, await webServer(t))
    const r = await curl(['-p', '-x', `http://127.0.0.1:${port}`, 'http://nope.peerup/'])
    assert.equal(r.code, 56)
    assert.match(r.err, /CONNECT tunnel failed, response 404/)
  })

  it('with a login: the right one passes, a wrong one and none get 407', async (t) => {
    const seen: GatewayTarget[] = []
    const port = await proxy(
      t,
      await webServer(t),
      { credentials: { user: 'me', password: 's3 cret' } },
      seen,
    )
    const url = 'http://web.home.peerup/'
    const ok = await curl(['-p', '-x', `http://127.0.0.1:${port}`, '--proxy-user', 'me:s3 cret', url])
    assert.equal(ok.code, 0, ok.err)
    for (const login of [['--proxy-user', 'me:wrong'], []]) {
      const r = await curl(['-p', '-x', `http://127.0.0.1:${port}`, ...login, url])
      assert.match(r.err, /response 407/)
    }
    assert.deepEqual(seen, [{ host: 'web.home.peerup', port: 80, user: 'me' }])
  })
})

describe('httpConnectHandshake by hand', () => {
  it('answers what it does not serve: another method 405, a malformed request 400, a huge head 431', async (t) => {
    const port = await proxy(t, await webServer(t))
    const get = await raw(port, 'GET http://web.home.peerup/ HTTP/1.1\r\nHost: web.home.peerup\r\n\r\n')
    assert.match(get, /^HTTP\/1\.1 405 Method Not Allowed\r\n/)
    assert.match(get, /\r\nAllow: CONNECT\r\n/)
    assert.match(get, /\r\n\r\nGET is not supported: this proxy only tunnels \(CONNECT\)/)
    for (const bad of [
      'CONNECT web.home.peerup HTTP/1.1\r\n\r\n',
      'CONNECT a:1 SPDY/3\r\n\r\n',
      'hello\r\n\r\n',
    ]) {
      assert.match(await raw(port, bad), /^HTTP\/1\.1 400 Bad Request\r\n/, JSON.stringify(bad))
    }
    const huge = await raw(port, `CONNECT web.home.peerup:80 HTTP/1.1\r\nX: ${'a'.repeat(20_000)}\r\n\r\n`)
    assert.match(huge, /^HTTP\/1\.1 431 /)
  })

  it('keeps the bytes a client sends right after its head', async (t) => {
    const echo = net.createServer((s) => s.pipe(s))
    echo.listen(0, '127.0.0.1')
    await once(echo, 'listening')
    t.after(() => echo.close())
    const port = await proxy(t, (echo.address() as net.AddressInfo).port)
    const client = net.connect(port, '127.0.0.1')
    await once(client, 'connect')
    client.write('CONNECT web.home.peerup:7 HTTP/1.1\r\nHost: web.home.peerup:7\r\n\r\nearly bytes')
    let got = ''
    client.setEncoding('latin1').on('data', (text: string) => {
      got += text
    })
    while (!got.endsWith('early bytes')) {
      await once(client, 'data')
    }
    client.destroy()
    assert.equal(got, 'HTTP/1.1 200 Connection established\r\n\r\nearly bytes')
  })
})
