/**
 * Regression tests for the js-libp2p and Node traps the proxy relies on working around (docs/decisions/0005-data-plane.md
 * "Streams", plus the ones found while writing src/proxy/). Tests named "upstream:" pin the library
 * behaviour itself: when one fails after an upgrade, the trap is gone and the workaround in
 * src/proxy/ (named in the test) can be reconsidered.
 */

import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import type * as net from 'node:net'
import { type TestContext, test } from 'node:test'
import type { Stream, StreamCloseEvent } from '@libp2p/interface'
import { configureLogging } from '../../../src/log/index.ts'
import { MAX_STREAM_WINDOW_BYTES, YAMUX_OPTIONS } from '../../../src/p2p/constants.ts'
import { resetSocket } from '../../../src/pipe/node.ts'
import { SERVICE_HANDLE_OPTIONS } from '../../../src/proxy/constants.ts'
import {
  connectTcp,
  createNodePair,
  type NodePair,
  startProxy,
  startTcpServer,
  waitForStall,
} from '../../helpers/libp2p-pair.ts'

configureLogging({ level: 'error' })

const MiB = 1024 * 1024

/** The first of `names` that `target` emits, with its event. */
function nextEvent(target: EventTarget, names: string[]): Promise<Event> {
  return new Promise((resolve) => {
    const on = (evt: Event): void => {
      for (const n of names) {
        target.removeEventListener(n, on)
      }
      resolve(evt)
    }
    for (const n of names) {
      target.addEventListener(n, on)
    }
  })
}

/** Registers `protocol` on the server and returns the next inbound stream with the client's outbound one. */
async function rawStreams(pair: NodePair, protocol: string): Promise<{ outbound: Stream; inbound: Stream }> {
  const { promise, resolve } = Promise.withResolvers<Stream>()
  await pair.server.handle(protocol, (stream) => resolve(stream))
  const outbound = await pair.openStream(protocol)
  return { outbound, inbound: await promise }
}

/** Sends `total` bytes in 256 KiB chunks, honouring 'drain'; stops early when the stream closes. */
async function sendWithDrain(stream: Stream, total: number, progress: { sent: number }): Promise<void> {
  const chunk = new Uint8Array(256 * 1024)
  while (progress.sent < total) {
    if (stream.status !== 'open' || stream.writeStatus !== 'writable') {
      return
    }
    progress.sent += chunk.byteLength
    if (!stream.send(chunk)) {
      await nextEvent(stream, ['drain', 'close'])
    }
  }
}

/**
 * Reads at full speed (so yamux grows the window to its maximum), pauses after `pauseAfter` bytes
 * with nothing left unread, and reports what happens next.
 */
async function pauseMidTransfer(t: TestContext, yamux: Parameters<typeof createNodePair>[1]) {
  const pair = await createNodePair(t, yamux)
  const { outbound, inbound } = await rawStreams(pair, '/test/pause/1.0.0')
  const total = 64 * MiB
  const pauseAfter = 24 * MiB
  let received = 0
  const paused = Promise.withResolvers<void>()
  inbound.addEventListener('message', (evt) => {
    received += evt.data.byteLength
    if (received >= pauseAfter && received - evt.data.byteLength < pauseAfter) {
      inbound.pause()
      paused.resolve()
    }
  })
  const closed = nextEvent(inbound, ['close']) as Promise<StreamCloseEvent>
  const progress = { sent: 0 }
  const sending = sendWithDrain(outbound, total, progress)
  await paused.promise
  return { inbound, outbound, closed, sending, progress, total, received: () => received }
}

test('yamux window ≤ read buffer: a paused stream with 16+ MiB in flight is not reset', {
  timeout: 30_000,
}, async (t) => {
  const run = await pauseMidTransfer(t, { yamux: YAMUX_OPTIONS })
  const buffered = await waitForStall(() => run.inbound.readBufferLength)
  t.diagnostic(
    `paused with ${(buffered / MiB).toFixed(1)} MiB buffered, sender at ${run.progress.sent / MiB} MiB`,
  )
  assert.equal(run.inbound.status, 'open')
  assert.ok(buffered <= MAX_STREAM_WINDOW_BYTES, `${buffered} bytes buffered by a paused stream`)
  assert.ok(run.total - run.progress.sent >= 16 * MiB, 'more than 16 MiB were still waiting to be sent')

  run.inbound.resume()
  await run.sending
  await run.outbound.close()
  await nextEvent(run.inbound, ['end'])
  assert.equal(run.received(), run.total)
})

test('upstream: with yamux defaults a paused stream resets itself (StreamBufferError)', {
  timeout: 30_000,
}, async (t) => {
  // Why YAMUX_OPTIONS exists: window 16 MiB, read buffer 4 MiB.
  const run = await pauseMidTransfer(t, { yamux: {} })
  const evt = await run.closed
  assert.equal(evt.error?.name, 'StreamBufferError')
})

