/**
 * A preload (`node --import bench/raise-limits.ts …`) for the capacity what-if only: raises
 * libp2p's default `connectionManager.maxConnections` (300, in connection-manager/constants.js) to
 * `$BENCH_MAX_CONNECTIONS` in this one process, the same effect as the relay passing
 * `connectionManager: { maxConnections }` to createLibp2p. The product is not changed.
 *
 * @packageDocumentation
 */

import { registerHooks } from 'node:module'

const max = Number(process.env.BENCH_MAX_CONNECTIONS ?? '4096')
const TARGET = /\/libp2p\/dist\/src\/connection-manager\/constants\.js$/
let patched = false

registerHooks({
  load(url, context, nextLoad) {
    const result = nextLoad(url, context)
    if (TARGET.test(url) && result.source !== undefined) {
      const before = String(result.source)
      const after = before.replace(/MAX_CONNECTIONS = 300;/, `MAX_CONNECTIONS = ${max};`)
      if (after !== before) {
        patched = true
        console.error(`bench: libp2p maxConnections raised from 300 to ${max} in this process`)
      }
      return { ...result, source: after }
    }
    return result
  },
})

process.on('exit', () => {
  if (!patched) {
    console.error('bench: libp2p connection-manager constants were never loaded; nothing raised')
  }
})
