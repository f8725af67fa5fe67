/**
 * A client of a node started in this process for one command, when no daemon runs (or
 * `--no-daemon`): the same handlers the daemon serves (src/daemon/routes/), called directly, behind
 * the same interface as the daemon's socket client. A network command is written once.
 *
 * @packageDocumentation
 */

import { ROUTES, type RouteSpec } from '../api/index.ts'
import type { Client } from '../client/client.ts'
import type { Logger } from '../log/index.ts'
import { NO_OBSERVER } from '../metrics/observer.ts'
import { startNodeRuntime } from '../p2p/runtime.ts'
import { DaemonEvents } from './events.ts'
import { ProxyManager } from './proxies.ts'
import { checkInput, type HandlerContext, handlersFor, reportOf } from './routes/index.ts'

/**
 * Starts a node that dials out only (no listening, no reservation, no services) and returns a
 * client of it; `close()` stops the node.
 */
export async function startInProcessClient(options: { configFile: string; log: Logger }): Promise<Client> {
  const rt = await startNodeRuntime({
    configFile: options.configFile,
    log: options.log,
    exposeServices: false,
    listen: [],
  })
  const proxies = new ProxyManager(rt, options.log.child('proxies'))
  const handlers = handlersFor({
    rt,
    proxies,
    events: new DaemonEvents(rt),
    log: options.log,
    startedAt: new Date(),
    shutdown: () => {},
    observer: NO_OBSERVER,
  })
  const invoke = (route: keyof typeof ROUTES, input: unknown, signal?: AbortSignal, streaming = false) =>
    (handlers[route] as (input: unknown, r: HandlerContext) => unknown)(checkInput(ROUTES[route], input), {
      signal: signal ?? new AbortController().signal,
      streaming,
    })
  return {
    call: async (route, input, signal) => {
      const answer = invoke(route, input, signal)
      return (
        (ROUTES[route] as RouteSpec).lines === undefined
          ? await answer
          : await reportOf(answer as AsyncIterable<unknown>)
      ) as never
    },
    lines: (route, input, signal) =>
      (invoke(route, input, signal, true) as AsyncIterable<never>)[Symbol.asyncIterator]() as never,
    dial: (peer, service, signal, options = {}) =>
      handlers.dial(
        { peer, service, ...(options.waitMs === undefined ? {} : { waitMs: options.waitMs }) },
        { signal: signal ?? new AbortController().signal, streaming: false },
      ),
    close: async () => {
      await proxies.stop()
      await rt.stop()
    },
  }
}