test('upstream: pause() inside a message dispatched by resume() does not stop yamux', {
  timeout: 30_000,
}, async (t) => {
  // Why bridge.ts defers that pause (resumeStream): resume() tells yamux to grant window after the
  // dispatch, undoing the pause, so the "paused" stream buffers until it resets itself.
  const pair = await createNodePair(t, { yamux: YAMUX_OPTIONS })
  const { outbound, inbound } = await rawStreams(pair, '/test/resume/1.0.0')
  inbound.addEventListener('message', () => {
    inbound.pause()
  })
  const closed = nextEvent(inbound, ['close']) as Promise<StreamCloseEvent>
  const progress = { sent: 0 }
  void sendWithDrain(outbound, 256 * MiB, progress)
  await waitForStall(() => inbound.readBufferLength)
  inbound.resume()
  const evt = await closed
  assert.equal(evt.error?.name, 'StreamBufferError')
})

test('upstream: stream.onDrain() resolves at once after its first use', { timeout: 30_000 }, async (t) => {
  // Why bridge.ts waits for the 'drain' event instead.
  const pair = await createNodePair(t)
  const { outbound, inbound } = await rawStreams(pair, '/test/drain/1.0.0')
  inbound.pause()
  const fill = (): void => {
    while (outbound.send(new Uint8Array(64 * 1024))) {
      // until the window is used up
    }
  }
  fill()
  const first = outbound.onDrain()
  inbound.resume()
  await first
  inbound.pause()
  await waitForStall(() => inbound.readBufferLength)
  fill()
  assert.equal(outbound.writableNeedsDrain, true)
  const second = await Promise.race([
    outbound.onDrain().then(() => 'resolved'),
    new Promise((resolve) => setImmediate(() => resolve('pending'))),
  ])
  assert.equal(second, 'resolved', 'onDrain() resolved although the stream still needs a drain')
})

test('more than 32 concurrent inbound streams on one connection work with SERVICE_HANDLE_OPTIONS', {
  timeout: 30_000,
}, async (t) => {
  const pair = await createNodePair(t)
  const streams = 40
  const open = async (protocol: string): Promise<PromiseSettledResult<string>[]> => {
    const opened = await Promise.all(Array.from({ length: streams }, () => pair.openStream(protocol)))
    // Every newStream() succeeded; now see which of them the remote kept.
    return Promise.allSettled(
      opened.map(async (s) => {
        const reply = nextEvent(s, ['message', 'close'])
        s.send(new TextEncoder().encode('ping'))
        const evt = await reply
        if (evt.type === 'close') {
          throw (evt as StreamCloseEvent).error ?? new Error('closed')
        }
        return 'pong'
      }),
    )
  }
  const handler = (stream: Stream): void => {
    // Hold every stream open until it has been asked, so they are all open at the same time.
    stream.addEventListener('message', () => stream.send(new TextEncoder().encode('pong')), { once: true })
  }
  await pair.server.handle('/test/default-limit/1.0.0', handler)
  await pair.server.handle('/test/raised-limit/1.0.0', handler, SERVICE_HANDLE_OPTIONS)

  const withDefaults = await open('/test/default-limit/1.0.0')
  const refused = withDefaults.filter((r) => r.status === 'rejected').length
  assert.equal(
    refused,
    streams - 32,
    'upstream: the default limit resets streams 33+ after newStream() succeeded',
  )

  const raised = await open('/test/raised-limit/1.0.0')
  assert.deepEqual(
    raised.filter((r) => r.status === 'rejected'),
    [],
  )
})

test('upstream: a dialler that does not handle the protocol may open only 64 streams unless told', {
  timeout: 30_000,
}, async (t) => {
  // Why SERVICE_DIAL_OPTIONS carries maxOutboundStreams: handle() options apply only where the
  // protocol is handled, and the listener side never handles it.
  const pair = await createNodePair(t)
  await pair.server.handle('/test/outbound/1.0.0', () => {}, SERVICE_HANDLE_OPTIONS)
  const results = await Promise.allSettled(
    Array.from({ length: 70 }, () => pair.connection.newStream('/test/outbound/1.0.0')),
  )
  const failed = results.filter((r) => r.status === 'rejected')
  assert.equal(failed.length, 6)
  assert.equal((failed[0] as PromiseRejectedResult).reason.name, 'TooManyOutboundProtocolStreamsError')
})

/**
 * Opens `count` streams on a connection whose accepting side is still busy upgrading it (a slow
 * gater), the way a burst of SSH sessions hits a connection that was just made.
 */
