/**
 * Joins two ends (src/pipe/end.ts) until both directions have ended or either failed: every byte
 * one end receives is written to the other, a writer that cannot keep up pauses its source, an end
 * (half-close) is passed on as an end, and a failure on either side resets both, so a truncated
 * transfer never looks complete to anyone. Every proxied connection of peerup goes through here.
 *
 * @packageDocumentation
 */

import type { Logger } from '../log/index.ts'
import type { ByteEnd, Chunk, EndEvents } from './end.ts'

/**
 * A byte direction, seen from the local end: `'in'` came from the remote end, `'out'` went to it.
 */
export type Direction = 'in' | 'out'

/**
 * The byte counts of one piped connection, kept up to date in place as each chunk moves. Whoever
 * shows a live connection's bytes (`peerup daemon connections`, `/metrics`) reads them here: the
 * count pipe() keeps anyway, so the data path counts each chunk once and allocates nothing for it.
 */
export interface Meter {
  /** Bytes received from the remote end and written to the local one. */
  bytesIn: number
  /** Bytes read from the local end and sent to the remote one. */
  bytesOut: number
}

export interface PipeOptions {
  /** Where a reset is logged (debug level; callers log the outcome). */
  log?: Logger
  /** Aborting resets both ends at once. */
  signal?: AbortSignal
  /** Called for every chunk moved, for byte counters. Must not throw. */
  onBytes?: (direction: Direction, n: number) => void
  /** Where to count the bytes moved (a fresh one: pipe() adds to it); one of its own otherwise. */
  meter?: Meter
}

/** A connection someone keeps a record of: its counters, for pipe(), and what to call when it is over. */
export interface Tracked extends Meter {
  /** Called once, with how the connection ended. Must not throw. */
  done(result: PipeResult): void
}

/** How a piped connection ended. */
export interface PipeResult {
  /** Bytes received from the remote end and written to the local one. */
  bytesIn: number
  /** Bytes read from the local end and sent to the remote one. */
  bytesOut: number
  /** True when the connection was reset (by either side, or by the signal) rather than finished. */
  reset: boolean
  error?: Error
}

/** Moves bytes between `local` and `remote` until both directions are done; never rejects. */
export function pipe(local: ByteEnd, remote: ByteEnd, options: PipeOptions = {}): Promise<PipeResult> {
  const { promise, resolve } = Promise.withResolvers<PipeResult>()
  const counts: Meter = options.meter ?? { bytesIn: 0, bytesOut: 0 }
  let settled = false

  const settle = (error?: Error): void => {
    if (settled) {
      return
    }
    settled = true
    options.signal?.removeEventListener('abort', onAbort)
    local.detach()
    remote.detach()
    const result = { bytesIn: counts.bytesIn, bytesOut: counts.bytesOut }
    resolve(error === undefined ? { ...result, reset: false } : { ...result, reset: true, error })
  }

  const fail = (err: Error): void => {
    if (settled) {
      return
    }
    options.log?.debug('connection reset', {
      error: err,
      bytes_in: counts.bytesIn,
      bytes_out: counts.bytesOut,
    })
    remote.reset(err)
    local.reset(err)
    settle(err)
  }

  const forward = (to: ByteEnd, from: ByteEnd, direction: Direction) => {
    const counter = direction === 'in' ? 'bytesIn' : 'bytesOut'
    return (chunk: Chunk) => {
      if (settled) {
        return
      }
      counts[counter] += chunk.byteLength
      options.onBytes?.(direction, chunk.byteLength)
      let more: boolean
      try {
        more = to.write(chunk)
      } catch (err) {
        fail(err instanceof Error ? err : new Error(String(err)))
        return
      }
      if (!more) {
        from.pause()
      }
    }
  }

  const onAbort = (): void => {
    const reason: unknown = options.signal?.reason
    fail(reason instanceof Error ? reason : new Error('aborted'))
  }
  if (options.signal?.aborted === true) {
    onAbort()
    return promise
  }
  options.signal?.addEventListener('abort', onAbort, { once: true })

  // A direction is done when the end it writes to has delivered everything and the end.
  const finished = new Set<ByteEnd>()
  const reporting = (end: ByteEnd, other: ByteEnd, direction: Direction): EndEvents => ({
    data: forward(other, end, direction),
    end: () => settled || other.end(),
    drain: () => settled || other.resume(),
    finish: () => {
      finished.add(end)
      if (finished.size === 2) {
        settle()
      }
    },
    error: fail,
  })
  local.start(reporting(local, remote, 'out'))
  if (!settled) {
    remote.start(reporting(remote, local, 'in'))
  }
  return promise
}
