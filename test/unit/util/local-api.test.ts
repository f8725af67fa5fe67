/**
 * The local API server's limits, on a real server on a Unix socket with shortened timeouts: a
 * client that sends nothing, or its headers a byte at a time, is cut at the headers timeout; one
 * that sends its body a byte at a time, at the request timeout; an answer that streams, and an
 * upgraded socket, outlive both; past the connection cap a new client is closed at once while
 * the others are still answered. Every timing is measured from events (a socket's `close`, a
 * chunk's arrival), never asserted by sleeping.
 */

import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import * as net from 'node:net'
import * as path from 'node:path'
import { afterEach, describe, it, type TestContext } from 'node:test'
import {
  API_LIMITS,
  type ApiLimits,
  createLocalApiServer,
  HEADERS_TIMEOUT_MS,
  MAX_API_CONNECTIONS,
  REQUEST_TIMEOUT_MS,
} from '../../../src/util/local-api.ts'
import { listenOnSocket } from '../../../src/util/socket.ts'
import { tempDir } from '../../helpers/cli.ts'

const HEADERS_MS = 300
const REQUEST_MS = 900
const TICK_MS = 100

/** A server with a plain route, a streaming route and an upgrade route that both tick every 100 ms. */
async function serve(t: TestContext, limits: Partial<ApiLimits>) {
  const dir = await tempDir(t)
  const socketPath = path.join(dir, 'api.sock')
  // Made here, sent only in headers: never printed.
  const cookie = randomBytes(32).toString('hex')
  const server = createLocalApiServer({
    version: 'test',
    cookie: () => cookie,
    limits,
    routes: [
      { method: 'GET', path: '/v1/status', handler: async () => ({ data: { ok: true } }) },
      { method: 'POST', path: '/v1/echo', handler: async (r) => ({ data: r.body }) },
      {
        method: 'GET',
        path: '/v1/ticks',
        handler: async () => ({
          stream: (res) => {
            res.writeHead(200, { 'Content-Type': 'application/x-ndjson' })
            const timer = setInterval(() => res.write('{"tick":true}\n'), TICK_MS)
            res.once('close', () => clearInterval(timer))
          },
        }),
      },
    ],
    upgrades: [
      {
        path: '/v1/raw',
        protocol: 'test-ticks',
        handler: async (_r, socket) => {
          socket.write(
            'HTTP/1.1 101 Switching Protocols\r\nUpgrade: test-ticks\r\nConnection: Upgrade\r\n\r\n',
          )
          const timer = setInterval(() => socket.write('tick\n'), TICK_MS)
          await new Promise((resolve) => socket.once('close', resolve))
          clearInterval(timer)
        },
      },
    ],
  })
  const close = await listenOnSocket(server, socketPath, { what: 'a test API' })
  t.after(async () => {
    server.closeAllConnections()
    await close()
  })
  return { socketPath, server, auth: `Authorization: Bearer ${cookie}\r\n` }
}

/** Every raw client of the running test, destroyed when it ends (pass or fail). */
const clients = new Set<net.Socket>()

/** A raw client: what it received, and when (ms after it began connecting) it was closed. */
function raw(socketPath: string) {
  const started = performance.now()
  const socket = net.connect({ path: socketPath })
  clients.add(socket)
  // A write to a socket the server closed fails with EPIPE: only its close matters here.
  socket.on('error', () => {})
  let received = ''
  const chunks: Array<{ at: number; text: string }> = []
  socket.setEncoding('utf8').on('data', (d: string) => {
    received += d
    chunks.push({ at: performance.now() - started, text: d })
  })
  const closed = new Promise<number>((resolve) =>
    socket.once('close', () => resolve(performance.now() - started)),
  )
  return {
    socket,
    started,
    closed,
    chunks,
    received: () => received,
    /** Resolves with the first chunk that arrives more than `ms` after the start. */
    chunkAfter: (ms: number) =>
      new Promise<number>((resolve, reject) => {
        const onData = (): void => {
          const at = performance.now() - started
          if (at > ms) {
            socket.off('data', onData)
            resolve(at)
          }
        }
        socket.on('data', onData)
        socket.once('close', () => reject(new Error(`closed before ${ms} ms`)))
      }),
  }
}

