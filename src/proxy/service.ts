/**
 * The exposing side of a service: a libp2p stream handler for `/peerup/<name>/1.0.0` that checks the
 * peer, dials the local TCP service and bridges the two.
 *
 * @packageDocumentation
 */

import * as net from 'node:net'
import type { Connection, Stream, StreamHandler } from '@libp2p/interface'
import type { Logger } from '../log/index.ts'
import { TransferInterruptedError } from '../pipe/errors.ts'
import { socketEnd } from '../pipe/node.ts'
import { type Direction, type PipeResult, pipe } from '../pipe/pipe.ts'
import { serviceStreamEnd } from '../pipe/stream.ts'
import { type HostPort, parseHostPort } from '../util/address.ts'
import { DEFAULT_LOCAL_DIAL_TIMEOUT_MS } from './constants.ts'
import { LocalServiceUnavailableError, PeerNotAllowedError, ServiceClosedError } from './errors.ts'

/** What happened to one inbound service stream, for the audit log and metrics. */
export type ServiceEvent =
  | { type: 'denied'; service: string; peer: string; error: PeerNotAllowedError }
  | { type: 'dial-failed'; service: string; peer: string; error: Error }
  | { type: 'opened'; service: string; peer: string }
  | { type: 'closed'; service: string; peer: string; result: PipeResult; durationMs: number }

/** Options of {@link createServiceHandler}. */
export interface ServiceHandlerInit {
  /** The service name from the config (`ssh`). */
  name: string
  /** The local TCP service, `host:port` (`127.0.0.1:22`, `[::1]:22`, `localhost:8080`). */
  localAddress: string
  /** Whether the remote peer (a peer id string) may use this service; checked for every stream. */
  isAllowed: (peerId: string) => boolean
  /** How long to wait for the local service to accept. */
  dialTimeoutMs?: number
  log: Logger
  /** Called for every stream: refused, failed, opened, closed. Must not throw. */
  onConnection?: (event: ServiceEvent) => void
  /** Byte counters (`in`: from the peer to the local service). Must not throw. */
  onBytes?: (direction: Direction, n: number) => void
}

/** A service's stream handler, plus what the daemon needs to stop it in order. */
export interface ServiceHandler extends StreamHandler {
  /** Sessions being dialled or proxied right now. */
  readonly connections: number
  /**
   * Resets every session and refuses new streams. Call it before stopping libp2p or unhandling the
   * protocol, so clients see resets rather than whatever the connection teardown looks like.
   */
  close(): Promise<void>
}

/**
 * Creates the stream handler of one exposed service. Register it with
 * `libp2p.handle(serviceProtocolId(name), handler, SERVICE_HANDLE_OPTIONS)`: the default limit of 32
 * inbound streams per connection would reset the 33rd parallel session.
 */
