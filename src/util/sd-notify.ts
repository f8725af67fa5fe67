/**
 * sd_notify(3) for `Type=notify` units (configs/peerup.service, configs/relay-server.service), for
 * the daemon and the relay: `READY=1` once serving, `WATCHDOG=1` at half the watchdog period
 * while its health checks pass, `STOPPING=1` when it begins to stop.
 * Node has no Unix datagram sockets, so the datagram goes out through node-unix-socket's
 * `DgramSocket` (a prebuilt N-API addon, embedded in the executable like node-datachannel's).
 *
 * @packageDocumentation
 */

import type { Logger } from '../log/index.ts'
import type { Component } from './components.ts'

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

/** What {@link SystemdNotify} uses. */
export interface SystemdNotifyComponents {
  log: Logger
}

/** Settings of {@link SystemdNotify}. */
export interface SystemdNotifyInit {
  /** `NOTIFY_SOCKET`; none by default (outside systemd), and then nothing is sent. */
  notifySocket?: string | undefined
  /** `WATCHDOG_USEC`; none by default: no watchdog pings. */
  watchdogUsec?: number | undefined
  /**
   * Runs just before `READY=1` (the role logs that it started, and does what must come first);
   * returns the `STATUS=` line.
   */
  announce: () => string | Promise<string>
  /** Whether the role is healthy now; the watchdog is pinged only then. Always, by default. */
  healthy?: () => boolean | Promise<boolean>
  /** Called for each watchdog ping left out because the role was not healthy. */
  onUnhealthy?: () => void
}

/**
 * The role's life as systemd sees it, last in its list of components: `start()` sends `READY=1`
 * (everything before it has started) and pings the watchdog while the role is healthy; `stop()`
 * ends the pings and sends `STOPPING=1` (everything before it is about to stop).
 */
export class SystemdNotify implements Component {
  readonly #log: Logger
  readonly #init: SystemdNotifyInit
  #notifier: Notifier = NO_NOTIFIER
  #watchdog: NodeJS.Timeout | undefined

  constructor(components: SystemdNotifyComponents, init: SystemdNotifyInit) {
    this.#log = components.log
    this.#init = init
  }

  /** Opens the socket, sends `READY=1` and arms the watchdog. */
  async start(): Promise<void> {
    const notifier = await createNotifier(this.#init.notifySocket, this.#log)
    try {
      const status = await this.#init.announce()
      await notifier.notify(`READY=1\nSTATUS=${status}`)
    } catch (err) {
      notifier.close()
      throw err
    }
    this.#notifier = notifier
    const usec = this.#init.watchdogUsec
    if (notifier.enabled && usec !== undefined) {
      const healthy = this.#init.healthy ?? (() => true)
      this.#watchdog = setInterval(
        () => {
          Promise.resolve()
            .then(healthy)
            .then((ok) => (ok ? notifier.notify('WATCHDOG=1') : this.#init.onUnhealthy?.()))
            .catch(() => {})
        },
        Math.max(Math.floor(usec / 2000), 100),
      )
    }
  }

  /** Disarms the watchdog, sends `STOPPING=1` and closes the socket. */
  async stop(): Promise<void> {
    clearInterval(this.#watchdog)
    this.#watchdog = undefined
    const notifier = this.#notifier
    this.#notifier = NO_NOTIFIER
    await notifier.notify('STOPPING=1')
    notifier.close()
  }
}
