/**
 * Request/response latency: small messages echoed one at a time over one connection per path
 * (after a warm-up), p50 and p99 of each run; paths take turns within each run.
 *
 * @packageDocumentation
 */

import { type BenchContext, runClient } from '../context.ts'
import type { Endpoint } from '../lab-setup.ts'
import { percentile } from '../results.ts'

export async function measureLatency(ctx: BenchContext): Promise<void> {
  const { bl, settings, results, log } = ctx
  const endpoints = bl.endpoints
  const p50 = new Map<string, number[]>(endpoints.map((e) => [e.id, []]))
  const p99 = new Map<string, number[]>(endpoints.map((e) => [e.id, []]))
  for (let run = 0; run < settings.runs; run++) {
    const order = endpoints.map((_, i) => endpoints[(i + run) % endpoints.length] as Endpoint)
    for (const e of order) {
      let r: { rttMs: number[] }
      try {
        r = await runClient<{ rttMs: number[] }>(
          bl,
          e.host,
          ['latency', e.ip, e.port, settings.latencyRoundTrips, settings.latencyBytes, 50],
          { timeoutMs: 300_000 },
        )
      } catch (err) {
        results.note(`latency ${e.label} [${e.path}] run ${run + 1} FAILED: ${(err as Error).message}`)
        continue
      }
      p50.get(e.id)?.push(percentile(r.rttMs, 50))
      p99.get(e.id)?.push(percentile(r.rttMs, 99))
      log(
        `latency run ${run + 1}/${settings.runs} ${e.id}: p50 ${percentile(r.rttMs, 50).toFixed(3)} ms, p99 ${percentile(r.rttMs, 99).toFixed(3)} ms`,
      )
    }
  }
  for (const e of endpoints) {
    for (const [which, values] of [
      ['p50', p50],
      ['p99', p99],
    ] as const) {
      if ((values.get(e.id) ?? []).length === 0) {
        results.fail(`latency ${which} ${e.label} [${e.path}]`, new Error('every run failed'))
        continue
      }
      results.add({
        id: `latency.${e.id}.${which}`,
        group: `latency ${which}`,
        label: e.label,
        path: e.path,
        unit: 'ms',
        values: values.get(e.id) ?? [],
        better: 'lower',
      })
    }
  }
}
