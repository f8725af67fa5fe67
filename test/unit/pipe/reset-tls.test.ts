/**
 * resetSocket() on a TLS socket (src/pipe/node.ts): a bulk link (src/p2p/bulk.ts) is a TLS socket,
 * and aborting it used to reset the TCP socket under it, which crashed Node 24.21 with SIGSEGV in
 * SSL_read while a read was under way (nodejs/node#62967). Here a link is reset from inside its
 * own 'data' handler, while both sides stream, many times over: the process must live, and the
 * peer must see the connection go.
 */

import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import * as net from 'node:net'
import { test } from 'node:test'
import * as tls from 'node:tls'
import { resetSocket } from '../../../src/pipe/node.ts'

const TLS = { minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3' } as const

test('a TLS socket reset from its own data handler mid-transfer: gone on both sides, no crash', {
  timeout: 60_000,
}, async () => {
  const key = randomBytes(32)
  const chunk = randomBytes(64 * 1024)
  const server = net.createServer((raw) => {
    const options: tls.TLSSocketOptions & Pick<tls.TlsOptions, 'pskCallback'> = {
      ...TLS,
      isServer: true,
      pskCallback: () => key,
    }
    const s = new tls.TLSSocket(raw, options)
    s.on('error', () => {})
    // Streams at the client until it goes.
    const pump = (): void => {
      while (!s.destroyed && s.write(chunk)) {}
    }
    s.on('secure', pump)
    s.on('drain', pump)
    s.resume()
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as net.AddressInfo).port
  try {
    for (let i = 0; i < 30; i++) {
      const client = tls.connect({
        ...TLS,
        host: '127.0.0.1',
        port,
        checkServerIdentity: () => undefined,
        pskCallback: () => ({ psk: key, identity: 'test' }),
      })
      client.on('error', () => {})
      await once(client, 'secureConnect')
      // Writing too, so that writes are in flight both ways when it goes.
      client.write(randomBytes(256 * 1024))
      let seen = 0
      const closed = once(client, 'close')
      client.on('data', (d: Buffer) => {
        seen += d.length
        if (seen > (i % 5) * 256 * 1024 && !client.destroyed) {
          assert.doesNotThrow(() => resetSocket(client))
        }
      })
      await closed
    }
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()))
  }
})
