/**
 * Waiting, bounded, for a peer to become reachable. A proxied connection that arrives while its
 * peer is down, restarting, or not yet reserved on a relay (after its own restart, or the
 * relay's) is not refused at once: it tries again every 0.5 s, 1 s, then every 2 s — and at once
 * when a connection to that peer opens — until the peer answers or the bound passes (config
 * `proxy.connect_timeout`, 30 s by default: the order of ssh's ConnectTimeout, so ssh's own
 * timeout, when it has one, speaks first). A refusal (the peer does not offer the service, its
 * gater refuses us, the name is unknown) does not change by waiting and ends it at once.
 *
 * @packageDocumentation
 */

import type { PeerId } from '@libp2p/interface'
import type { TypedEventTarget } from 'main-event'
import { formatError, NotFoundError, UsageError } from '../errors.ts'
import { backoffDelayMs } from '../util/retry.ts'
import { PeerRefusedError, PeerUnreachableError, ServiceRefusedError } from './errors.ts'
import type { PeerupLibp2p } from './node.ts'

/** First delay before a waiting connection tries its peer again. */
export const WAIT_RETRY_BASE_MS = 500

/** Longest delay between two tries of a waiting connection. */
export const WAIT_RETRY_MAX_MS = 2_000

export interface WaitOptions {
  /** Its `peer:connect` events wake the wait early. */
  node: PeerupLibp2p
  /** The peer as the user named it, for the error. */
  peer: string
  /** Its peer id now (a name may be renamed meanwhile); undefined when it does not resolve. */
  peerId: () => string | undefined
  /** The bound. */
  waitMs: number
  /** Aborting stops at once, with the signal's reason. */
  signal?: AbortSignal | undefined
  /** Called before each delay, for logs. */
  onRetry?: (info: { attempt: number; delayMs: number; error: unknown }) => void
}

/** Errors that waiting does not change. */
export function isRefusal(err: unknown): boolean {
  return (
    err instanceof ServiceRefusedError ||
    err instanceof PeerRefusedError ||
    err instanceof NotFoundError ||
    err instanceof UsageError
  )
}

/**
 * Calls `attempt` (with its number, from 1) until it resolves, it fails with a refusal ({@link isRefusal}), or
 * `options.waitMs` passes: then it rejects with a {@link PeerUnreachableError} that says how long
 * it waited and why the last attempt failed. An attempt in flight when the bound passes is
 * aborted through its signal.
 */
export async function untilReachable<T>(
  attempt: (signal: AbortSignal, n: number) => Promise<T>,
  options: WaitOptions,
): Promise<T> {
  const deadline = AbortSignal.timeout(options.waitMs)
  const signal = options.signal === undefined ? deadline : AbortSignal.any([options.signal, deadline])
  let last: unknown
  for (let i = 1; ; i++) {
    try {
      return await attempt(signal, i)
    } catch (err) {
      options.signal?.throwIfAborted()
      if (!deadline.aborted) {
        if (isRefusal(err)) {
          throw err
        }
        last = err
      }
    }
    if (!deadline.aborted) {
      const delayMs = backoffDelayMs(i, { baseMs: WAIT_RETRY_BASE_MS, maxMs: WAIT_RETRY_MAX_MS })
      options.onRetry?.({ attempt: i, delayMs, error: last })
      // A connection to the peer opening ends the delay early.
      const peerId = options.peerId()
      const opened = (evt: CustomEvent<PeerId>): boolean => evt.detail.toString() === peerId
      if (!signal.aborted) {
        await nextEvent(options.node, 'peer:connect', opened, delayMs, signal)
      }
      options.signal?.throwIfAborted()
    }
    if (deadline.aborted) {
      const seconds = Math.round(options.waitMs / 100) / 10
      throw new PeerUnreachableError(
        `${options.peer} did not become reachable within ${seconds} s${last === undefined ? '' : `: ${formatError(last)}`}`,
        {
          hint: `check that its daemon runs (\`peerup ping ${options.peer}\`); proxy.connect_timeout sets how long a connection waits`,
          cause: last,
        },
      )
    }
  }
}

/**
 * Resolves with the event when `target` emits `type` with one `match` accepts; with undefined after
 * `ms` (when given), or when `signal` aborts later (a signal already aborted does not end the wait).
 */
// biome-ignore lint/suspicious/noExplicitAny: TypedEventTarget's own constraint (an interface of events is no Record<string, unknown>)
export function nextEvent<M extends Record<string, any>, K extends keyof M & string>(
  target: TypedEventTarget<M>,
  type: K,
  match: (evt: M[K]) => boolean,
  ms: number | undefined,
  signal: AbortSignal,
): Promise<M[K] | undefined> {
  return new Promise((resolve) => {
    const done = (evt?: M[K]): void => {
      clearTimeout(timer)
      target.removeEventListener(type, onEvent)
      signal.removeEventListener('abort', onAbort)
      resolve(evt)
    }
    const onEvent = (evt: M[K]): void => {
      if (match(evt)) {
        done(evt)
      }
    }
    const onAbort = (): void => done()
    const timer = ms === undefined ? undefined : setTimeout(done, ms)
    target.addEventListener(type, onEvent)
    signal.addEventListener('abort', onAbort, { once: true })
  })
}
