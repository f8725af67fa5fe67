/**
 * The SOCKS5 handshake of the gateway (src/proxy/socks.ts), driven by the real curl where it is
 * installed and by hand-made bytes: CONNECT to a name under .peerup, username/password, the reply
 * codes curl reports, and bytes a client sends before the reply.
 */

import assert from 'node:assert/strict'
import { execFile, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import * as http from 'node:http'
import * as net from 'node:net'
import { describe, it } from 'node:test'
import { promisify } from 'node:util'
import {
  peerupTarget,
  type SocksHandshakeOptions,
  SocksReply,
  type SocksRequest,
  socksHandshake,
  socksReply,
} from '../../../src/proxy/socks.ts'

describe('peerupTarget', () => {
  it('reads <service>.<peer>.peerup and <peer>.peerup with the port', () => {
    assert.deepEqual(peerupTarget('web.home.peerup', 80), { peer: 'home', service: 'web' })
    assert.deepEqual(peerupTarget('HOME.PEERUP', 8080), { peer: 'HOME', service: 'port:8080' })
    for (const host of ['example.com', 'peerup', '.peerup', 'a.b.home.peerup', '.home.peerup']) {
      assert.equal(peerupTarget(host, 80), undefined, host)
    }
  })
})

/** A SOCKS server on loopback that sends `web.home.peerup` to `target` and answers the rest with `unknown`. */
async function gateway(
  t: { after: (fn: () => void) => void },
  target: number,
  options: Omit<SocksHandshakeOptions, 'signal'> = {},
  seen: SocksRequest[] = [],
): Promise<number> {
  const server = net.createServer(async (socket) => {
    socket.on('error', () => {})
    let request: SocksRequest
    try {
      request = await socksHandshake(socket, { ...options, signal: AbortSignal.timeout(5_000) })
    } catch {
      socket.end()
      return
    }
    seen.push(request)
    const to = peerupTarget(request.host, request.port)
    if (to?.peer !== 'home' || to.service !== 'web') {
      socksReply(socket, SocksReply.hostUnreachable)
      socket.end()
      return
    }
    const far = net.connect(target, '127.0.0.1')
    far.on('error', () => socket.destroy())
    await once(far, 'connect')
    socksReply(socket, SocksReply.succeeded)
    socket.pipe(far).pipe(socket)
    socket.resume()
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.after(() => server.close())
  return (server.address() as net.AddressInfo).port
}

async function web(t: { after: (fn: () => void) => void }): Promise<number> {
  const server = http.createServer((_req, res) => res.end('hello from b\n'))
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.after(() => server.close())
  return (server.address() as net.AddressInfo).port
}

const curl = spawnSync('curl', ['--version'])
const run = promisify(execFile)

async function curlVia(proxy: string, url: string): Promise<{ code: number; out: string; err: string }> {
  try {
    const r = await run('curl', ['-sS', '--max-time', '10', '--socks5-hostname', proxy, url])
    return { code: 0, out: r.stdout, err: r.stderr }
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string }
    return { code: e.code, out: e.stdout, err: e.stderr }
  }
}

describe('socksHandshake with curl', { skip: curl.error === undefined ? false : 'no curl' }, () => {
  it('CONNECT to web.home.peerup reaches the service, the name arriving unresolved', async (t) => {
    const seen: SocksRequest[] = []
    const port = await gateway(t, await web(t), {}, seen)
    const r = await curlVia(`127.0.0.1:${port}`, 'http://web.home.peerup/')
    assert.equal(r.code, 0, r.err)
    assert.equal(r.out, 'hello from b\n')
    assert.deepEqual(seen, [{ host: 'web.home.peerup', port: 80 }])
  })

  it('a name the gateway does not serve is refused with "host unreachable", which curl reports', async (t) => {
    const port = await gateway(t, await web(t))
    const r = await curlVia(`127.0.0.1:${port}`, 'http://nope.peerup/')
    assert.notEqual(r.code, 0)
    assert.match(r.err, /SOCKS5|socks/i)
    assert.match(r.err, /unreachable|\(4\)/i)
  })

  it('username and password: the right ones pass, wrong ones are refused before any request', async (t) => {
    const seen: SocksRequest[] = []
    const port = await gateway(t, await web(t), { credentials: { user: 'me', password: 's3cret' } }, seen)
    const ok = await curlVia(`me:s3cret@127.0.0.1:${port}`, 'http://web.home.peerup/')
    assert.equal(ok.code, 0, ok.err)
    assert.equal(ok.out, 'hello from b\n')
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
