/**
 * Experiment (issues 15 and 17): what the session layer costs on a bulk link, in one process on
 * loopback, and where the collector's time goes.
 *
 * `node_modules/.bin/node bench/experiments/session-path.ts [runs] [MiB]` (default 5 runs of
 * 512 MiB). Two nodes listening on 127.0.0.1 (a direct TCP connection, then a bulk link after 8 MiB,
 * docs/decisions/0015-bulk-links.md) and a relay for their reservations, as
 * test/integration/direct/bulk.test.ts sets them up. Each run: one TCP connection to a's session
 * proxy for b's `sink` service; a 1 MiB buffer written again and again (no hashing, no random
 * bytes: only the data path's own work), b's sink counts. Reported per run: MB/s, CPU per MB of the
 * whole process (both nodes and the source and sink), and the collector: count and time of
 * scavenges and of mark-compacts (PerformanceObserver 'gc'). `PEERUP_BULK=off` keeps the session
 * on its libp2p stream (noise + yamux). Pass `--max-semi-space-size=2` to node to collect as
 * dist/peerup does (build.mjs): with V8's default young generation the same transfer ran no
 * scavenge at all and 11–19 full collections per 256 MiB, against 5–16 scavenges and 0–12 full
 * ones with 2 MB semi-spaces (2026-12-06, a busy machine).
 *
 * @packageDocumentation
 */

import { once } from 'node:events'
import * as inspector from 'node:inspector/promises'
import * as net from 'node:net'
import { constants, PerformanceObserver } from 'node:perf_hooks'
import { tempDir } from '../../test/helpers/cli.ts'
import { createTestNode, sessionProxy, startTestRelay } from '../../test/helpers/mesh.ts'

const MiB = 1024 * 1024
const runs = Number(process.argv[2] ?? 5)
const size = Number(process.argv[3] ?? 512) * MiB

const cleanups: Array<() => Promise<unknown>> = []
const root = await tempDir({ after: (fn) => cleanups.push(fn) })
let sunk = 0
let onSunk: (() => void) | undefined
const sink = net.createServer({ allowHalfOpen: true }, (socket) => {
  socket.on('data', (d: Buffer) => {
    sunk += d.length
  })
  socket.on('end', () => {
    socket.end()
    onSunk?.()
  })
  socket.on('error', () => {})
})
await new Promise<void>((resolve) => sink.listen(0, '127.0.0.1', resolve))
const relay = await startTestRelay(root)
const b = await createTestNode(root, 'b', relay, { direct: true })
const a = await createTestNode(root, 'a', relay, { direct: true })
for (const n of [a, b]) {
  await relay.authorize(n.peerId)
}
await b.authorize(a.peerId)
await a.authorize(b.peerId)
await b.addService('sink', `127.0.0.1:${(sink.address() as net.AddressInfo).port}`)
const rb = await b.start('daemon')
const ra = await a.start('daemon')
await ra.reach(b.peerId)
await ra.paths.waitFor(
  b.peerId,
  (s) => s.path?.type === 'DIRECT' && s.path.transport === 'tcp',
  AbortSignal.timeout(30_000),
)
const listener = await sessionProxy(ra, b, 'sink', [])

const gc = { scavenge: 0, scavengeMs: 0, major: 0, majorMs: 0, other: 0, otherMs: 0 }
const observer = new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    const kind = (e as unknown as { detail?: { kind: number } }).detail?.kind
    if (kind === constants.NODE_PERFORMANCE_GC_MINOR) {
      gc.scavenge++
      gc.scavengeMs += e.duration
    } else if (kind === constants.NODE_PERFORMANCE_GC_MAJOR) {
      gc.major++
      gc.majorMs += e.duration
    } else {
      gc.other++
      gc.otherMs += e.duration
    }
  }
})
observer.observe({ entryTypes: ['gc'] })

// HEAP_SAMPLE=1: where the last run allocated (sampled every 32 KiB, collected objects included),
// by function, largest first.
const sampling = process.env.HEAP_SAMPLE === '1' ? new inspector.Session() : undefined
sampling?.connect()
const block = Buffer.alloc(MiB, 7)
for (let run = 0; run <= runs; run++) {
  if (sampling !== undefined && run === runs) {
    await sampling.post('HeapProfiler.startSampling', {
      samplingInterval: 32 * 1024,
      includeObjectsCollectedByMajorGC: true,
      includeObjectsCollectedByMinorGC: true,
    })
  }
  Object.assign(gc, { scavenge: 0, scavengeMs: 0, major: 0, majorMs: 0, other: 0, otherMs: 0 })
  sunk = 0
  const done = new Promise<void>((resolve) => {
    onSunk = resolve
  })
  const socket = net.connect({ port: listener.address.port, host: '127.0.0.1', allowHalfOpen: true })
  await once(socket, 'connect')
  socket.on('error', () => {})
  socket.resume()
  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  for (let sent = 0; sent < size; sent += MiB) {
    if (!socket.write(block)) {
      await once(socket, 'drain')
    }
  }
  socket.end()
  await done
  const seconds = (performance.now() - t0) / 1000
  const cpu = process.cpuUsage(cpu0)
  await new Promise((resolve) => setTimeout(resolve, 50))
  const mb = size / 1e6
  const line = {
    run: run === 0 ? 'warm-up' : run,
    mbps: +(mb / seconds).toFixed(1),
    cpuMsPerMB: +((cpu.user + cpu.system) / 1000 / mb).toFixed(3),
    scavenges: gc.scavenge,
    scavengeMs: +gc.scavengeMs.toFixed(1),
    majors: gc.major,
    majorMs: +gc.majorMs.toFixed(1),
    otherGc: gc.other,
    bulk: ra.bulk.counts.opened,
    sunk: sunk === size,
  }
  console.log(JSON.stringify(line))
  socket.destroy()
}
observer.disconnect()
if (sampling !== undefined) {
  type Node = {
    callFrame: { functionName: string; url: string; lineNumber: number }
    selfSize: number
    children: Node[]
  }
  const { profile } = (await sampling.post('HeapProfiler.stopSampling')) as { profile: { head: Node } }
  const by = new Map<string, number>()
  const walk = (n: Node, parent: string): void => {
    const here = `${n.callFrame.functionName || '(anonymous)'} ${n.callFrame.url.split('/').slice(-2).join('/')}:${n.callFrame.lineNumber + 1}`
    by.set(`${here} <- ${parent}`, (by.get(`${here} <- ${parent}`) ?? 0) + n.selfSize)
    for (const c of n.children) walk(c, here)
  }
  walk(profile.head, '')
  const total = [...by.values()].reduce((x, y) => x + y, 0)
  console.log(`sampled allocations: ${(total / MiB).toFixed(1)} MiB over ${size / MiB} MiB moved`)
  for (const [k, v] of [...by].sort((x, y) => y[1] - x[1]).slice(0, 25)) {
    console.log(`${(v / MiB).toFixed(2).padStart(8)} MiB  ${k}`)
  }
}
await listener.close()
await a.stop()
await b.stop()
void rb
await relay.stop()
await new Promise<void>((resolve) => sink.close(() => resolve()))
for (const fn of cleanups) {
  await fn().catch(() => {})
}
process.exit(0)
