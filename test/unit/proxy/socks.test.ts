/**
 * The SOCKS5 handshake of the gateway (src/proxy/socks.ts), driven by the real curl where it is
 * installed and by hand-made bytes: CONNECT to a name under .peerup, username/password, the reply
 * codes curl reports, and bytes a client sends before the reply.
 */

import assert from 'node:assert/strict'
import { once } from 'node:events'
import * as net from 'node:net'
import { describe, it } from 'node:test'
import type { GatewayTarget, HandshakeOptions } from '../../../src/proxy/reader.ts'
import { peerupTarget, SocksReply, socksHandshake, socksReply } from '../../../src/proxy/socks.ts'
import { curl, NO_CURL, tunnelServer, webServer } from '../../helpers/curl.ts'

describe('peerupTarget', () => {
  it('reads <service>.<peer>.peerup and <peer>.peerup with the port', () => {
    assert.deepEqual(peerupTarget('web.home.peerup', 80), { peer: 'home', service: 'web' })
    assert.deepEqual(peerupTarget('HOME.PEERUP', 8080), { peer: 'HOME', service: 'port:8080' })
    for (const host of [
      'example.com',
      'peerup',
      '.peerup',
      'Web.home.peerup',
      '.home.peerup',
      'web..peerup',
    ]) {
      assert.equal(peerupTarget(host, 80), undefined, host)
    }
  })

  it('takes a peer name with dots whole when it is one, else the service is the first label', () => {
    const isPeerName = (n: string) => n === 'my.box'
    assert.deepEqual(peerupTarget('my.box.peerup', 22, isPeerName), { peer: 'my.box', service: 'port:22' })
    assert.deepEqual(peerupTarget('web.my.box.peerup', 80, isPeerName), { peer: 'my.box', service: 'web' })
    assert.deepEqual(peerupTarget('a.b.home.peerup', 80), { peer: 'b.home', service: 'a' })
  })
})

/** A SOCKS server on loopback that sends `web.home.peerup` to `target` and answers the rest with `unknown`. */
function gateway(
  t: { after: (fn: () => void) => void },
  target: number,
  options: Omit<HandshakeOptions, 'signal'> = {},
  seen: GatewayTarget[] = [],
): Promise<number> {
  return tunnelServer(
    t,
    target,
    (socket, signal) => socksHandshake(socket, { ...options, signal }),
    (socket, request) => {
      const to = peerupTarget(request.host, request.port)
      const ok = to?.peer === 'home' && to.service === 'web'
      socksReply(socket, ok ? SocksReply.succeeded : SocksReply.hostUnreachable)
      return ok
    },
    seen,
  )
}

/** curl through the SOCKS5 gateway on `proxy`, with the name handed to it. */
const curlVia = (proxy: string, url: string) => curl(['--socks5-hostname', proxy, url])

describe('socksHandshake with curl', { skip: NO_CURL }, () => {
  it('CONNECT to web.home.peerup reaches the service, the name arriving unresolved', async (t) => {
    const seen: GatewayTarget[] = []
    const port = await gateway(t, await webServer(t), {}, seen)
    const r = await curlVia(`127.0.0.1:${port}`, 'http://web.home.peerup/')
    assert.equal(r.code, 0, r.err)
    assert.equal(r.out, 'hello from b /\n')
    assert.deepEqual(seen, [{ host: 'web.home.peerup', port: 80 }])
  })

  it('a name the gateway does not serve is refused with "host unreachable", which curl reports', async (t) => {
    const port = await gateway(t, await webServer(t))
    const r = await curlVia(`127.0.0.1:${port}`, 'http://nope.peerup/')
    assert.notEqual(r.code, 0)
    assert.match(r.err, /SOCKS5|socks/i)
    assert.match(r.err, /unreachable|\(4\)/i)
  })

  it('username and password: the right ones pass, wrong ones are refused before any request', async (t) => {
    const seen: GatewayTarget[] = []
    const port = await gateway(
      t,
      await webServer(t),
      { credentials: { user: 'me', password: 's3cret' } },
      seen,
    )
    const ok = await curlVia(`me:s3cret@127.0.0.1:${port}`, 'http://web.home.peerup/')
    assert.equal(ok.code, 0, ok.err)
    assert.equal(ok.out, 'hello from b /\n')
    const bad = await curlVia(`me:wrong@127.0.0.1:${port}`, 'http://web.home.peerup/')
    assert.notEqual(bad.code, 0)
    const none = await curlVia(`127.0.0.1:${port}`, 'http://web.home.peerup/')
    assert.notEqual(none.code, 0)
    assert.deepEqual(seen, [{ host: 'web.home.peerup', port: 80, user: 'me' }])
  })
})

describe('socksHandshake by hand', () => {
  it('keeps the bytes a client sends before the reply', async (t) => {
    const echo = net.createServer((s) => s.pipe(s))
    echo.listen(0, '127.0.0.1')
    await once(echo, 'listening')
    t.after(() => echo.close())
    const port = await gateway(t, (echo.address() as net.AddressInfo).port)
    const client = net.connect(port, '127.0.0.1')
    await once(client, 'connect')
    const name = Buffer.from('web.home.peerup')
    // Greeting, request and data in one write, as an optimistic client does.
    client.write(
      Buffer.concat([
        Buffer.from([5, 1, 0]),
        Buffer.from([5, 1, 0, 3, name.length]),
        name,
        Buffer.from([0, 80]),
        Buffer.from('early bytes'),
      ]),
    )
    let got = Buffer.alloc(0)
    const want = 2 + 10 + 'early bytes'.length
    while (got.length < want) {
      const [chunk] = (await once(client, 'data')) as [Buffer]
      got = Buffer.concat([got, chunk])
    }
    client.destroy()
    assert.deepEqual([...got.subarray(0, 2)], [5, 0])
    assert.deepEqual([...got.subarray(2, 4)], [5, SocksReply.succeeded])
    assert.equal(got.subarray(12).toString(), 'early bytes')
  })

  it('answers another command with "command not supported"', async (t) => {
    const port = await gateway(t, 9)
    const client = net.connect(port, '127.0.0.1')
    await once(client, 'connect')
    client.write(Buffer.from([5, 1, 0, 5, 2, 0, 1, 127, 0, 0, 1, 0, 80]))
    let got = Buffer.alloc(0)
    while (got.length < 4) {
      const [chunk] = (await once(client, 'data')) as [Buffer]
      got = Buffer.concat([got, chunk])
    }
    client.destroy()
    assert.deepEqual([...got.subarray(0, 4)], [5, 0, 5, SocksReply.commandNotSupported])
  })
})