async function burstOnFreshConnection(
  t: TestContext,
  yamux: Parameters<typeof createNodePair>[1],
  count: number,
) {
  const gate = Promise.withResolvers<boolean>()
  // The server's muxer has taken `count` streams (or aborted the connection at the first one over
  // its limit): the burst is where the test wants it, all early.
  const arrived = Promise.withResolvers<void>()
  const pair = await createNodePair(t, {
    ...yamux,
    server: {
      connectionGater: { denyInboundUpgradedConnection: () => gate.promise },
      onRemoteStream: (n) => {
        if (n >= Math.min(count, (yamux?.yamux?.maxEarlyStreams ?? 10) + 1)) {
          arrived.resolve()
        }
      },
    },
  })
  const handled: Stream[] = []
  await pair.server.handle(
    '/test/burst/1.0.0',
    (s) => {
      handled.push(s)
    },
    SERVICE_HANDLE_OPTIONS,
  )
  const opening = Promise.allSettled(
    Array.from({ length: count }, () => pair.openStream('/test/burst/1.0.0')),
  )
  await arrived.promise
  gate.resolve(false)
  return { results: await opening, handled }
}

test('a burst of streams on a fresh connection does not kill it (maxEarlyStreams)', {
  timeout: 30_000,
}, async (t) => {
  const { results, handled } = await burstOnFreshConnection(t, { yamux: YAMUX_OPTIONS }, 40)
  assert.deepEqual(
    results.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason)),
    [],
  )
  assert.equal(handled.length, 40)
})

test('upstream: with yamux defaults, 11 early streams abort the whole connection', {
  timeout: 30_000,
}, async (t) => {
  // Why YAMUX_OPTIONS sets maxEarlyStreams.
  const { results } = await burstOnFreshConnection(t, { yamux: {} }, 20)
  assert.equal(results.filter((r) => r.status === 'fulfilled').length, 0)
})

test('server speaks first (SSH banner) through the proxy', { timeout: 20_000 }, async (t) => {
  // Works because the stream is negotiated fully before use: with negotiateFully: false the remote
  // stream would not exist until the client wrote, and an SSH client waits for the banner first.
  const { listener } = await startProxy(t, {
    onServiceSocket: (socket) => {
      socket.write('SSH-2.0-OpenSSH_9.6 test\r\n')
      socket.on('data', (d) => socket.end(`echo:${d}`))
    },
  })
  const client = await connectTcp(t, listener.address.port)
  const [banner] = (await once(client, 'data')) as [Buffer]
  assert.equal(banner.toString(), 'SSH-2.0-OpenSSH_9.6 test\r\n')
  client.end('SSH-2.0-client\r\n')
  const [reply] = (await once(client, 'data')) as [Buffer]
  assert.equal(reply.toString(), 'echo:SSH-2.0-client\r\n')
  await once(client, 'end')
})

test('upstream: resetAndDestroy() during the shutdown from end() leaks the socket', {
  timeout: 10_000,
}, async () => {
  // Why resetSocket() waits for 'finish' first. Node 24: libuv refuses the reset (EINVAL) while the
  // shutdown is in flight, and Node marks the handle closing without closing it: no 'close' event,
  // and the process spins at 100% CPU when it exits. Hence a child process, killed afterwards.
  const child = spawn(
    process.execPath,
    [
      '--input-type=module',
      '-e',
      `import * as net from 'node:net'
      const server = net.createServer((s) => s.resume()).listen(0, '127.0.0.1', () => {
        const c = net.connect(server.address().port, '127.0.0.1', async () => {
          c.on('error', (e) => console.log('error ' + e.code))
          c.on('close', () => console.log('close'))
          c.end('x')
          await Promise.resolve()
          c.resetAndDestroy()
          setTimeout(() => console.log('done'), 200)
        })
      })`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  )
  let out = ''
  child.stdout.on('data', (d) => {
    out += d
  })
  try {
    while (!out.includes('done')) {
      await once(child.stdout, 'data')
    }
  } finally {
    child.kill('SIGKILL')
  }
  assert.match(out, /error EINVAL/)
  assert.doesNotMatch(out, /close/)
})

test('resetSocket() right after end() closes the socket and resets the peer', {
  timeout: 10_000,
}, async (t) => {
  const { promise: peer, resolve } = Promise.withResolvers<net.Socket>()
  const server = await startTcpServer(t, resolve)
  const socket = await connectTcp(t, server.port)
  const closed = once(socket, 'close')
  socket.write('x'.repeat(1000))
  socket.end()
  await Promise.resolve()
  resetSocket(socket)
  await closed
  assert.equal(socket.destroyed, true)
  // The peer read everything and a FIN (end() had queued it), then the RST: its reads are over, so
  // the reset shows on its next write, which a FIN alone would have let through.
  const remote = await peer
  remote.resume()
  await once(remote, 'end')
  const failed = once(remote, 'error')
  remote.write('y')
  const [err] = (await failed) as [NodeJS.ErrnoException]
  assert.ok(err.code === 'EPIPE' || err.code === 'ECONNRESET', String(err.code))
})