/** Writes `text` one byte every `everyMs` until it is written or the socket closes. */
function dribble(socket: net.Socket, text: string, everyMs: number): void {
  let i = 0
  const timer = setInterval(() => {
    if (socket.destroyed || i >= text.length) {
      clearInterval(timer)
      return
    }
    socket.write(text[i++] as string)
  }, everyMs)
  socket.once('close', () => clearInterval(timer))
}

describe('local API limits', { timeout: 30_000 }, () => {
  afterEach(() => {
    for (const s of clients) {
      s.destroy()
    }
    clients.clear()
  })

  it('keeps the documented defaults: 5 s for headers, 15 s for the request, 256 connections', () => {
    assert.deepEqual(API_LIMITS, {
      headersTimeoutMs: HEADERS_TIMEOUT_MS,
      requestTimeoutMs: REQUEST_TIMEOUT_MS,
      maxConnections: MAX_API_CONNECTIONS,
    })
    assert.equal(HEADERS_TIMEOUT_MS, 5_000)
    assert.equal(REQUEST_TIMEOUT_MS, 15_000)
    assert.equal(MAX_API_CONNECTIONS, 256)
  })

  it('destroys a connection that sends nothing at the headers timeout', async (t) => {
    const { socketPath } = await serve(t, { headersTimeoutMs: HEADERS_MS, requestTimeoutMs: REQUEST_MS })
    const c = raw(socketPath)
    const at = await c.closed
    assert.ok(at >= HEADERS_MS, `closed after ${at.toFixed(0)} ms, before the headers timeout`)
    assert.ok(at < REQUEST_MS, `closed after ${at.toFixed(0)} ms: the headers timeout was not enforced`)
    assert.equal(c.received(), '')
  })

  it('destroys a connection that sends its headers a byte at a time at the headers timeout', async (t) => {
    const { socketPath, auth } = await serve(t, {
      headersTimeoutMs: HEADERS_MS,
      requestTimeoutMs: REQUEST_MS,
    })
    const c = raw(socketPath)
    await once(c.socket, 'connect')
    dribble(
      c.socket,
      `GET /v1/status HTTP/1.1\r\nHost: x\r\n${auth}X-Slow: ${'s'.repeat(100)}\r\n\r\n`,
      TICK_MS,
    )
    const at = await c.closed
    assert.ok(at >= HEADERS_MS, `closed after ${at.toFixed(0)} ms`)
    assert.ok(at < REQUEST_MS, `closed after ${at.toFixed(0)} ms: slow headers were not cut`)
    assert.equal(c.received(), '')
  })

  it('destroys a connection that sends its body a byte at a time at the request timeout', async (t) => {
    const { socketPath, auth } = await serve(t, {
      headersTimeoutMs: HEADERS_MS,
      requestTimeoutMs: REQUEST_MS,
    })
    const c = raw(socketPath)
    await once(c.socket, 'connect')
    const body = JSON.stringify({ padding: 'p'.repeat(100) })
    c.socket.write(
      `POST /v1/echo HTTP/1.1\r\nHost: x\r\n${auth}Content-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`,
    )
    dribble(c.socket, body, TICK_MS)
    const at = await c.closed
    assert.ok(at >= REQUEST_MS, `closed after ${at.toFixed(0)} ms, before the request timeout`)
    assert.ok(at < REQUEST_MS + 1_000, `closed after ${at.toFixed(0)} ms`)
    assert.equal(c.received(), '', 'a request cut short is not answered')
  })

  it('lets a streamed answer go on past the request timeout', async (t) => {
    const { socketPath, auth } = await serve(t, {
      headersTimeoutMs: HEADERS_MS,
      requestTimeoutMs: REQUEST_MS,
    })
    const c = raw(socketPath)
    c.socket.write(`GET /v1/ticks HTTP/1.1\r\nHost: x\r\n${auth}\r\n`)
    const at = await c.chunkAfter(REQUEST_MS + 3 * TICK_MS)
    assert.ok(at > REQUEST_MS)
    assert.match(c.received(), /^HTTP\/1\.1 200 /)
    assert.equal(c.socket.destroyed, false)
    c.socket.destroy()
  })

  it('lets an upgraded socket go on past the request timeout', async (t) => {
    const { socketPath, auth } = await serve(t, {
      headersTimeoutMs: HEADERS_MS,
      requestTimeoutMs: REQUEST_MS,
    })
    const c = raw(socketPath)
    c.socket.write(
      `POST /v1/raw HTTP/1.1\r\nHost: x\r\n${auth}Connection: Upgrade\r\nUpgrade: test-ticks\r\n\r\n`,
    )
    const at = await c.chunkAfter(REQUEST_MS + 3 * TICK_MS)
    assert.ok(at > REQUEST_MS)
    assert.match(c.received(), /^HTTP\/1\.1 101 /)
    c.socket.destroy()
  })

  it('starts the clocks again after an answer on a kept-alive connection', async (t) => {
    const { socketPath, auth } = await serve(t, {
      headersTimeoutMs: HEADERS_MS,
      requestTimeoutMs: REQUEST_MS,
    })
    const c = raw(socketPath)
    // Two requests in turn, the second sent once the first is answered, then silence.
    c.socket.write(`GET /v1/status HTTP/1.1\r\nHost: x\r\n${auth}\r\n`)
    await once(c.socket, 'data')
    const firstAnswer = performance.now() - c.started
    c.socket.write(`GET /v1/status HTTP/1.1\r\nHost: x\r\n${auth}\r\n`)
    await once(c.socket, 'data')
    const secondAnswer = performance.now() - c.started
    const at = await c.closed
    assert.equal(c.received().match(/HTTP\/1\.1 200 /g)?.length, 2)
    assert.ok(at - secondAnswer >= HEADERS_MS - 5, `idle for ${(at - secondAnswer).toFixed(0)} ms`)
    assert.ok(at - secondAnswer < REQUEST_MS, `idle for ${(at - secondAnswer).toFixed(0)} ms`)
    assert.ok(firstAnswer < HEADERS_MS)
  })

  it('closes connections past the cap at once and keeps answering the others', async (t) => {
    const cap = 8
    const { socketPath, server, auth } = await serve(t, { maxConnections: cap })
    // An authorized client, connected first and kept alive.
    const keeper = raw(socketPath)
    keeper.socket.write(`GET /v1/status HTTP/1.1\r\nHost: x\r\n${auth}\r\n`)
    await once(keeper.socket, 'data')
    // The rest of the cap taken by clients that say nothing.
    const idle = Array.from({ length: cap - 1 }, () => raw(socketPath))
    await Promise.all(idle.map((c) => once(c.socket, 'connect')))
    for (;;) {
      const n = await new Promise<number>((resolve, reject) =>
        server.getConnections((err, count) => (err === null ? resolve(count) : reject(err))),
      )
      if (n === cap) {
        break
      }
      await new Promise((resolve) => setImmediate(resolve))
    }
    // One more, with a complete authorized request: closed unanswered, long before any timeout.
    const extra = raw(socketPath)
    extra.socket.write(`GET /v1/status HTTP/1.1\r\nHost: x\r\n${auth}\r\n`)
    const at = await extra.closed
    assert.equal(extra.received(), '')
    assert.ok(at < HEADERS_TIMEOUT_MS / 2, `closed after ${at.toFixed(0)} ms`)
    // The client inside the cap is still answered.
    const before = keeper.received().length
    keeper.socket.write(`GET /v1/status HTTP/1.1\r\nHost: x\r\n${auth}\r\n`)
    await once(keeper.socket, 'data')
    assert.match(keeper.received().slice(before), /^HTTP\/1\.1 200 /)
    // A place freed is a place for the next client.
    idle[0]?.socket.destroy()
    await idle[0]?.closed
    for (;;) {
      const next = raw(socketPath)
      next.socket.write(`GET /v1/status HTTP/1.1\r\nHost: x\r\n${auth}\r\n`)
      const answered = await Promise.race([
        new Promise<boolean>((resolve) => next.socket.once('data', () => resolve(true))),
        next.closed.then(() => false),
      ])
      next.socket.destroy()
      if (answered) {
        break
      }
      // The server had not seen the close yet: try again.
      await new Promise((resolve) => setImmediate(resolve))
    }
  })
})
