/**
 * The forwarder our patch puts into @libp2p/circuit-relay-v2's `createLimitedRelay()`, driven
 * step by step: two streams stand for the relay's hop stream (from the dialer) and stop stream (to
 * the target), and the test plays both remote peers and both transports. Real nodes cannot make the
 * relay's own send queue fill on demand (each relayed stream is already bounded end to end by its
 * yamux window), so backpressure is checked here; test/memory/relay-memory.test.ts checks the whole path.
 */

import * as assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { Logger, Stream } from '@libp2p/interface'
import { AbstractStream } from '@libp2p/utils'

interface Reservation {
  signal: AbortSignal
  limit?: { data?: bigint; duration?: number }
}

type CreateLimitedRelay = (
  src: Stream,
  dst: Stream,
  abortSignal: AbortSignal,
  reservation: Reservation,
  options: { log: Logger },
) => void

// Not exported by the package (its `exports` map has only "."): load the patched file itself.
const utilsUrl = new URL('./utils.js', import.meta.resolve('@libp2p/circuit-relay-v2'))
const { createLimitedRelay } = (await import(utilsUrl.href)) as { createLimitedRelay: CreateLimitedRelay }

const silent = Object.assign(() => {}, {
  enabled: false,
  error: () => {},
  trace: () => {},
  newScope: () => silent,
}) as unknown as Logger

type SendData = AbstractStream['sendData']

/**
 * One half of a relayed connection as the relay sees it. What the relay sends is recorded; the
 * test plays the remote peer (`receive`, `finish`, `reset`) and the transport (`room`, `makeRoom`).
 */
class FakeStream extends AbstractStream {
  sentBytes = 0
  /** Bytes the transport still takes before `send()` must wait for 'drain'. */
  room = Number.POSITIVE_INFINITY
  /** What the stream last told the transport: stop (true) or keep granting the remote window. */
  windowPaused = false
  resetWith: Error | undefined
  /** Bytes sent when the write side was closed (FIN), once it was. */
  readonly writeClosed = Promise.withResolvers<number>()

  constructor(id: string) {
    super({ id, direction: 'inbound', log: silent })
  }

  override sendData(data: Parameters<SendData>[0]): ReturnType<SendData> {
    const sentBytes = Math.min(this.room, data.byteLength)
    this.sentBytes += sentBytes
    this.room -= sentBytes
    return { sentBytes, canSendMore: this.room > 0 }
  }

  override sendReset(err: Error): void {
    this.resetWith = err
  }

  override sendPause(): void {
    this.windowPaused = true
  }

  override sendResume(): void {
    this.windowPaused = false
  }

  override async sendCloseWrite(): Promise<void> {
    this.writeClosed.resolve(this.sentBytes)
  }

  override async sendCloseRead(): Promise<void> {}

  /** The remote peer sends `n` bytes. */
  receive(n: number): void {
    this.onData(new Uint8Array(n))
  }

  /** The transport can take `bytes` more. */
  makeRoom(bytes = Number.POSITIVE_INFINITY): void {
    this.room = bytes
    this.onMuxerDrain()
  }

  /** The remote peer closes its write side (FIN). */
  finish(): void {
    this.onRemoteCloseWrite()
  }
}

function relay(limit?: Reservation['limit']): {
  src: FakeStream
  dst: FakeStream
  shutdown: AbortController
} {
  const src = new FakeStream('hop')
  const dst = new FakeStream('stop')
  const shutdown = new AbortController()
  createLimitedRelay(
    src,
    dst,
    shutdown.signal,
    { signal: new AbortController().signal, limit },
    { log: silent },
  )
  return { src, dst, shutdown }
}

/** Lets queued microtasks and timers of the streams run. */
function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve))
}

describe('relay forwarder (patched createLimitedRelay)', () => {
  it('forwards each direction', () => {
    const { src, dst } = relay()
    src.receive(100)
    dst.receive(7)
    assert.equal(dst.sentBytes, 100)
    assert.equal(src.sentBytes, 7)
  })

  it('stops reading one half while the other needs drain, and resumes on drain', async () => {
    const { src, dst } = relay()
    dst.room = 10
    src.receive(20)
    assert.equal(src.readStatus, 'paused')
    assert.equal(src.windowPaused, true, 'the dialer must stop getting window while the target is slow')
    src.receive(30)
    assert.equal(dst.sentBytes, 10, 'nothing more may be sent before drain')
    dst.makeRoom()
    await settle()
    assert.equal(dst.sentBytes, 50)
    assert.equal(src.readStatus, 'readable')
    assert.equal(src.windowPaused, false)
  })

  it('stays paused when the bytes a drain releases fill the other half again', async () => {
    const { src, dst } = relay()
    dst.room = 10
    src.receive(20)
    src.receive(30)
    dst.makeRoom(15)
    // resume() re-opens the window after it dispatched the buffer: pausing inside that dispatch
    // would leave the window open and the read buffer growing.
    assert.equal(src.readStatus, 'paused')
    assert.equal(src.windowPaused, true)
    dst.makeRoom()
    await settle()
    assert.equal(dst.sentBytes, 50)
    assert.equal(src.readStatus, 'readable')
  })

  it('half-closes each way after the queued bytes, and ends with no reset', async () => {
    const { src, dst } = relay()
    dst.room = 10
    src.receive(20)
    src.finish()
    dst.receive(5)
    await settle()
    dst.makeRoom()
    assert.equal(await dst.writeClosed.promise, 20, 'FIN must follow every byte queued before it')
    assert.equal(src.writeStatus, 'writable', 'the answer direction stays open')
    dst.receive(6)
    dst.finish()
    assert.equal(await src.writeClosed.promise, 11)
    await settle()
    assert.equal(src.status, 'closed')
    assert.equal(dst.status, 'closed')
    assert.equal(src.resetWith, undefined)
    assert.equal(dst.resetWith, undefined)
  })

  it('resets the other half when one half is reset', () => {
    const { src, dst } = relay()
    src.receive(10)
    src.onRemoteReset()
    assert.equal(dst.status, 'aborted')
    assert.ok(dst.resetWith !== undefined)
  })

  it('resets the other half when one half loses its transport without a FIN', () => {
    const { src, dst } = relay()
    src.receive(10)
    dst.onTransportClosed()
    assert.equal(src.status, 'aborted', 'the dialer must not take a cut connection for a clean end')
  })

  it('keeps the data limit: counts both directions and resets both halves past it', () => {
    const { src, dst } = relay({ data: 100n })
    src.receive(60)
    dst.receive(30)
    assert.equal(src.status, 'open')
    dst.receive(30)
    assert.equal(dst.status, 'aborted')
    assert.equal(src.status, 'aborted')
    assert.equal(src.resetWith?.name, 'TransferLimitError')
  })

  it('keeps the duration limit', async () => {
    const { src, dst } = relay({ duration: 50 })
    const { promise, resolve } = Promise.withResolvers<Error | undefined>()
    src.addEventListener('close', (evt) => resolve(evt.error), { once: true })
    assert.equal((await promise)?.name, 'DurationLimitError')
    assert.equal(dst.status, 'aborted')
  })

  it('resets both halves when the relay shuts down', () => {
    const { src, dst, shutdown } = relay()
    shutdown.abort(new Error('relay stopping'))
    assert.equal(src.status, 'aborted')
    assert.equal(dst.status, 'aborted')
  })
})
