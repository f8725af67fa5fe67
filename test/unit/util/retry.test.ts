import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { backoffDelayMs, sleep, withRetry } from '../../../src/util/retry.ts'

describe('backoffDelayMs', () => {
  const cases: Array<[attempt: number, expected: number]> = [
    [1, 1_000],
    [2, 2_000],
    [3, 4_000],
    [6, 32_000],
    [7, 60_000],
    [50, 60_000],
    [5_000, 60_000],
  ]
  for (const [attempt, expected] of cases) {
    test(`after attempt ${attempt}: ${expected} ms (1 s, 2 s, 4 s … capped at 60 s)`, () => {
      assert.equal(backoffDelayMs(attempt), expected)
    })
  }

  test('jitter only shortens, by at most its fraction', () => {
    for (let i = 0; i < 200; i++) {
      const d = backoffDelayMs(3, { jitter: 0.2 })
      assert.ok(d >= 3_200 && d <= 4_000, String(d))
    }
  })
})

describe('withRetry', () => {
  test('retries until success, with doubling delays', async () => {
    const delays: number[] = []
    let calls = 0
    const value = await withRetry(
      async (attempt) => {
        calls++
        assert.equal(attempt, calls)
        if (attempt < 4) {
          throw new Error(`fail ${attempt}`)
        }
        return 'ok'
      },
      { baseMs: 2, maxMs: 100, onRetry: (info) => delays.push(info.delayMs) },
    )
    assert.equal(value, 'ok')
    assert.deepEqual(delays, [2, 4, 8])
  })

  test('gives up after `attempts` with the last error', async () => {
    let calls = 0
    await assert.rejects(
      withRetry(
        async () => {
          calls++
          throw new Error(`fail ${calls}`)
        },
        { attempts: 3, baseMs: 1 },
      ),
      /fail 3/,
    )
    assert.equal(calls, 3)
  })

  test('stops at once when shouldRetry says no', async () => {
    let calls = 0
    await assert.rejects(
      withRetry(
        async () => {
          calls++
          throw new TypeError('permanent')
        },
        { baseMs: 1, shouldRetry: (err) => !(err instanceof TypeError) },
      ),
      TypeError,
    )
    assert.equal(calls, 1)
  })

  test('an abort during a delay rejects promptly with the reason', async () => {
    const controller = new AbortController()
    const started = performance.now()
    const retrying = withRetry(
      async () => {
        throw new Error('down')
      },
      { baseMs: 60_000, signal: controller.signal, onRetry: () => controller.abort(new Error('stopped')) },
    )
    await assert.rejects(retrying, /stopped/)
    assert.ok(performance.now() - started < 1_000, 'did not wait for the 60 s delay')
  })

  test('an aborted signal prevents the first attempt', async () => {
    let calls = 0
    await assert.rejects(
      withRetry(
        async () => {
          calls++
        },
        { signal: AbortSignal.abort(new Error('already')) },
      ),
      /already/,
    )
    assert.equal(calls, 0)
  })

  test('sleep without a signal resolves', async () => {
    await sleep(1)
  })
})
