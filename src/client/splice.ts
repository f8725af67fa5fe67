/**
 * Joins a local byte stream (a TCP socket accepted by `peerup proxy`, or stdin/stdout for
 * `proxy --stdio`) with the socket the daemon hands over after `POST /v1/dial`, which speaks the
 * frames of src/util/dial-frames.ts: backpressure both ways, half-close both ways, and a reset on
 * one side when the other fails, so a truncated transfer never looks complete.
 *
 * @packageDocumentation
 */

import type { Socket } from 'node:net'
import type { Readable, Writable } from 'node:stream'
import { framedEnd } from '../util/dial-frames.ts'

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
  const framed = framedEnd(remote, head)
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
    readable.unpipe(framed.writable)
    framed.readable.unpipe(writable)
    if (error !== undefined) {
      framed.reset(error)
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
  framed.readable.on('data', (c: Buffer) => {
    bytesIn += c.length
  })
  framed.writable.once('finish', () => {
    outDone = true
    maybeDone()
  })
  writable.once('finish', () => {
    inDone = true
    maybeDone()
  })
  framed.readable.once('error', (err) => finish(err))
  framed.writable.once('error', (err) => finish(err))
  readable.once('error', (err) => finish(err))
  writable.once('error', (err) => finish(err))
  // A local socket destroyed under us (the client went away) is a failure, not an end.
  readable.once('close', () => {
    if (!readable.readableEnded) {
      finish(new Error('the local connection closed before it finished'))
    }
  })

  readable.pipe(framed.writable)
  // pipe() never ends process.stdout (nor stderr), whatever its `end` option says: with
  // `proxy --stdio` the remote's end would never become our stdout's 'finish', and the session
  // would never settle. End the local side here for every kind of writable.
  framed.readable.pipe(writable, { end: false })
  framed.readable.once('end', () => writable.end())
  return promise
}
