/**
 * `peerup proxy <peer> <service> <port>` when a daemon runs: a local TCP listener in the CLI whose
 * every connection is carried by its own `POST /v1/dial` through the daemon's node. The listener
 * lives and dies with the command (Ctrl+C closes it), the daemon does the network part with its
 * warm connections.
 *
 * @packageDocumentation
 */

import * as net from 'node:net'
import { PeerupError } from '../errors.ts'
import type { Logger } from '../log/index.ts'
import { resetSocket } from '../proxy/bridge.ts'
import { splice } from './splice.ts'

/** Options of {@link startDialListener}. */
export interface DialListenerInit {
  host: string
  port: number
  dial: (signal: AbortSignal) => Promise<{ socket: net.Socket; head: Buffer }>
  log: Logger
}

/** A running listener. */
export interface DialListener {
  readonly address: { host: string; port: number }
  close(): Promise<void>
}

/** Binds `host:port` and forwards each accepted connection through its own dial. */
export async function startDialListener(init: DialListenerInit): Promise<DialListener> {
  const { log } = init
  const active = new Set<AbortController>()
  const done = new Set<Promise<void>>()
  // Not read until its dial succeeded: the kernel holds what the client sends meanwhile.
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (client) => {
    const controller = new AbortController()
    active.add(controller)
    client.on('error', () => {})
    const onGone = (): void => controller.abort(new Error('client went away'))
    client.once('close', onGone)
    const p = (async () => {
      let remote: { socket: net.Socket; head: Buffer }
      try {
        remote = await init.dial(controller.signal)
      } catch (err) {
        log.warn('dial through the daemon failed, resetting client', { error: err as Error })
        resetSocket(client)
        return
      } finally {
        client.off('close', onGone)
      }
      controller.signal.addEventListener('abort', () => {
        resetSocket(remote.socket)
        resetSocket(client)
      })
      const result = await splice(
        { readable: client, writable: client, reset: () => resetSocket(client) },
        remote.socket,
        remote.head,
      )
      log.debug('proxied connection closed', {
        bytes_in: result.bytesIn,
        bytes_out: result.bytesOut,
        reset: result.reset,
      })
    })().finally(() => {
      active.delete(controller)
      done.delete(p)
    })
    done.add(p)
  })
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void =>
      reject(
        new PeerupError(`cannot listen on ${init.host}:${init.port}: ${err.message}`, {
          hint: 'choose another port, or stop what is using this one',
        }),
      )
    server.once('error', onError)
    server.listen({ host: init.host, port: init.port }, () => {
      server.off('error', onError)
      resolve()
    })
  })
  const bound = server.address() as net.AddressInfo
  return {
    address: { host: init.host, port: bound.port },
    close: async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()))
      for (const c of active) {
        c.abort(new Error('the proxy is stopping'))
      }
      await Promise.all([...done])
      await closed
    },
  }
}
