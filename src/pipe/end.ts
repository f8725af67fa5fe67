/**
 * One end of a proxied connection, whatever carries it: a TCP socket, stdin/stdout, the daemon's
 * framed dial socket, a libp2p stream (raw or flow-controlled). Each transport's quirks stay in its
 * adapter (src/pipe/node.ts, framed.ts, stream.ts); src/pipe/pipe.ts joins any two ends with
 * backpressure, half-close and resets, once.
 *
 * @packageDocumentation
 */

import type { Uint8ArrayList } from 'uint8arraylist'

/** Bytes as ends pass them on: one buffer, or a list of them (written out as one). */
export type Chunk = Uint8Array | Uint8ArrayList

/** What an end reports to the pipe that started it. */
export interface EndEvents {
  data(chunk: Chunk): void
  /** This end's sender ended cleanly (half-close): no more data will come from it. */
  end(): void
  /** This end takes writes again, after a `write()` returned false. */
  drain(): void
  /** Everything written to this end, and its `end()`, has been delivered: that direction is done. */
  finish(): void
  /** This end failed, or its far side reset it: the connection is over, both ways. */
  error(err: Error): void
}

export interface ByteEnd {
  /** What it is, for logs (`tcp 127.0.0.1:50412`, `stream /peerup/ssh/1.0.0`). */
  readonly name: string
  /** Starts reporting to `events` (once); reading begins at once. */
  start(events: EndEvents): void
  /** Stops delivering data until {@link ByteEnd.resume} (backpressure). */
  pause(): void
  resume(): void
  /** Sends a chunk; false asks the writer to wait for `drain` before the next one. May throw. */
  write(chunk: Chunk): boolean
  /** Half-closes: nothing more will be written; `finish` follows once all is delivered. */
  end(): void
  /** Tears the end down so that its far side sees a failure, not a clean end. Idempotent. */
  reset(err: Error): void
  /** Stops reporting events, leaving the transport as it is (the pipe is over). */
  detach(): void
}
