/**
 * Helpers on prom-client's metric objects that need no prom-client of their own, so that modules a
 * daemon always loads (src/daemon/node.ts) can use them without loading prom-client when metrics are
 * off (src/metrics/index.ts is imported only when they are on; docs/decisions/0018-daemon-idle-memory.md).
 *
 * @packageDocumentation
 */

import type { Counter } from 'prom-client'

/** Sets a counter to a total kept elsewhere (read at scrape time). */
export function setCounter<L extends string>(
  counter: Counter<L>,
  value: number,
  labels?: Partial<Record<L, string>>,
): void {
  if (labels === undefined) {
    counter.reset()
    counter.inc(value)
  } else {
    counter.remove(labels as never)
    counter.inc(labels as never, value)
  }
}
