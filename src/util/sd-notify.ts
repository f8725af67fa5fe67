/**
 * sd_notify(3) for `Type=notify` units (docs/decisions/0000-inherited.md), for the daemon and the relay: `READY=1` once
 * serving, `WATCHDOG=1` at half the watchdog period while its health checks pass, `STOPPING=1`
 * when it begins to stop.
 * Node has no Unix datagram sockets, so the datagram goes out through node-unix-socket's
 * `DgramSocket` (a prebuilt N-API addon, embedded in the executable like node-datachannel's).
 *
 * @packageDocumentation
 */

import type { Logger } from '../log/index.ts'

/** Sends notifications to systemd; a no-op without `NOTIFY_SOCKET`. */
export interface Notifier {
  readonly enabled: boolean
  notify(state: string): Promise<void>
  close(): void
}

/** A notifier that does nothing (no `NOTIFY_SOCKET`). */
export const NO_NOTIFIER: Notifier = {
  enabled: false,
  notify: async () => {},
  close: () => {},
}

/**
 * A notifier for `socketPath` (the value of `NOTIFY_SOCKET`: a path, or `@name` for an abstract
 * socket). The addon is loaded only here, so a daemon outside systemd never loads it.
 */
export async function createNotifier(socketPath: string | undefined, log: Logger): Promise<Notifier> {
  if (socketPath === undefined) {
    return NO_NOTIFIER
  }
  const { DgramSocket } = await import('node-unix-socket')
  const socket = new DgramSocket()
  socket.on('error', (err: Error) => log.warn('sd_notify socket error', { error: err }))
  // An abstract socket name starts with NUL on the wire; systemd writes it with a leading '@'.
  const dest = socketPath.startsWith('@') ? `\0${socketPath.slice(1)}` : socketPath
  let closed = false
  return {
    enabled: true,
    notify: (state) =>
      new Promise<void>((resolve) => {
        if (closed) {
          resolve()
          return
        }
        const buf = Buffer.from(state)
        socket.sendTo(buf, 0, buf.length, dest, (err) => {
          if (err !== undefined && err !== null) {
            // systemd gone or the socket unwritable: the daemon keeps running, as sd_notify does.
            log.warn('sd_notify failed', { state: state.split('\n')[0], error: err })
          }
          resolve()
        })
      }),
    close: () => {
      if (!closed) {
        closed = true
        socket.close()
      }
    },
  }
}
