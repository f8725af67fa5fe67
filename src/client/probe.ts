/**
 * Whether a daemon answers on a socket, without speaking its API: used by offline commands to
 * say "daemon: running" and by the daemon to tell a stale socket from a live one.
 *
 * @packageDocumentation
 */

import * as net from 'node:net'

/** Resolves true when something accepts a connection on the Unix socket at `socketPath`. */
export function socketAnswers(socketPath: string, timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ path: socketPath })
    const done = (answer: boolean): void => {
      socket.destroy()
      resolve(answer)
    }
    socket.setTimeout(timeoutMs, () => done(false))
    socket.once('connect', () => done(true))
    socket.once('error', () => done(false))
  })
}
