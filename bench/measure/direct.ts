/**
 * Time to a direct path: `peerup ping b --until-direct --no-daemon` on a, a node of its own started
 * for each run (so it has no connection to b yet), behind the lab's cone NATs; the figure is from
 * the command's first dial to DIRECT — the time to reach b through the relay (`connectMs`) plus the
 * upgrade's time from the relayed connection to the direct one (`upgrade.timeToDirectMs`). Once
 * with the TCP punch (src/p2p/punch.ts), once with it off (`PEERUP_PUNCH=off`, src/env.ts), which
 * leaves WebRTC, the fallback.
 *
 * @packageDocumentation
 */

import type { BenchContext } from '../context.ts'
import { median } from '../results.ts'

const WAYS = [
  { id: 'punch', label: 'time to DIRECT: TCP punch', transport: 'tcp', env: {} },
  {
    id: 'webrtc',
    label: 'time to DIRECT: WebRTC (punch off)',
    transport: 'webrtc',
    env: { PEERUP_PUNCH: 'off' },
  },
] as const

export async function measureDirect(ctx: BenchContext): Promise<void> {
  const { bl, settings, results, log } = ctx
  const { a } = bl
  for (const way of WAYS) {
    const total: number[] = []
    const upgrade: number[] = []
    for (let i = 0; i < settings.ttfbSlowRuns; i++) {
      const r = await a.host.run(
        a.exe,
        [
          'ping',
          'b',
          '--until-direct',
          '--no-daemon',
          '--interval',
          '200ms',
          '--deadline',
          '30s',
          '--json',
          '--config',
          a.config,
        ],
        { env: { ...a.env, ...way.env }, timeoutMs: 60_000 },
      )
      const report = r.code === 0 ? JSON.parse(r.stdout) : undefined
      if (report?.finalPath?.type !== 'DIRECT' || report.finalPath.transport !== way.transport) {
        log(`${way.id}: run ${i + 1} did not go DIRECT over ${way.transport}: ${r.stderr.trim()}`)
        continue
      }
      upgrade.push(report.upgrade.timeToDirectMs)
      total.push(report.connectMs + report.upgrade.timeToDirectMs)
    }
    if (total.length === 0) {
      results.note(`${way.label}: no run went DIRECT`)
      continue
    }
    results.add({
      id: `direct.${way.id}`,
      group: 'direct',
      label: way.label,
      path: 'direct',
      unit: 'ms',
      values: total,
      better: 'lower',
      note: `of which the upgrade after the relayed connection: median ${Math.round(median(upgrade))} ms; ${total.length} of ${settings.ttfbSlowRuns} runs went direct`,
    })
  }
}
