/**
 * pipe() as a state machine, with ends made in memory: bytes both ways, each direction ended on
 * its own, backpressure (a full writer pauses its source until it drains), a failure anywhere
 * resetting both ends, a write that throws, and the signal.
 */

import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { ByteEnd, Chunk, EndEvents } from '../../../src/pipe/end.ts'
import { pipe } from '../../../src/pipe/pipe.ts'

/** An end driven by the test: `events` are what it would report, the arrays what was done to it. */
function memoryEnd(name: string, options: { writableBytes?: number; throwOnWrite?: boolean } = {}) {
  const written: Buffer[] = []
  const calls: string[] = []
  let events: EndEvents | undefined
  let room = options.writableBytes ?? Number.POSITIVE_INFINITY
  const end: ByteEnd = {
    name,
    start: (e) => {
      events = e
    },
    pause: () => calls.push('pause'),
    resume: () => calls.push('resume'),
    write(chunk: Chunk) {
      if (options.throwOnWrite === true) {
        throw new Error(`${name}: write failed`)
      }
      written.push(Buffer.from(chunk.subarray()))
      room -= chunk.byteLength
      return room > 0
    },
    end: () => calls.push('end'),
    reset: (err) => calls.push(`reset: ${err.message}`),
    detach: () => calls.push('detach'),
  }
  return {
    end,
    written,
    calls,
    get events(): EndEvents {
      assert.ok(events, `${name} was not started`)
      return events
    },
    makeRoom(bytes: number) {
      room = bytes
      events?.drain()
    },
  }
}

describe('pipe', () => {
  it('moves bytes both ways and settles once both directions are done', async () => {
    const local = memoryEnd('local')
    const remote = memoryEnd('remote')
    let settled = false
    const result = pipe(local.end, remote.end).finally(() => {
      settled = true
    })
    local.events.data(Buffer.from('hello'))
    remote.events.data(Buffer.from('welcome!'))
    // local half-closes: remote is ended; the other direction goes on.
    local.events.end()
    assert.deepEqual(remote.calls, ['end'])
    remote.events.data(Buffer.from(' more'))
    remote.events.finish()
    await new Promise((resolve) => setImmediate(resolve))
    assert.equal(settled, false, 'one direction is still open')
    remote.events.end()
    assert.deepEqual(local.calls, ['end'])
    local.events.finish()
    assert.deepEqual(await result, { bytesIn: 13, bytesOut: 5, reset: false })
    assert.equal(Buffer.concat(remote.written).toString(), 'hello')
    assert.equal(Buffer.concat(local.written).toString(), 'welcome! more')
    assert.ok(local.calls.includes('detach') && remote.calls.includes('detach'))
  })

  it('pauses a source while its writer is full and resumes it on drain', async () => {
    const local = memoryEnd('local')
    const remote = memoryEnd('remote', { writableBytes: 10 })
    const result = pipe(local.end, remote.end)
    local.events.data(Buffer.alloc(6))
    assert.deepEqual(local.calls, [])
    local.events.data(Buffer.alloc(6))
    assert.deepEqual(local.calls, ['pause'])
    remote.makeRoom(100)
    assert.deepEqual(local.calls, ['pause', 'resume'])
    local.events.error(new Error('done here'))
    assert.equal((await result).reset, true)
  })

  it('a failure of either end resets both, with the error', async () => {
    for (const failing of ['local', 'remote'] as const) {
      const local = memoryEnd('local')
      const remote = memoryEnd('remote')
      const result = pipe(local.end, remote.end)
      local.events.data(Buffer.alloc(3))
      ;(failing === 'local' ? local : remote).events.error(new Error('cut'))
      const r = await result
      assert.equal(r.reset, true)
      assert.equal(r.error?.message, 'cut')
      assert.ok(local.calls.includes('reset: cut'), failing)
      assert.ok(remote.calls.includes('reset: cut'), failing)
      // Nothing that comes after counts.
      remote.events.data(Buffer.alloc(5))
      assert.equal(local.written.length, 0)
    }
  })

  it('a write that throws resets both ends', async () => {
    const local = memoryEnd('local')
    const remote = memoryEnd('remote', { throwOnWrite: true })
    const result = pipe(local.end, remote.end)
    local.events.data(Buffer.from('x'))
    const r = await result
    assert.equal(r.reset, true)
    assert.match(r.error?.message ?? '', /write failed/)
  })

  it('the signal resets both ends, also when it fired before', async () => {
    const controller = new AbortController()
    const local = memoryEnd('local')
    const remote = memoryEnd('remote')
    const result = pipe(local.end, remote.end, { signal: controller.signal })
    controller.abort(new Error('stopping'))
    assert.equal((await result).error?.message, 'stopping')
    assert.ok(remote.calls.includes('reset: stopping'))
    const late = await pipe(memoryEnd('a').end, memoryEnd('b').end, { signal: controller.signal })
    assert.equal(late.reset, true)
  })

  it('counts bytes per direction for the caller', async () => {
    const local = memoryEnd('local')
    const remote = memoryEnd('remote')
    const seen: string[] = []
    const result = pipe(local.end, remote.end, { onBytes: (d, n) => seen.push(`${d} ${n}`) })
    local.events.data(Buffer.alloc(4))
    remote.events.data(Buffer.alloc(7))
    local.events.error(new Error('end of test'))
    await result
    assert.deepEqual(seen, ['out 4', 'in 7'])
  })
})
