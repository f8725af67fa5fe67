/**
 * The exposing side of a service: checks the peer, dials the local TCP service and pipes the two —
 * for a resumable session (src/proxy/sessions.ts), or for a plain stream on `/peerup/<name>/1.0.0`.
 *
 * @packageDocumentation
 */

import { once } from 'node:events'
import * as net from 'node:net'
import type { Connection, Stream, StreamHandler } from '@libp2p/interface'
import type { Logger } from '../log/index.ts'
import type { ByteEnd } from '../pipe/end.ts'
import { TransferInterruptedError } from '../pipe/errors.ts'
import { socketEnd } from '../pipe/node.ts'
import { type Direction, type PipeResult, pipe, type Tracked } from '../pipe/pipe.ts'
import { serviceStreamEnd } from '../pipe/stream.ts'
import { formatHostPort, type HostPort, parseHostPort } from '../util/address.ts'
import { DEFAULT_LOCAL_DIAL_TIMEOUT_MS } from './constants.ts'
import { LocalServiceUnavailableError, PeerNotAllowedError, ServiceClosedError } from './errors.ts'

/** What happened to one inbound service stream, for the audit log and metrics. */
export type ServiceEvent =
  | { type: 'denied'; service: string; peer: string; error: PeerNotAllowedError }
  | { type: 'dial-failed'; service: string; peer: string; error: Error }
  | { type: 'opened'; service: string; peer: string }
  | { type: 'closed'; service: string; peer: string; result: PipeResult; durationMs: number }

/** How an inbound connection's bytes reach the peer, for its record (`peerup daemon connections`). */
export interface InboundRoute {
  /** The libp2p connection it runs over now; undefined while a session waits for its link. */
  connection: () => Connection | undefined
  /** A resumable session, not a plain stream. */
  resumable: boolean
}

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
  /** A record of each connection, into which pipe() counts its bytes. Must not throw. */
  track?: (peer: string, route: InboundRoute) => Tracked | undefined
}

/** A service's stream handler, plus what the daemon needs to stop it in order. */
export interface ServiceHandler extends StreamHandler {
  /** Connections being dialled or proxied right now. */
  readonly connections: number
  /**
   * A connection for `peer`: the peer checked against the service's ACL, then the local address
   * dialled (on `port` instead of its own, for a service with `ports:`); rejects with what refused
   * it (the caller says so to the peer). `gone` aborts the dial
   * when the peer gives up first.
   */
  accept(peer: string, gone: AbortSignal, port?: number): Promise<net.Socket>
  /** Pipes `far` (a stream, a resumable session, going over `route`) to an accepted local connection until both are done. */
  run(peer: string, socket: net.Socket, far: ByteEnd, route: InboundRoute): Promise<void>
  /**
   * Resets every connection and refuses new ones. Call it before stopping libp2p or unhandling the
   * protocol, so clients see resets rather than whatever the connection teardown looks like.
   */
  close(): Promise<void>
}

/**
 * Creates the handler of one exposed service. Register it with
 * `libp2p.handle(serviceProtocolId(name), handler, SERVICE_HANDLE_OPTIONS)`: the default limit of 32
 * inbound streams per connection would reset the 33rd parallel one. Resumable sessions reach the
 * same service through {@link ServiceHandler.accept} and {@link ServiceHandler.run}
 * (src/proxy/sessions.ts).
 */
