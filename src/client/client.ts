/**
 * What a command needs of a node, the same whether the node is the running daemon's (reached
 * through its socket, src/client/local.ts) or one started in this process for one command
 * (src/daemon/in-process.ts): every route of the contract, typed by it, and a connection to a
 * peer's service as an end of a pipe. A network command is written once, against this.
 *
 * @packageDocumentation
 */

import type { CallRoute, Input, Line, LinesRoute, Output } from '../api/index.ts'
import type { ByteEnd } from '../pipe/end.ts'

export interface DialOptions {
  /** How long to wait for a peer that cannot be reached yet. */
  waitMs?: number
}

export interface Client {
  /** Calls a route that answers with data. */
  call<K extends CallRoute>(route: K, input: Input<K>, signal?: AbortSignal): Promise<Output<K>>
  /** Calls a route that answers with lines as things happen; a failure ends them with its error. */
  lines<K extends LinesRoute>(route: K, input: Input<K>, signal?: AbortSignal): AsyncGenerator<Line<K>>
  /**
   * A connection to `service` on `peer`, to pipe. With `waitMs`, a peer that cannot be reached
   * yet is waited for that long (src/p2p/wait.ts) before the dial fails.
   */
  dial(peer: string, service: string, signal?: AbortSignal, options?: DialOptions): Promise<ByteEnd>
  /** Releases what the client holds (an in-process node stops). */
  close(): Promise<void>
}
