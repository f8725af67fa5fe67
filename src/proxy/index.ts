/**
 * The TCP proxy: a bridge between a TCP socket (or stdio) and a libp2p stream, the stream handler
 * that exposes a local service, and the local listener that reaches a remote one. Bytes flow with
 * backpressure and half-close both ways; a failure on either side resets the other.
 *
 * @packageDocumentation
 */

export { backoffDelayMs, type RetryOptions, sleep, withRetry } from './backoff.ts'
export { type BridgeOptions, type BridgeResult, bridge, type Direction, resetSocket } from './bridge.ts'
export {
  DEFAULT_LISTEN_HOST,
  DEFAULT_LOCAL_DIAL_TIMEOUT_MS,
  DEFAULT_OPEN_ATTEMPTS,
  DEFAULT_RETRY_BASE_MS,
  DEFAULT_RETRY_MAX_MS,
  MAX_EARLY_STREAMS,
  MAX_READ_BUFFER_BYTES,
  MAX_SERVICE_STREAMS,
  MAX_STREAM_WINDOW_BYTES,
  SERVICE_DIAL_OPTIONS,
  SERVICE_HANDLE_OPTIONS,
  YAMUX_OPTIONS,
} from './constants.ts'
export {
  ListenError,
  ListenerClosedError,
  LocalClosedError,
  LocalServiceUnavailableError,
  PeerNotAllowedError,
  ProxyError,
  ServiceClosedError,
  StreamOpenError,
  TransferInterruptedError,
} from './errors.ts'
export {
  type ListenerEvent,
  type ProxyListener,
  type ProxyListenerInit,
  startProxyListener,
} from './listener.ts'
export {
  createServiceHandler,
  type HostPort,
  parseHostPort,
  type ServiceEvent,
  type ServiceHandler,
  type ServiceHandlerInit,
} from './service.ts'
export { proxyStdio, type StdioOptions } from './stdio.ts'
