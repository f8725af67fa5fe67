/**
 * A local TCP listener whose every accepted connection is piped to a far end opened for it: a
 * libp2p stream to a peer's service (`peerup proxy` with a node of its own, `daemon connect`), or
 * the daemon's dial socket (`peerup proxy` through the daemon).
 *
 * @packageDocumentation
 */

import { once } from 'node:events'
import * as net from 'node:net'
import type { Logger } from '../log/index.ts'
import { DEFAULT_LISTEN_HOST, formatHostPort, type HostPort } from '../util/address.ts'
import { type RetryOptions, withRetry } from '../util/retry.ts'
import type { ByteEnd } from './end.ts'
import { ClientToldError, ListenError, ListenerClosedError, LocalClosedError, OpenError } from './errors.ts'
import { endAfterAnswer, resetSocket, socketEnd } from './node.ts'
import { type Direction, type PipeResult, pipe, type Tracked } from './pipe.ts'

/**
 * Attempts to open a service stream for one accepted local connection before its client is reset,
 * where a listener retries (a node of its own, the daemon's `connect`). Five attempts wait
 * 1 + 2 + 4 + 8 s: long enough to ride out a relay reconnect, short enough that `ssh` does not look
 * hung.
 */
export const DEFAULT_OPEN_ATTEMPTS = 5

/** What happened to one accepted local connection, for logs and metrics. */
export type ListenerEvent =
  | { type: 'opened' }
  | { type: 'open-failed'; error: Error }
  | { type: 'closed'; result: PipeResult; durationMs: number }

export interface ListenerInit {
  /** Address to bind; loopback unless the user asked otherwise. */
  host?: string
  /** Port to bind; 0 picks a free one (see {@link Listener.address}). */
  port: number
  /**
   * Opens the far end for one accepted connection; it must honour `signal`. It may first speak
   * with the client on `socket`, which it gets paused and leaves paused (the SOCKS and HTTP
   * CONNECT gateway asks it where to: src/daemon/gateway.ts); when it told the client why it
   * failed, it throws a {@link ClientToldError}.
   */
  open: (signal: AbortSignal, socket: net.Socket) => Promise<ByteEnd>
  log: Logger
  /** Backoff of opening; by default {@link DEFAULT_OPEN_ATTEMPTS} attempts, 1 s, 2 s, 4 s … */
  retry?: Omit<RetryOptions, 'signal'>
  /** Called for every accepted connection. Must not throw. */
  onConnection?: (event: ListenerEvent) => void
  /** Byte counters (`in`: from the far end to the client). Must not throw. */
  onBytes?: (direction: Direction, n: number) => void
  /**
   * A record of each connection whose far end opened (who sees it: `peerup daemon connections`),
   * into which its bytes are counted. Must not throw.
   */
  track?: (far: ByteEnd) => Tracked | undefined
}

export interface Listener {
  /** The bound address (the real port when 0 was asked for). */
  readonly address: HostPort
  /** Local connections being opened or proxied right now. */
  readonly connections: number
  /** Stops accepting, resets every active connection and resolves when all are gone. */
  close(): Promise<void>
}

/**
 * Binds a local TCP listener and pipes each accepted connection to its own far end. The client
 * socket is not read until its far end is open, so nothing it sends early is lost or buffered
 * without bound; when none can be opened the client is reset.
 */
export async function startListener(init: ListenerInit): Promise<Listener> {
  const { log } = init
  const host = init.host ?? DEFAULT_LISTEN_HOST
  const active = new Map<net.Socket, { controller: AbortController; done: Promise<void> }>()

  // pauseOnConnect: the kernel holds what the client sends until the far end exists (TCP flow
  // control instead of our memory). allowHalfOpen: a client's EOF must not end our reply.
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true })

  server.on('connection', (socket) => {
    const controller = new AbortController()
    const done = serve(init, socket, controller.signal)
      .catch((err: unknown) => {
        log.error('proxied connection failed', { error: err instanceof Error ? err : String(err) })
        resetSocket(socket)
      })
      .finally(() => active.delete(socket))
    active.set(socket, { controller, done })
  })

  server.listen({ host, port: init.port })
  await once(server, 'listening').catch((err: Error) => {
    throw new ListenError(`cannot listen on ${formatHostPort(host, init.port)}: ${err.message}`, {
      hint: 'choose another port, or stop what is using this one',
      cause: err,
    })
  })
  // After a successful listen, errors are per connection (handled there); log anything else.
  server.on('error', (err) => log.error('listener error', { error: err }))

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

/** Opens the far end for one accepted connection and pipes the two until both are done. */
async function serve(init: ListenerInit, socket: net.Socket, signal: AbortSignal): Promise<void> {
  const { log } = init
  const client = `${socket.remoteAddress}:${socket.remotePort}`
  // The client may give up while we open: stop trying then. The socket is paused, so 'end' would
  // not come; 'close' and 'error' do.
  const opening = new AbortController()
  const onGone = (): void => opening.abort(new LocalClosedError('client closed before its connection opened'))
  socket.once('close', onGone)
  socket.on('error', onGone)
  const openSignal = AbortSignal.any([signal, opening.signal])

  let far: ByteEnd
  try {
    far = await withRetry(() => init.open(openSignal, socket), {
      attempts: DEFAULT_OPEN_ATTEMPTS,
      ...init.retry,
      signal: openSignal,
      onRetry: (info) => {
        log.info('open failed, retrying', {
          client,
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
        : new OpenError('could not open a connection to the service', {
            hint: 'check that the peer is reachable (`peerup ping`) and offers the service',
            cause: err,
          })
    const text = err instanceof Error && err !== error ? `${error.message}: ${err.message}` : error.message
    if (err instanceof ClientToldError) {
      log.debug('open failed, the client was told', { client, error: text })
      endAfterAnswer(socket)
    } else {
      log.warn('open failed, resetting client', { client, error: text })
      resetSocket(socket)
    }
    init.onConnection?.({ type: 'open-failed', error })
    return
  } finally {
    socket.off('close', onGone)
    socket.off('error', onGone)
  }

  const started = Date.now()
  log.debug('proxied connection opened', { client })
  init.onConnection?.({ type: 'opened' })
  const tracked = init.track?.(far)
  // pipe() takes over the socket's error and close handling; aborting `signal` resets both ends.
  const result = await pipe(socketEnd(socket), far, {
    log,
    signal,
    ...(init.onBytes === undefined ? {} : { onBytes: init.onBytes }),
    ...(tracked === undefined ? {} : { meter: tracked }),
  })
  tracked?.done(result)
  const durationMs = Date.now() - started
  log.debug('proxied connection closed', {
    client,
    bytes_in: result.bytesIn,
    bytes_out: result.bytesOut,
    reset: result.reset,
    duration_ms: durationMs,
    ...(result.error === undefined ? {} : { error: result.error }),
  })
  init.onConnection?.({ type: 'closed', result, durationMs })
}