export function createServiceHandler(init: ServiceHandlerInit): ServiceHandler {
  const { name: service, log, onConnection } = init
  const target = parseHostPort(init.localAddress)
  const dialTimeoutMs = init.dialTimeoutMs ?? DEFAULT_LOCAL_DIAL_TIMEOUT_MS
  const active = new Set<Promise<void>>()
  const closing = new AbortController()

  const accept = async (peer: string, gone: AbortSignal, port = target.port): Promise<net.Socket> => {
    if (closing.signal.aborted) {
      throw new ServiceClosedError(service)
    }
    if (!init.isAllowed(peer)) {
      const error = new PeerNotAllowedError(service, peer)
      log.warn('peer not allowed for service', { service, peer })
      onConnection?.({ type: 'denied', service, peer, error })
      throw error
    }
    const to = { host: target.host, port }
    try {
      return await dialLocal(to, dialTimeoutMs, AbortSignal.any([gone, closing.signal]))
    } catch (err) {
      if (closing.signal.aborted) {
        throw closing.signal.reason
      }
      if (gone.aborted) {
        throw new TransferInterruptedError('the peer went away while the local service was dialled')
      }
      const local = formatHostPort(to.host, to.port)
      const error = new LocalServiceUnavailableError(service, local, describeDialError(err), { cause: err })
      log.warn('local service unavailable', { service, peer, local, error })
      onConnection?.({ type: 'dial-failed', service, peer, error })
      throw error
    }
  }

  const run = async (peer: string, socket: net.Socket, far: ByteEnd, route: InboundRoute): Promise<void> => {
    const started = Date.now()
    log.info('service connection opened', { service, peer })
    onConnection?.({ type: 'opened', service, peer })
    const tracked = init.track?.(peer, route)
    const result = await pipe(socketEnd(socket), far, {
      log,
      signal: closing.signal,
      ...(init.onBytes === undefined ? {} : { onBytes: init.onBytes }),
      ...(tracked === undefined ? {} : { meter: tracked }),
    })
    tracked?.done(result)
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

  const serveStream = async (stream: Stream, connection: Connection): Promise<void> => {
    // The client starts sending as soon as its stream is open, while we are still dialling. Unread,
    // that data would pile up in the stream's read buffer with the yamux window still being granted,
    // until the stream resets itself (StreamBufferError). Paused, yamux stops granting window.
    if (stream.readStatus !== 'readable') {
      // Reset (or closed for reading) before we got to it: nothing to serve.
      stream.abort(new TransferInterruptedError('the stream closed before the session started'))
      return
    }
    stream.pause()
    const gone = new AbortController()
    stream.addEventListener('close', () => gone.abort(), { once: true })
    let socket: net.Socket
    try {
      socket = await accept(connection.remotePeer.toString(), gone.signal)
    } catch (err) {
      // A reset, not a close: the client must see a failure, not an empty but complete session.
      stream.abort(err instanceof Error ? err : new Error(String(err)))
      return
    }
    await run(connection.remotePeer.toString(), socket, serviceStreamEnd(stream), {
      connection: () => connection,
      resumable: false,
    })
  }

  // Connections are tracked until they are over, so that close() can wait for them.
  const track = (work: Promise<void>): Promise<void> => {
    const done = work.finally(() => active.delete(done))
    active.add(done)
    return done
  }

  // libp2p awaits the handler before finishing its middleware chain; the session can last days, so
  // the handler returns at once and the session runs on its own.
  const handler = (stream: Stream, connection: Connection): void => {
    void track(
      serveStream(stream, connection).catch((err: unknown) => {
        log.error('service handler failed', { service, error: err instanceof Error ? err : String(err) })
        stream.abort(err instanceof Error ? err : new Error(String(err)))
      }),
    )
  }
  // defineProperties, not Object.assign: assign would copy the getter's value once.
  return Object.defineProperties(handler, {
    connections: { get: () => active.size },
    accept: { value: accept },
    run: {
      value: (peer: string, socket: net.Socket, far: ByteEnd, route: InboundRoute) =>
        track(run(peer, socket, far, route)),
    },
    close: {
      value: async (): Promise<void> => {
        closing.abort(new ServiceClosedError(service))
        await Promise.all(active)
      },
    },
  }) as ServiceHandler
}

/**
 * Connects to the local service, giving up after `timeoutMs` or when `signal` fires first (the
 * peer gave up, the service closed): no socket is left behind either way.
 */
async function dialLocal(target: HostPort, timeoutMs: number, signal: AbortSignal): Promise<net.Socket> {
  const socket = net.connect({ host: target.host, port: target.port, allowHalfOpen: true, noDelay: true })
  const timeout = AbortSignal.timeout(timeoutMs)
  try {
    await once(socket, 'connect', { signal: AbortSignal.any([signal, timeout]) })
    return socket
  } catch (err) {
    socket.destroy()
    throw timeout.aborted && !signal.aborted ? new Error(`no answer within ${timeoutMs} ms`) : err
  }
}

function describeDialError(err: unknown): string {
  const code = (err as { code?: unknown } | undefined)?.code
  if (code === 'ECONNREFUSED') {
    return 'refused the connection'
  }
  return `is unreachable: ${err instanceof Error ? err.message : String(err)}`
}
