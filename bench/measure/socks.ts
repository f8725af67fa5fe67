/**
 * The SOCKS5 gateway (src/daemon/gateway.ts) against `peerup proxy` on the same path: the same
 * daemon, the same session to b's bench service, only the door differs — a SOCKS handshake naming
 * `bench.b.peerup` instead of a listener bound to the service. Direct (a) and relayed (a2), in
 * pairs whose order alternates (A B, B A, …); the ratio of each pair, then the median.
 *
 * @packageDocumentation
 */

import { type BenchContext, cpuSeconds, labCpuSeconds, runClient } from '../context.ts'
import { type DaemonName, PORTS } from '../lab-setup.ts'
import { fmt, median } from '../results.ts'

/** Where the SOCKS clients connect (a's and a2's daemons both run the gateway there). */
const GATEWAY = `127.0.0.1:${PORTS.socks}`

/** The name of b's bench service behind the gateway. */
const BENCH_NAME = 'bench.b.peerup'

interface Way {
  id: 'proxy' | 'socks'
  label: string
  /** Where the client connects: host and port (with SOCKS, the name the gateway connects to). */
  target: () => Array<string | number>
}

export async function measureSocks(ctx: BenchContext): Promise<void> {
  const { bl, settings, results, log } = ctx
  const paths = [
    ...(bl.direct.ok
      ? [{ path: 'direct' as const, host: bl.a.host, daemon: 'a' as DaemonName, proxy: PORTS.proxyDirect }]
      : []),
    { path: 'relayed' as const, host: bl.a2.host, daemon: 'a2' as DaemonName, proxy: PORTS.proxyRelayed },
  ]
  const mb = settings.throughputBytes / 1e6
  for (const p of paths) {
    const ways: Way[] = [
      { id: 'proxy', label: 'peerup proxy (via daemon)', target: () => ['127.0.0.1', p.proxy] },
      { id: 'socks', label: 'SOCKS5 gateway (bench.b.peerup)', target: () => [BENCH_NAME, PORTS.bench] },
    ]
    const args = (w: Way, bytes: number, seed: number): Array<string | number> => [
      'throughput',
      ...w.target(),
      bytes,
      seed,
      ...(w.id === 'socks' ? [GATEWAY] : []),
    ]
    // Warm-up of both ways (and proof that the gateway answers).
    for (const w of ways) {
      await runClient(bl, p.host, args(w, 16 * 2 ** 20, 100), { timeoutMs: 300_000 })
    }
    const pairs = ctx.quick ? 4 : 8
    const mbps = new Map<string, number[]>(ways.map((w) => [w.id, []]))
    const cpu = new Map<string, number[]>(ways.map((w) => [w.id, []]))
    const daemonCpu = new Map<string, number[]>(ways.map((w) => [w.id, []]))
    const ratios: number[] = []
    for (let pair = 0; pair < pairs; pair++) {
      const order = pair % 2 === 0 ? ways : [...ways].reverse()
      const got = new Map<string, number>()
      for (const w of order) {
        const labBefore = labCpuSeconds(bl.lab.namespaces)
        const daemonBefore = cpuSeconds(bl.daemons[p.daemon].pid)
        const r = await runClient<{ seconds: number }>(
          bl,
          p.host,
          args(w, settings.throughputBytes, 300 + pair),
          { timeoutMs: 600_000 },
        )
        const rate = mb / r.seconds
        got.set(w.id, rate)
        mbps.get(w.id)?.push(rate)
        cpu.get(w.id)?.push(((labCpuSeconds(bl.lab.namespaces) - labBefore) * 1000) / mb)
        daemonCpu.get(w.id)?.push(((cpuSeconds(bl.daemons[p.daemon].pid) - daemonBefore) * 1000) / mb)
      }
      const ratio = (got.get('socks') as number) / (got.get('proxy') as number)
      ratios.push(ratio)
      log(
        `socks ${p.path} pair ${pair + 1}/${pairs} (${order.map((w) => w.id).join(' then ')}): proxy ${fmt(got.get('proxy') as number)} MB/s, socks ${fmt(got.get('socks') as number)} MB/s, ratio ${ratio.toFixed(3)}`,
      )
    }
    for (const w of ways) {
      results.add({
        id: `gateway.${p.path}.${w.id}`,
        group: 'gateway',
        label: w.label,
        path: p.path,
        unit: 'MB/s',
        values: mbps.get(w.id) ?? [],
        better: 'higher',
        note: `CPU per MB over the lab ${fmt(median(cpu.get(w.id) ?? [Number.NaN]))} ms/MB, client daemon ${fmt(median(daemonCpu.get(w.id) ?? [Number.NaN]))} ms/MB; ${pairs} pairs, order alternating`,
      })
    }
    results.add({
      id: `gateway.${p.path}.ratio`,
      group: 'gateway',
      label: 'SOCKS5 gateway ÷ peerup proxy, per pair',
      path: p.path,
      unit: '×',
      values: ratios,
      better: 'higher',
    })
  }
}
