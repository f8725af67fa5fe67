/**
 * Joins a local byte stream (a TCP socket accepted by `peerup proxy`, or stdin/stdout for
 * `proxy --stdio`) with the raw socket the daemon hands over after `POST /v1/dial`: backpressure
 * both ways (`pipe`), half-close both ways, and a reset on one side when the other fails, so a
 * truncated transfer never looks complete.
 *
 * @packageDocumentation
 */

import type { Socket } from 'node:net'
import type { Readable, Writable } from 'node:stream'
import { resetSocket } from '../proxy/bridge.ts'

/** The local half. */
export interface SpliceLocal {
  readable: Readable
  writable: Writable
  /** Tears the local side down so its user sees an error, not a clean end. */
  reset(): void
}

/** How a spliced connection ended. */
export interface SpliceResult {
  bytesIn: number
  bytesOut: number
  reset: boolean
  error?: Error
}

/** Moves bytes until both directions ended or either side failed; never rejects. */
export function splice(local: SpliceLocal, remote: Socket, head?: Buffer): Promise<SpliceResult> {
  // A peer's FIN must not end our side too: the other direction may still be sending.
  remote.allowHalfOpen = true
  const { readable, writable } = local
  let bytesIn = 0
  let bytesOut = 0
  let settled = false
  let outDone = false
  let inDone = false
  const { promise, resolve } = Promise.withResolvers<SpliceResult>()

  const finish = (error?: Error): void => {
    if (settled) {
      return
    }
    settled = true
    readable.unpipe(remote)
    remote.unpipe(writable)
    if (error !== undefined) {
      resetSocket(remote)
      local.reset()
    }
    resolve(
      error === undefined ? { bytesIn, bytesOut, reset: false } : { bytesIn, bytesOut, reset: true, error },
    )
  }
  const maybeDone = (): void => {
    if (outDone && inDone) {
      finish()
    }
  }

  readable.on('data', (c: Buffer) => {
    bytesOut += c.length
  })
  remote.on('data', (c: Buffer) => {
    bytesIn += c.length
  })
  remote.once('finish', () => {
    outDone = true
    maybeDone()
  })
  writable.once('finish', () => {
    inDone = true
    maybeDone()
  })
  remote.once('error', (err) => finish(err))
  remote.once('close', (hadError) => {
    if (hadError || !(outDone && inDone)) {
      finish(new Error('the daemon closed the connection before the transfer ended'))
    }
  })
  readable.once('error', (err) => finish(err))
  writable.once('error', (err) => finish(err))

  if (head !== undefined && head.length > 0) {
    bytesIn += head.length
    writable.write(head)
  }
  readable.pipe(remote)
  remote.pipe(writable)
  return promise
}