export function createServiceHandler(init: ServiceHandlerInit): ServiceHandler {
  const { name: service, log, onConnection } = init
  const target = parseHostPort(init.localAddress)
  const dialTimeoutMs = init.dialTimeoutMs ?? DEFAULT_LOCAL_DIAL_TIMEOUT_MS
  const active = new Set<Promise<void>>()
  const closing = new AbortController()

  const serve = async (stream: Stream, connection: Connection): Promise<void> => {
    const peer = connection.remotePeer.toString()
    if (closing.signal.aborted) {
      stream.abort(new ServiceClosedError(service))
      return
    }
    if (!init.isAllowed(peer)) {
      const error = new PeerNotAllowedError(service, peer)
      log.warn('peer not allowed for service', { service, peer })
      stream.abort(error)
      onConnection?.({ type: 'denied', service, peer, error })
      return
    }

    // The client starts sending as soon as its stream is open, while we are still dialling. Unread,
    // that data would pile up in the stream's read buffer with the yamux window still being granted,
    // until the stream resets itself (StreamBufferError). Paused, yamux stops granting window.
    if (stream.readStatus !== 'readable') {
      // Reset (or closed for reading) before we got to it: nothing to serve.
      stream.abort(new TransferInterruptedError('the stream closed before the session started'))
      return
    }
    stream.pause()

    let socket: net.Socket
    try {
      socket = await dialLocal(target, dialTimeoutMs, stream, closing.signal)
    } catch (err) {
      if (closing.signal.aborted) {
        stream.abort(closing.signal.reason)
        return
      }
      if (err instanceof TransferInterruptedError) {
        log.debug('client went away while the local service was dialled', { service, peer })
        return
      }
      const error = new LocalServiceUnavailableError(service, init.localAddress, describeDialError(err), {
        cause: err,
      })
      log.warn('local service unavailable', { service, peer, local: init.localAddress, error })
      // A reset, not a close: the client must see a failure, not an empty but complete session.
      stream.abort(error)
      onConnection?.({ type: 'dial-failed', service, peer, error })
      return
    }

    const started = Date.now()
    log.info('service connection opened', { service, peer })
    onConnection?.({ type: 'opened', service, peer })
    const result = await pipe(socketEnd(socket), serviceStreamEnd(stream), {
      log,
      signal: closing.signal,
      ...(init.onBytes === undefined ? {} : { onBytes: init.onBytes }),
    })
    const durationMs = Date.now() - started
    log.info('service connection closed', {
      service,
      peer,
      bytes_in: result.bytesIn,
      bytes_out: result.bytesOut,
      reset: result.reset,
      duration_ms: durationMs,
      ...(result.error === undefined ? {} : { error: result.error }),
    })
    onConnection?.({ type: 'closed', service, peer, result, durationMs })
  }

  // libp2p awaits the handler before finishing its middleware chain; the session can last days, so
  // the handler returns at once and the session runs on its own.
  const handler = (stream: Stream, connection: Connection): void => {
    const session = serve(stream, connection)
      .catch((err: unknown) => {
        log.error('service handler failed', { service, error: err instanceof Error ? err : String(err) })
        stream.abort(err instanceof Error ? err : new Error(String(err)))
      })
      .finally(() => {
        active.delete(session)
      })
    active.add(session)
  }
  // defineProperties, not Object.assign: assign would copy the getter's value once.
  return Object.defineProperties(handler, {
    connections: { get: () => active.size },
    close: {
      value: async (): Promise<void> => {
        closing.abort(new ServiceClosedError(service))
        await Promise.all(active)
      },
    },
  }) as ServiceHandler
}

/**
 * Connects to the local service, giving up after `timeoutMs` or when the stream closes first (the
 * client gave up): no socket is left behind either way.
 */
function dialLocal(
  target: HostPort,
  timeoutMs: number,
  stream: Stream,
  signal: AbortSignal,
): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: target.host, port: target.port, allowHalfOpen: true, noDelay: true })
    const cleanup = (): void => {
      clearTimeout(timer)
      socket.off('connect', onConnect)
      socket.off('error', onError)
      stream.removeEventListener('close', onStreamClose)
      signal.removeEventListener('abort', onStreamClose)
    }
    const onConnect = (): void => {
      cleanup()
      resolve(socket)
    }
    const onError = (err: Error): void => {
      cleanup()
      socket.destroy()
      reject(err)
    }
    const onStreamClose = (): void => {
      onError(new TransferInterruptedError('the stream closed while the local service was being dialled'))
    }
    const timer = setTimeout(() => {
      onError(new Error(`no answer within ${timeoutMs} ms`))
    }, timeoutMs)
    socket.once('connect', onConnect)
    socket.once('error', onError)
    stream.addEventListener('close', onStreamClose, { once: true })
    signal.addEventListener('abort', onStreamClose, { once: true })
  })
}

function describeDialError(err: unknown): string {
  const code = (err as { code?: unknown } | undefined)?.code
  if (code === 'ECONNREFUSED') {
    return 'refused the connection'
  }
  if (err instanceof Error) {
    return `is unreachable: ${err.message}`
  }
  return `is unreachable: ${String(err)}`
}
