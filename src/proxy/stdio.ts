/**
 * Stdio mode: the process's stdin and stdout joined to one stream, for `ssh -o ProxyCommand`.
 *
 * @packageDocumentation
 */

import type { Readable, Writable } from 'node:stream'
import type { Stream } from '@libp2p/interface'
import { type BridgeOptions, type BridgeResult, join } from './bridge.ts'

/** Options of {@link proxyStdio}. */
export interface StdioOptions extends BridgeOptions {
  /** Bytes to send; EOF half-closes the stream. Default `process.stdin`. */
  stdin?: Readable
  /** Where the stream's bytes go; ended when the remote half-closes. Default `process.stdout`. */
  stdout?: Writable
}

/**
 * Proxies stdin → stream and stream → stdout until both directions ended or either failed, with
 * backpressure both ways. On failure stdin and stdout are destroyed (stdout without an `'end'`, so a
 * reader sees a broken pipe rather than a clean end); the caller should then exit non-zero.
 *
 * `process.stdout.end()` does not close file descriptor 1, so a reader of our stdout sees EOF only
 * when the process exits: the caller should exit as soon as this resolves.
 */
export function proxyStdio(stream: Stream, options: StdioOptions = {}): Promise<BridgeResult> {
  const stdin = options.stdin ?? process.stdin
  const stdout = options.stdout ?? process.stdout
  return join(
    {
      readable: stdin,
      writable: stdout,
      reset: () => {
        stdin.on('error', () => {})
        stdout.on('error', () => {})
        stdin.destroy()
        stdout.destroy()
      },
    },
    stream,
    options,
  )
}
