/**
 * sd_notify(3) for `Type=notify` units (configs/peerup.service, configs/relay-server.service), for
 * the daemon and the relay: `READY=1` once serving, `WATCHDOG=1` at half the watchdog period
 * while its health checks pass, `STOPPING=1` when it begins to stop.
 * Node has no Unix datagram sockets, so the datagram goes out through node-unix-socket's
 * `DgramSocket` (a prebuilt N-API addon, embedded in the executable like node-datachannel's).
 *
 * @packageDocumentation
 */

import type { DgramSocket } from 'node-unix-socket'
import type { Logger } from '../log/index.ts'
import type { Component } from './components.ts'

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
  /** Open while started under systemd (`NOTIFY_SOCKET`); without it nothing is sent. */
  #socket: DgramSocket | undefined
  #watchdog: NodeJS.Timeout | undefined

  constructor(components: { log: Logger }, init: SystemdNotifyInit) {
    this.#log = components.log
    this.#init = init
  }

  /** Opens the socket, sends `READY=1` and arms the watchdog. */
  async start(): Promise<void> {
    if (this.#init.notifySocket !== undefined) {
      // The addon is loaded only here, so a daemon outside systemd never loads it.
      const { DgramSocket } = await import('node-unix-socket')
      this.#socket = new DgramSocket()
      this.#socket.on('error', (err: Error) => this.#log.warn('sd_notify socket error', { error: err }))
    }
    try {
      const status = await this.#init.announce()
      await this.#notify(`READY=1\nSTATUS=${status}`)
    } catch (err) {
      this.#close()
      throw err
    }
    const usec = this.#init.watchdogUsec
    if (this.#socket !== undefined && usec !== undefined) {
      const healthy = this.#init.healthy ?? (() => true)
      this.#watchdog = setInterval(
        () => {
          Promise.resolve()
            .then(healthy)
            .then((ok) => (ok ? this.#notify('WATCHDOG=1') : this.#init.onUnhealthy?.()))
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
    await this.#notify('STOPPING=1')
    this.#close()
  }

  #close(): void {
    this.#socket?.close()
    this.#socket = undefined
  }

  /** Sends `state`; a failure is logged, never thrown (the role keeps running, as with sd_notify). */
  #notify(state: string): Promise<void> {
    const socket = this.#socket
    const path = this.#init.notifySocket
    if (socket === undefined || path === undefined) {
      return Promise.resolve()
    }
    // An abstract socket name starts with NUL on the wire; systemd writes it with a leading '@'.
    const dest = path.startsWith('@') ? `\0${path.slice(1)}` : path
    const buf = Buffer.from(state)
    return new Promise<void>((resolve) => {
      socket.sendTo(buf, 0, buf.length, dest, (err) => {
        if (err !== undefined && err !== null) {
          this.#log.warn('sd_notify failed', { state: state.split('\n')[0], error: err })
        }
        resolve()
      })
    })
  }
}
