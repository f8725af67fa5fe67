/**
 * Retrying with exponential backoff: 1 s, 2 s, 4 s … capped at 60 s (opening a service stream, and
 * anything else that waits for the network to come back).
 *
 * @packageDocumentation
 */

/** First delay before a second attempt. */
export const DEFAULT_RETRY_BASE_MS = 1_000

/** Longest delay between two attempts. */
export const DEFAULT_RETRY_MAX_MS = 60_000

export interface RetryOptions {
  /** Aborting stops at once, also in the middle of a delay; the promise rejects with the reason. */
  signal?: AbortSignal
  /** Attempts in all, the first included. Default: no limit (only the signal stops it). */
  attempts?: number
  /** Delay before the second attempt; each later delay doubles it. */
  baseMs?: number
  maxMs?: number
  /**
   * Fraction of each delay that is randomised, 0 to 1: 0.2 turns 4 s into 3.2–4 s, so many clients
   * that failed together do not retry together. Default 0: the exact schedule.
   */
  jitter?: number
  /** Whether an error is worth another attempt; a false stops at once with that error. Default: always. */
  shouldRetry?: (err: unknown, attempt: number) => boolean
  /** Called before each delay, for logs. */
  onRetry?: (info: { attempt: number; delayMs: number; error: unknown }) => void
}

/**
 * The delay after failed attempt `attempt` (1-based): `baseMs · 2^(attempt−1)`, capped at `maxMs`,
 * minus up to `jitter` of it at random.
 */
export function backoffDelayMs(
  attempt: number,
  options: Pick<RetryOptions, 'baseMs' | 'maxMs' | 'jitter'> = {},
): number {
  const baseMs = options.baseMs ?? DEFAULT_RETRY_BASE_MS
  const maxMs = options.maxMs ?? DEFAULT_RETRY_MAX_MS
  const jitter = Math.min(Math.max(options.jitter ?? 0, 0), 1)
  // Math.min before the power would overflow to Infinity after ~1000 attempts; clamp the exponent.
  const delay = Math.min(baseMs * 2 ** Math.min(attempt - 1, 52), maxMs)
  return Math.round(delay * (1 - jitter * Math.random()))
}

/**
 * Calls `fn` until it resolves, waiting {@link backoffDelayMs} between attempts. Rejects with the last
 * error when the attempts are used up or `shouldRetry` says no, and with the signal's reason when
 * aborted. `fn` gets the 1-based attempt number and should honour the same signal itself: an attempt
 * in flight is not abandoned, so that whatever it opens is not leaked.
 */
export async function withRetry<T>(
  fn: (attempt: number) => Promise<T>,
  options: RetryOptions = {},
): Promise<T> {
  const attempts = options.attempts ?? Number.POSITIVE_INFINITY
  const signal = options.signal
  for (let attempt = 1; ; attempt++) {
    signal?.throwIfAborted()
    try {
      return await fn(attempt)
    } catch (err) {
      signal?.throwIfAborted()
      if (attempt >= attempts || options.shouldRetry?.(err, attempt) === false) {
        throw err
      }
      const delayMs = backoffDelayMs(attempt, options)
      options.onRetry?.({ attempt, delayMs, error: err })
      await sleep(delayMs, signal)
    }
  }
}

/** Resolves after `ms`, or rejects with the signal's reason as soon as it aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted === true) {
      reject(signal.reason)
      return
    }
    const onAbort = (): void => {
      clearTimeout(timer)
      reject(signal?.reason)
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort)
      resolve()
    }, ms)
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}
