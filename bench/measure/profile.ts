/**
 * CPU profiles of the processes that carry a proxied stream, one transfer per path, to show where
 * the time goes. The processes are restarted from the sources (`node --cpu-prof bin/peerup.js`,
 * the same code as the executable, but with file names that say which package each function is
 * in), one scenario at a time so each profile holds one path's work:
 *
 * - relayed: relay, daemon on b, daemon on a2, `peerup proxy` on a2;
 * - direct (a TCP punch, docs/decisions/0007-direct-path-transport.md): daemon on b, daemon on a, `peerup proxy` on a.
 *
 * Only samples taken during the measured transfer count (a first transfer warms the JIT up), so
 * start-up and idle time are left out. This runs after the other measurements on the main lab: it
 * leaves its daemons stopped.
 *
 * @packageDocumentation
 */

import * as fs from 'node:fs'
import * as path from 'node:path'
import type { LabProcess } from '../../test/e2e/lab.ts'
import { type BenchContext, cpuSeconds, rssMB, runClient } from '../context.ts'
import { type ProfileWindow, summarizeProfile } from '../cpuprofile.ts'
import { type PeerupNode, PORTS, ROOT } from '../lab-setup.ts'

const ENTRY = path.join(ROOT, 'bin', 'peerup.js')

export async function measureProfiles(ctx: BenchContext): Promise<void> {
  const { bl, settings, results, log } = ctx
  const profRoot = path.join(ctx.outDir, 'profiles')
  fs.mkdirSync(profRoot, { recursive: true })
  const started: Array<{ name: string; scenario: string; proc: LabProcess; dir: string }> = []
  const fromSource = (node: PeerupNode, args: string[], name: string, scenario: string): LabProcess => {
    const dir = path.join(profRoot, scenario, name)
    fs.rmSync(dir, { recursive: true, force: true })
    fs.mkdirSync(dir, { recursive: true })
    const proc = node.host.spawn(bl.lab.node, ['--cpu-prof', `--cpu-prof-dir=${dir}`, ENTRY, ...args], {
      env: node.env,
      label: `prof-${scenario}-${name}`,
    })
    started.push({ name, scenario, proc, dir })
    return proc
  }
  const daemon = async (node: PeerupNode, name: string, scenario: string): Promise<LabProcess> => {
    const proc = fromSource(node, ['daemon', '--config', node.config, '--log-level', 'info'], name, scenario)
    await proc.waitForOutput(/"msg":"reservation held"/, 60_000)
    await node.peerup(['daemon', 'status', '--config', node.config], 20_000)
    return proc
  }
  const proxy = async (
    node: PeerupNode,
    port: number,
    name: string,
    scenario: string,
  ): Promise<LabProcess> => {
    const proc = fromSource(
      node,
      ['proxy', 'b', 'bench', `127.0.0.1:${port}`, '--config', node.config],
      name,
      scenario,
    )
    await proc.waitForOutput(new RegExp(`127\\.0\\.0\\.1:${port}`), 60_000)
    return proc
  }
  const windows = new Map<string, ProfileWindow>()
  const nowUs = (): number => Number(process.hrtime.bigint() / 1000n)
  const transfer = async (
    node: PeerupNode,
    port: number,
    scenario: string,
    procs: LabProcess[],
  ): Promise<void> => {
    // A first transfer warms the JIT up; only the second one's samples count.
    await runClient(
      bl,
      node.host,
      ['throughput', '127.0.0.1', port, Math.min(settings.profileBytes, 32 * 2 ** 20), 6],
      {
        timeoutMs: 600_000,
      },
    )
    const before = procs.map((p) => cpuSeconds(p.pid))
    const fromUs = nowUs()
    const r = await runClient<{ seconds: number }>(
      bl,
      node.host,
      ['throughput', '127.0.0.1', port, settings.profileBytes, 7],
      {
        timeoutMs: 600_000,
      },
    )
    windows.set(scenario, { fromUs, toUs: nowUs() })
    const mbps = settings.profileBytes / 1e6 / r.seconds
    const busy = procs.map(
      (p, i) =>
        `${p.label.replace(`prof-${scenario}-`, '')} ${((cpuSeconds(p.pid) - (before[i] ?? 0)) / r.seconds).toFixed(2)}`,
    )
    results.note(
      `profile ${scenario}: ${(settings.profileBytes / 2 ** 20).toFixed(0)} MiB at ${mbps.toFixed(1)} MB/s under --cpu-prof; cores busy: ${busy.join(', ')}`,
    )
  }
  const stopScenario = async (scenario: string): Promise<void> => {
    // Proxies first, then daemons, then the relay: SIGTERM, so each writes its profile on exit.
    const order = started.filter((s) => s.scenario === scenario).reverse()
    for (const s of order) {
      await s.proc.stop(20_000)
    }
  }

  const relayRss = rssMB(bl.relay.process.pid)
  if (Number.isFinite(relayRss)) {
    results.add({
      id: 'memory.relay.end',
      group: 'memory',
      label: "relay RSS after all the run's transfers (before the profiles)",
      path: 'relayed',
      unit: 'MB',
      values: [relayRss],
      better: 'lower',
    })
  }
  // Everything the earlier measurements left running on the main lab makes way.
  for (const p of Object.values(bl.proxies)) await p.stop(10_000)
  for (const d of Object.values(bl.daemons)) await d.stop(10_000)
  await bl.relay.process.stop(10_000)

  // Relayed.
  const relayProc = fromSource(
    bl.relay.node,
    ['relay', 'serve', '--config', bl.relay.config],
    'relay',
    'relayed',
  )
  await bl.relay.node.host.waitForPort(PORTS.relay, { ip: bl.relay.node.host.ip, timeoutMs: 30_000 })
  const b1 = await daemon(bl.b, 'daemon-b', 'relayed')
  const a21 = await daemon(bl.a2, 'daemon-a2', 'relayed')
  await bl.a2.peerup(['ping', 'b', '-c', '1', '--config', bl.a2.config])
  const p1 = await proxy(bl.a2, PORTS.proxyRelayed, 'proxy-a2', 'relayed')
  log('profile: relayed transfer')
  await transfer(bl.a2, PORTS.proxyRelayed, 'relayed', [p1, a21, relayProc, b1])
  await stopScenario('relayed')

  // Direct: the relay only signals, so it runs as the executable again.
  if (bl.direct.ok) {
    await bl.relay.start()
    const b2 = await daemon(bl.b, 'daemon-b', 'direct')
    const a1 = await daemon(bl.a, 'daemon-a', 'direct')
    const up = await bl.a.host.run(
      bl.a.exe,
      ['ping', 'b', '--until-direct', '--interval', '500ms', '--deadline', '40s', '--config', bl.a.config],
      { env: bl.a.env, timeoutMs: 60_000 },
    )
    if (up.code !== 0) {
      results.note(`profile direct: a → b did not go direct: ${up.stderr.trim()}`)
    } else {
      const p2 = await proxy(bl.a, PORTS.proxyDirect, 'proxy-a', 'direct')
      log('profile: direct transfer')
      await transfer(bl.a, PORTS.proxyDirect, 'direct', [p2, a1, b2])
    }
    await stopScenario('direct')
  }

  for (const s of started) {
    const files = fs.existsSync(s.dir) ? fs.readdirSync(s.dir).filter((f) => f.endsWith('.cpuprofile')) : []
    // A relay or daemon that runs itself again in place to set MALLOC_ARENA_MAX
    // (src/util/self.ts) leaves two profiles, the first of its start alone: the one that saw the
    // transfer is the one with the most time in its window.
    const summary = files
      .map((file) => summarizeProfile(path.join(s.dir, file), windows.get(s.scenario)))
      .sort((x, y) => y.totalMs - x.totalMs)[0]
    if (summary === undefined) {
      results.note(`profile ${s.scenario}/${s.name}: no .cpuprofile written`)
      continue
    }
    results.profiles.push({ process: s.name, scenario: s.scenario, ...summary })
    const top = summary.byArea
      .slice(0, 5)
      .map((r) => `${r.name} ${(r.share * 100).toFixed(0)}%`)
      .join(', ')
    log(`profile ${s.scenario}/${s.name}: ${(summary.totalMs / 1000).toFixed(1)} s busy: ${top}`)
  }
}
