/**
 * The connecting side of a service: a local TCP listener whose every accepted connection is carried
 * over a new libp2p stream to the peer exposing the service.
 *
 * @packageDocumentation
 */

import * as net from 'node:net'
import type { Stream } from '@libp2p/interface'
import type { Logger } from '../log/index.ts'
import { type RetryOptions, withRetry } from './backoff.ts'
import { type BridgeResult, bridge, type Direction, resetSocket } from './bridge.ts'
import { DEFAULT_LISTEN_HOST, DEFAULT_OPEN_ATTEMPTS } from './constants.ts'
import { ListenError, ListenerClosedError, LocalClosedError, StreamOpenError } from './errors.ts'
import type { HostPort } from './service.ts'

/** What happened to one accepted local connection, for logs and metrics. */
export type ListenerEvent =
  | { type: 'opened' }
  | { type: 'open-failed'; error: Error }
  | { type: 'closed'; result: BridgeResult; durationMs: number }

/** Options of {@link startProxyListener}. */
export interface ProxyListenerInit {
  /** Address to bind; loopback unless the user asked otherwise. */
  host?: string
  /** Port to bind; 0 picks a free one (see {@link ProxyListener.address}). */
  port: number
  /**
   * Opens a stream to the service, e.g. `dialProtocol(peer, protocol, { ...SERVICE_DIAL_OPTIONS, signal })`.
   * Called again with backoff when it fails; it must honour `signal`.
   */
  openStream: (signal: AbortSignal) => Promise<Stream>
  log: Logger
  /** Backoff of stream opening; by default {@link DEFAULT_OPEN_ATTEMPTS} attempts, 1 s, 2 s, 4 s … */
  retry?: Omit<RetryOptions, 'signal'>
  /** Called for every accepted connection. Must not throw. */
  onConnection?: (event: ListenerEvent) => void
  /** Byte counters, see {@link BridgeOptions.onBytes}. */
  onBytes?: (direction: Direction, n: number) => void
}

/** A running proxy listener. */
export interface ProxyListener {
  /** The bound address (the real port when 0 was asked for). */
  readonly address: HostPort
  /** Local connections being opened or proxied right now. */
  readonly connections: number
  /** Stops accepting, resets every active connection and resolves when all are gone. */
  close(): Promise<void>
}

/**
 * Binds a local TCP listener and proxies each accepted connection over its own stream. The client
 * socket is not read until its stream is open, so nothing it sends early is lost or buffered
 * without bound; when no stream can be opened the client is reset.
 */
export async function startProxyListener(init: ProxyListenerInit): Promise<ProxyListener> {
  const { log } = init
  const host = init.host ?? DEFAULT_LISTEN_HOST
  const active = new Map<net.Socket, { controller: AbortController; done: Promise<void> }>()

  // pauseOnConnect: the kernel holds what the client sends until the stream exists (TCP flow control
  // instead of our memory). allowHalfOpen: a client's EOF must not end our reply.
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true })

  const proxy = async (socket: net.Socket, signal: AbortSignal): Promise<void> => {
    const peerAddress = `${socket.remoteAddress}:${socket.remotePort}`
    // The client may give up while we retry: stop trying then. The socket is paused, so 'end' would
    // not come; 'close' and 'error' do.
    const opening = new AbortController()
    const onGone = (): void => opening.abort(new LocalClosedError('client closed before the stream opened'))
    socket.once('close', onGone)
    socket.on('error', onGone)
    const openSignal = AbortSignal.any([signal, opening.signal])

    let stream: Stream
    try {
      stream = await withRetry(() => init.openStream(openSignal), {
        attempts: DEFAULT_OPEN_ATTEMPTS,
        ...init.retry,
        signal: openSignal,
        onRetry: (info) => {
          log.info('stream open failed, retrying', {
            client: peerAddress,
            attempt: info.attempt,
            delay_ms: info.delayMs,
            error: info.error instanceof Error ? info.error : String(info.error),
          })
          init.retry?.onRetry?.(info)
        },
      })
    } catch (err) {
      const error =
        err instanceof ListenerClosedError || err instanceof LocalClosedError
          ? err
          : new StreamOpenError('could not open a stream to the service', {
              hint: 'check that the peer is reachable (`peerup ping`) and exposes the service',
              cause: err,
            })
      log.warn('stream open failed, resetting client', { client: peerAddress, error: errorText(error, err) })
      resetSocket(socket)
      init.onConnection?.({ type: 'open-failed', error })
      return
    } finally {
      socket.off('close', onGone)
      socket.off('error', onGone)
    }

    const started = Date.now()
    log.debug('proxied connection opened', { client: peerAddress })
    init.onConnection?.({ type: 'opened' })
    // bridge() takes over the socket's error and close handling; aborting `signal` resets both sides.
    const result = await bridge(socket, stream, { log, signal, onBytes: init.onBytes })
    const durationMs = Date.now() - started
    log.debug('proxied connection closed', {
      client: peerAddress,
      bytes_in: result.bytesIn,
      bytes_out: result.bytesOut,
      reset: result.reset,
      duration_ms: durationMs,
      ...(result.error === undefined ? {} : { error: result.error }),
    })
    init.onConnection?.({ type: 'closed', result, durationMs })
  }

  server.on('connection', (socket) => {
    const controller = new AbortController()
    const entry = {
      controller,
      done: proxy(socket, controller.signal)
        .catch((err: unknown) => {
          log.error('proxy connection failed', { error: err instanceof Error ? err : String(err) })
          resetSocket(socket)
        })
        .finally(() => {
          active.delete(socket)
        }),
    }
    active.set(socket, entry)
  })

  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => {
      reject(
        new ListenError(`cannot listen on ${formatHostPort(host, init.port)}: ${err.message}`, {
          hint: 'choose another port, or stop what is using this one',
          cause: err,
        }),
      )
    }
    server.once('error', onError)
    server.listen({ host, port: init.port }, () => {
      server.off('error', onError)
      resolve()
    })
  })
  // After a successful listen, errors are per connection (handled there); log anything else.
  server.on('error', (err) => log.error('proxy listener error', { error: err }))

  const bound = server.address() as net.AddressInfo
  const address = { host, port: bound.port }
  log.info('proxy listening', { listen: formatHostPort(host, bound.port) })

  let closing: Promise<void> | undefined
  return {
    address,
    get connections() {
      return active.size
    },
    close() {
      closing ??= (async () => {
        const closed = new Promise<void>((resolve) => server.close(() => resolve()))
        for (const { controller } of active.values()) {
          controller.abort(new ListenerClosedError('the proxy listener was closed'))
        }
        await Promise.all([...active.values()].map((e) => e.done))
        await closed
        log.info('proxy stopped', { listen: formatHostPort(host, bound.port) })
      })()
      return closing
    },
  }
}

function formatHostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`
}

function errorText(error: Error, cause: unknown): string {
  return cause instanceof Error && cause !== error ? `${error.message}: ${cause.message}` : error.message
}
