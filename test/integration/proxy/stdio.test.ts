import assert from 'node:assert/strict'
import type * as net from 'node:net'
import { PassThrough } from 'node:stream'
import { test } from 'node:test'
import { configureLogging, createLogger } from '../../../src/log/index.ts'
import { stdioEnd } from '../../../src/pipe/node.ts'
import { pipe } from '../../../src/pipe/pipe.ts'
import { serviceStreamEnd } from '../../../src/pipe/stream.ts'
import { SERVICE_HANDLE_OPTIONS } from '../../../src/proxy/constants.ts'
import { createServiceHandler } from '../../../src/proxy/service.ts'
import {
  createNodePair,
  type Received,
  receiveAll,
  sendRandom,
  startTcpServer,
} from '../../helpers/libp2p-pair.ts'

configureLogging({ level: 'warn' })

const MiB = 1024 * 1024

/** Exposes a local TCP service on the pair's server node and returns its protocol. */
async function exposeService(
  t: Parameters<typeof createNodePair>[0],
  onSocket: (socket: net.Socket) => void,
) {
  const pair = await createNodePair(t)
  const service = await startTcpServer(t, onSocket)
  const handler = createServiceHandler({
    name: 'stdio',
    localAddress: `127.0.0.1:${service.port}`,
    isAllowed: () => true,
    log: createLogger('test.proxy'),
  })
  await pair.server.handle('/peerup/stdio/1.0.0', handler, SERVICE_HANDLE_OPTIONS)
  t.after(() => handler.close())
  return pair
}

test('stdio mode: 16 MiB each way byte-exact, half-close both ways', { timeout: 30_000 }, async (t) => {
  const { promise: serverSide, resolve } = Promise.withResolvers<{
    done: Promise<{ received: Received; sent: string }>
  }>()
  const pair = await exposeService(t, (socket) => {
    resolve({
      done: (async () => {
        const received = await receiveAll(socket)
        return { received, sent: await sendRandom(socket, 16 * MiB) }
      })(),
    })
  })
  const stream = await pair.openStream('/peerup/stdio/1.0.0')
  const stdin = new PassThrough()
  const stdout = new PassThrough()
  const downloaded = receiveAll(stdout)
  const proxied = pipe(stdioEnd(stdin, stdout), serviceStreamEnd(stream))

  // stdin EOF half-closes the stream; the service answers only after it saw that end.
  const uploaded = await sendRandom(stdin, 16 * MiB)
  const result = await proxied
  const server = await (await serverSide).done

  assert.equal(result.reset, false)
  assert.equal(result.bytesOut, 16 * MiB)
  assert.equal(result.bytesIn, 16 * MiB)
  assert.equal(server.received.sha256, uploaded)
  assert.equal((await downloaded).sha256, server.sent, 'stdout ended after exactly what the service sent')
})

test('stdio mode: a reset of the service breaks stdout instead of ending it', {
  timeout: 30_000,
}, async (t) => {
  const pair = await exposeService(t, (socket) => {
    // Only once the session is up: a reset before that would be a failed dial, another test.
    socket.once('data', () => {
      sendRandom(socket, MiB, { end: false }).then(() => socket.resetAndDestroy())
    })
  })
  const stream = await pair.openStream('/peerup/stdio/1.0.0')
  const stdin = new PassThrough()
  const stdout = new PassThrough()
  let received = 0
  const downloaded = receiveAll(stdout, (n) => {
    received += n
  })
  const proxied = pipe(stdioEnd(stdin, stdout), serviceStreamEnd(stream))
  stdin.write('hello')
  const result = await proxied
  assert.equal(result.reset, true)
  assert.ok(result.error)
  await assert.rejects(downloaded, /closed without an end/)
  assert.ok(received > 0, 'the session was up before the reset')
})
