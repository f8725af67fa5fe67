import assert from 'node:assert/strict'
import type * as net from 'node:net'
import { test } from 'node:test'
import { configureLogging } from '../../../src/log/index.ts'
import { connectTcp, receiveAll, sendRandom, startProxy } from '../../helpers/libp2p-pair.ts'

configureLogging({ level: 'warn' })

const KiB = 1024

test('100 parallel proxied connections, 256 KiB each way, all byte-exact', { timeout: 60_000 }, async (t) => {
  const connections = 100
  const size = 256 * KiB
  // Each service session echoes nothing: it reads the upload to its end, then sends its own bytes.
  const sessions: Array<Promise<{ received: string; sent: string }>> = []
  const { listener, pair } = await startProxy(t, {
    onServiceSocket: (socket: net.Socket) => {
      sessions.push(
        (async () => {
          const received = await receiveAll(socket)
          return { received: received.sha256, sent: await sendRandom(socket, size) }
        })(),
      )
    },
  })

  const clients = await Promise.all(
    Array.from({ length: connections }, async () => {
      const socket = await connectTcp(t, listener.address.port)
      const download = receiveAll(socket)
      const uploaded = await sendRandom(socket, size)
      return { uploaded, downloaded: await download }
    }),
  )

  // 100 streams of one protocol on one connection: past libp2p's defaults of 32 in and 64 out.
  assert.equal(pair.client.getConnections().length, 1)
  const server = await Promise.all(sessions)
  assert.equal(server.length, connections)
  const uploadedOnServer = new Set(server.map((s) => s.received))
  const sentByServer = new Set(server.map((s) => s.sent))
  for (const c of clients) {
    assert.equal(c.downloaded.bytes, size)
    assert.ok(uploadedOnServer.has(c.uploaded), 'an upload arrived intact')
    assert.ok(sentByServer.has(c.downloaded.sha256), 'a download arrived intact')
  }
})
