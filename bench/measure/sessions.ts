/**
 * Resumable sessions (src/pipe/session.ts): what they cost and how fast they come back.
 *
 * - `resume-cost`: relayed throughput through the daemon with sessions (a2) against plain service
 *   streams (a2-plain, the same executable with PEERUP_SESSIONS=off), on the same hops, in pairs
 *   whose order alternates (A B, B A, …); the ratio of each pair, then the median.
 * - `recovery`: a steady two-way flow through a2's daemon (relayed: 16 KiB each way every 10 ms,
 *   each echo checked byte for byte), then an event — `conntrack -F` on router-a (the client's
 *   NAT), on router-b (the service's), or the relay killed with SIGKILL and started again — and the
 *   time until a message written after the event has come back. The daemon's log says when the
 *   session lost its link and when it was attached again.
 * - `migration`: a's daemon restarted, then a transfer through it at once: the session opens on
 *   the relay, the WebRTC upgrade lands while the bytes flow, and the session moves. Measured from
 *   the direct connection appearing (the daemon's `path changed` to DIRECT) to the session running
 *   on it (`session moved to a direct path`, logged once the handshake on the new link is done and
 *   the session sends there); the relay's byte counters show what it still carried after.
 *
 * @packageDocumentation
 */

import type { LabProcess } from '../../test/e2e/lab.ts'
import { type BenchContext, cpuSeconds, labCpuSeconds, runClient, sleep } from '../context.ts'
import { CLIENT, PORTS } from '../lab-setup.ts'
import { fmt, median } from '../results.ts'

/** Wall-clock time in ms, as bench/client.ts and the daemons' logs (ISO times) have it. */
function epochMs(): number {
  return performance.timeOrigin + performance.now()
}

interface LogLine {
  at: number
  msg: string
  raw: Record<string, unknown>
}

/** The JSON log lines a process prints from now on, with their times, until `stop()`. */
function tapLog(proc: LabProcess): { lines: LogLine[]; stop(): void } {
  const lines: LogLine[] = []
  let partial = ''
  const onData = (chunk: Buffer | string): void => {
    const text = partial + chunk.toString()
    const parts = text.split('\n')
    partial = parts.pop() ?? ''
    for (const part of parts) {
      try {
        const raw = JSON.parse(part) as Record<string, unknown>
        if (typeof raw.time === 'string' && typeof raw.msg === 'string') {
          lines.push({ at: Date.parse(raw.time), msg: raw.msg, raw })
        }
      } catch {}
    }
  }
  proc.stdout?.on('data', onData)
  proc.stderr?.on('data', onData)
  return {
    lines,
    stop: () => {
      proc.stdout?.off('data', onData)
      proc.stderr?.off('data', onData)
    },
  }
}

/** The first line with `msg` at or after `from` (and matching `also`). */
function first(
  lines: LogLine[],
  msg: string,
  from: number,
  also?: (l: LogLine) => boolean,
): LogLine | undefined {
  return lines.find((l) => l.msg === msg && l.at >= from && (also?.(l) ?? true))
}

// ---- the cost of resumability ----

export async function measureResumeCost(ctx: BenchContext): Promise<void> {
  const { bl, settings, results, log } = ctx
  const ways = [
    {
      id: 'session',
      label: 'resumable sessions (a2)',
      port: PORTS.proxyRelayed,
      daemon: 'a2' as const,
      proxy: 'proxy-relayed',
    },
    {
      id: 'plain',
      label: 'plain streams (a2-plain, PEERUP_SESSIONS=off)',
      port: PORTS.proxyRelayedPlain,
      daemon: 'a2plain' as const,
      proxy: 'proxy-relayed-plain',
    },
  ]
  // The processes on the path, for the CPU each spends per MB: where a difference is paid.
  const carriers = (w: (typeof ways)[number]): Array<[string, number | undefined]> => [
    ['proxy', bl.proxies[w.proxy]?.pid],
    ['client daemon', bl.daemons[w.daemon].pid],
    ['relay', bl.relay.process.pid],
    ['target daemon', bl.daemons.b.pid],
  ]
  const perProcess = new Map<string, Map<string, number[]>>(ways.map((w) => [w.id, new Map()]))
  // Warm-up, and proof that each daemon does what its row says.
  for (const w of ways) {
    await runClient(bl, bl.a2.host, ['throughput', '127.0.0.1', w.port, 16 * 2 ** 20, 100], {
      timeoutMs: 300_000,
    })
    const resumable = w.id === 'session'
    await bl.daemons[w.daemon].waitForOutput(
      new RegExp(`"msg":"service session opened"[^\\n]*"resumable":${resumable}`),
      5_000,
    )
  }
  const pairs = ctx.quick ? 4 : 8
  const mbps = new Map<string, number[]>(ways.map((w) => [w.id, []]))
  const cpu = new Map<string, number[]>(ways.map((w) => [w.id, []]))
  const ratios: number[] = []
  const mb = settings.throughputBytes / 1e6
  for (let pair = 0; pair < pairs; pair++) {
    const order = pair % 2 === 0 ? ways : [...ways].reverse()
    const got = new Map<string, number>()
    for (const w of order) {
      const cpuBefore = labCpuSeconds(bl.lab.namespaces)
      const procs = carriers(w)
      const procBefore = procs.map(([, pid]) => cpuSeconds(pid))
      const r = await runClient<{ seconds: number }>(
        bl,
        bl.a2.host,
        ['throughput', '127.0.0.1', w.port, settings.throughputBytes, 200 + pair],
        { timeoutMs: 600_000 },
      )
      const rate = mb / r.seconds
      got.set(w.id, rate)
      mbps.get(w.id)?.push(rate)
      cpu.get(w.id)?.push(((labCpuSeconds(bl.lab.namespaces) - cpuBefore) * 1000) / mb)
      const byProc = perProcess.get(w.id) as Map<string, number[]>
      procs.forEach(([name, pid], i) => {
        const ms = ((cpuSeconds(pid) - (procBefore[i] as number)) * 1000) / mb
        byProc.set(name, [...(byProc.get(name) ?? []), ms])
      })
    }
    const ratio = (got.get('session') as number) / (got.get('plain') as number)
    ratios.push(ratio)
    log(
      `resume cost pair ${pair + 1}/${pairs} (${order.map((w) => w.id).join(' then ')}): sessions ${fmt(got.get('session') as number)} MB/s, plain ${fmt(got.get('plain') as number)} MB/s, ratio ${ratio.toFixed(3)}`,
    )
  }
  for (const w of ways) {
    results.add({
      id: `sessions.cost.${w.id}`,
      group: 'sessions',
      label: `relayed throughput via the daemon, ${w.label}`,
      path: 'relayed',
      unit: 'MB/s',
      values: mbps.get(w.id) ?? [],
      better: 'higher',
      note: `CPU per MB over the lab ${fmt(median(cpu.get(w.id) ?? [Number.NaN]))} ms/MB (${[
        ...(perProcess.get(w.id) ?? []),
      ]
        .map(([name, v]) => `${name} ${fmt(median(v))}`)
        .join(', ')}); ${pairs} pairs, order alternating`,
    })
  }
  results.add({
    id: 'sessions.cost.ratio',
    group: 'sessions',
    label: 'sessions ÷ plain streams, per pair',
    path: 'relayed',
    unit: '×',
    values: ratios,
    better: 'higher',
  })
}

// ---- NAT flush and relay restart → data flowing again ----

interface Recovery {
  /** From the event to the first echo of a message written after it. */
  ms: number
  /** The longest wait between two echoes around the event. */
  gapMs: number
  /** From the event to the session losing its link / being attached again (a2's daemon log). */
  lostMs: number | undefined
  attachedMs: number | undefined
  detail: string
}

interface Event {
  id: string
  label: string
  /** Sets the lab up for the event (before the flow starts) and back after. */
  before?: (() => Promise<void>) | undefined
  after?: (() => Promise<void>) | undefined
  /** Makes it happen; `at` is when it is certainly done (epoch ms). */
  run: () => Promise<{ at: number; detail: string }>
}

async function recoverOnce(ctx: BenchContext, event: Event, run: number): Promise<Recovery> {
  const { bl } = ctx
  const client = bl.a2.host.spawn(
    bl.lab.node,
    [CLIENT, 'flow', '127.0.0.1', String(PORTS.proxyRelayed), String(16 * 1024), '10'],
    { stdin: 'pipe', label: `flow-${event.id}-${run}` },
  )
  const tap = tapLog(bl.daemons.a2)
  try {
    await client.waitForOutput(/\{"ready":true\}/, 60_000)
    await sleep(1000)
    const { at, detail } = await event.run()
    client.stdin?.write(`mark ${at}\n`)
    const answer = JSON.parse((await client.waitForOutput(/\{"mark":[^\n]*\}/, 150_000))[0]) as {
      ms: number
      gapMs: number
    }
    // A little more flow, then everything must have come back intact.
    await sleep(1000)
    client.stdin?.end()
    const end = JSON.parse((await client.waitForOutput(/\{"sent":[^\n]*\}/, 60_000))[0]) as {
      sent: number
      echoed: number
      intact: boolean
      error?: string
    }
    if (!end.intact) {
      throw new Error(
        `the flow was not intact after ${event.label}: ${end.error} (${end.echoed}/${end.sent})`,
      )
    }
    const lost = first(tap.lines, 'session lost its link', at - 50)
    const attached = first(tap.lines, 'session attached', lost?.at ?? at)
    return {
      ms: answer.ms,
      gapMs: answer.gapMs,
      lostMs: lost === undefined ? undefined : lost.at - at,
      attachedMs: attached === undefined ? undefined : attached.at - at,
      detail,
    }
  } finally {
    tap.stop()
    await client.stop()
  }
}

export async function measureRecovery(ctx: BenchContext): Promise<void> {
  const { bl, results, log } = ctx
  const env = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' }
  const ipt = (router: string, ...args: string[]) =>
    bl.lab.host(router).mustRun(bl.lab.iptables, ['-w', ...args])
  // Linux picks a TCP connection up again from the middle (nf_conntrack_tcp_loose=1): the first
  // packet out after a flush re-creates the mapping, on the same port (cone NAT), and nothing is
  // noticed. A router that does not (loose=0, and INVALID dropped as a strict firewall does) is
  // the NAT that forgot its connections: they go silent both ways, new ones pass.
  const strictness = async (router: string, strict: boolean): Promise<void> => {
    const host = bl.lab.host(router)
    await host.mustRun('sysctl', ['-qw', `net.netfilter.nf_conntrack_tcp_loose=${strict ? 0 : 1}`], { env })
    const rule = ['-m', 'conntrack', '--ctstate', 'INVALID', '-j', 'DROP']
    await (strict ? ipt(router, '-I', 'FORWARD', '1', ...rule) : ipt(router, '-D', 'FORWARD', ...rule))
  }
  const flush = (router: 'router-a' | 'router-b', strict: boolean): Event => ({
    id: `flush-${router.slice(-1)}${strict ? '-strict' : ''}`,
    label: `conntrack -F on ${router} (the ${router === 'router-a' ? "client's" : "service's"} NAT)${strict ? ', strict tracking' : ', Linux defaults'}`,
    before: strict ? () => strictness(router, true) : undefined,
    after: strict ? () => strictness(router, false) : undefined,
    run: async () => {
      const t = epochMs()
      await bl.lab.host(router).mustRun('conntrack', ['-F'], { env })
      // Measured from the moment the flush is certainly done: the command has returned.
      const at = epochMs()
      return { at, detail: `conntrack -F took ${(at - t).toFixed(0)} ms` }
    },
  })
  const events: Event[] = [
    flush('router-a', false),
    flush('router-a', true),
    flush('router-b', true),
    {
      id: 'relay-kill',
      label: 'relay killed (SIGKILL) and started again',
      run: async () => {
        const at = epochMs()
        process.kill(bl.relay.process.pid as number, 'SIGKILL')
        await bl.relay.process.exited
        await bl.relay.start()
        return { at, detail: `relay listening again after ${(epochMs() - at).toFixed(0)} ms` }
      },
    },
  ]
  // The strict flushes take 12–15 s each (the dead path must first be noticed).
  const runs = ctx.quick ? 1 : 3
  const got = new Map<string, Recovery[]>(events.map((e) => [e.id, []]))
  // Interleaved, so that a slow drift of the machine does not land on one event.
  for (let run = 0; run < runs; run++) {
    for (const event of events) {
      try {
        await event.before?.()
        const r = await recoverOnce(ctx, event, run)
        got.get(event.id)?.push(r)
        log(
          `recovery ${run + 1}/${runs} ${event.id}: data flowing again after ${r.ms.toFixed(0)} ms (longest gap ${r.gapMs.toFixed(0)} ms; link lost at ${r.lostMs?.toFixed(0) ?? '-'} ms, attached at ${r.attachedMs?.toFixed(0) ?? '-'} ms; ${r.detail})`,
        )
      } catch (err) {
        results.note(`recovery ${event.label}, run ${run + 1} FAILED: ${(err as Error).message}`)
      } finally {
        await event.after?.()
      }
      // Whatever the event broke elsewhere (b's reservation, a's direct path) settles first.
      await settle(ctx)
    }
  }
  for (const event of events) {
    const rs = got.get(event.id) ?? []
    if (rs.length === 0) {
      results.fail(`recovery after ${event.label}`, new Error('every run failed'))
      continue
    }
    const detach = rs.flatMap((r) => (r.lostMs === undefined ? [] : [r.lostMs]))
    const attach = rs.flatMap((r) => (r.attachedMs === undefined ? [] : [r.attachedMs]))
    const link =
      detach.length === 0
        ? 'the session kept its link'
        : `the session lost its link after ${fmt(median(detach))} ms (${detach.length}/${rs.length} runs) and was attached again after ${attach.length === 0 ? '?' : `${fmt(median(attach))} ms`}`
    results.add({
      id: `sessions.recovery.${event.id}`,
      group: 'sessions',
      label: `${event.label} → data flowing again`,
      path: 'relayed',
      unit: 'ms',
      values: rs.map((r) => r.ms),
      better: 'lower',
      note: `${link}; longest gap between echoes ${fmt(median(rs.map((r) => r.gapMs)))} ms; every byte echoed intact`,
    })
  }
}

/** Waits until b holds its reservation again and a2 reaches it: the next run starts from a sound lab. */
async function settle(ctx: BenchContext): Promise<void> {
  const { bl } = ctx
  const deadline = Date.now() + 60_000
  while (Date.now() < deadline) {
    const r = await bl.a2.host.run(bl.a2.exe, ['ping', 'b', '-c', '1', '--json', '--config', bl.a2.config], {
      env: bl.a2.env,
      timeoutMs: 15_000,
    })
    if (r.code === 0) {
      await sleep(500)
      return
    }
    await sleep(500)
  }
  throw new Error('a2 does not reach b again within 60 s')
}

// ---- migration relayed → direct ----

export async function measureMigration(ctx: BenchContext): Promise<void> {
  const { bl, results, log } = ctx
  if (!bl.direct.ok) {
    results.note('migration not measured: a → b has no direct path in this lab')
    return
  }
  const runs = ctx.quick ? 2 : 3
  // Long enough to still run when ICE is up, ~1 s after the block is lifted: since `peerup proxy`
  // listens in the daemon (docs/decisions/0008-proxy-in-the-daemon.md), 128 MiB were over first.
  const bytes = (ctx.quick ? 256 : 512) * 2 ** 20
  const moves: number[] = []
  const afterMove: number[] = []
  const iceMs: number[] = []
  // While UDP from a to router-b is dropped, the WebRTC upgrade cannot connect (its ICE checks
  // keep trying): the session opens on the relay, and the direct connection appears only once the
  // block is lifted, in the middle of the transfer.
  const block = ['-s', bl.a.host.ip, '-d', bl.lab.host('router-b').ip, '-p', 'udp', '-j', 'DROP']
  const routerA = bl.lab.host('router-a')
  const ipt = (...args: string[]) => routerA.mustRun(bl.lab.iptables, ['-w', ...args])
  for (let run = 0; run < runs; run++) {
    await ipt('-I', 'FORWARD', '1', ...block)
    let blocked = true
    let tap: ReturnType<typeof tapLog> | undefined
    try {
      // A fresh daemon has no connection to b; its proxy is started again with it (a running
      // `peerup proxy` keeps the cookie of the daemon it started with).
      await bl.proxies['proxy-direct']?.stop(10_000)
      // Without the TCP punch (PEERUP_PUNCH=off, src/env.ts), which the UDP block does not stop:
      // the move measured is the one to WebRTC, held back as described above.
      const daemon = await bl.restartDaemon('a', { PEERUP_PUNCH: 'off' })
      tap = tapLog(daemon)
      await bl.startProxy(bl.a, ['b', 'bench'], PORTS.proxyDirect, 'proxy-direct')
      const samples: Array<[number, number]> = []
      let done = false
      const sampler = (async () => {
        while (!done) {
          samples.push([epochMs(), await bl.relayBytes()])
          await sleep(50)
        }
      })()
      const started = epochMs()
      let lifted = 0
      const transfer = runClient(
        bl,
        bl.a.host,
        ['throughput', '127.0.0.1', PORTS.proxyDirect, bytes, 300 + run],
        { timeoutMs: 300_000 },
      )
      try {
        await Promise.race([transfer, sleep(700)])
        await ipt('-D', 'FORWARD', ...block)
        blocked = false
        lifted = epochMs()
        await transfer
      } finally {
        done = true
        await sampler
      }
      const lines = tap.lines
      const opened = first(lines, 'service session opened', started - 1000)
      const direct = first(lines, 'path changed', started - 1000, (l) =>
        String(l.raw.to).startsWith('DIRECT'),
      )
      const moved = first(lines, 'session moved to a direct path', started - 1000)
      if (opened === undefined || String(opened.raw.path).startsWith('DIRECT')) {
        results.note(
          `migration run ${run + 1}: the session opened ${opened === undefined ? '(not logged)' : `on ${opened.raw.path}`}, not on the relay; not counted`,
        )
        continue
      }
      if (direct === undefined || moved === undefined) {
        results.note(
          `migration run ${run + 1}: ${direct === undefined ? 'no direct path during the transfer' : 'the session did not move'}; not counted`,
        )
        continue
      }
      moves.push(moved.at - direct.at)
      iceMs.push(direct.at - lifted)
      // What crossed the relay's port from 100 ms after the move to the end of the transfer.
      const from = samples.find(([t]) => t >= moved.at + 100)
      const last = samples.at(-1)
      const carried = from === undefined || last === undefined ? 0 : last[1] - from[1]
      afterMove.push(carried)
      log(
        `migration run ${run + 1}/${runs}: opened ${String(opened.raw.path)}; direct ${(direct.at - lifted).toFixed(0)} ms after UDP was let through; session moved ${moved.at - direct.at} ms after the direct connection appeared; the relay carried ${carried} bytes after`,
      )
    } finally {
      tap?.stop()
      if (blocked) await ipt('-D', 'FORWARD', ...block)
    }
  }
  // a's daemon as the rest of the bench has it: punching again, its direct path a TCP punch.
  await bl.proxies['proxy-direct']?.stop(10_000)
  await bl.restartDaemon('a')
  await bl.startProxy(bl.a, ['b', 'bench'], PORTS.proxyDirect, 'proxy-direct')
  if (moves.length === 0) {
    results.fail('session migration', new Error('no run moved a session from the relay to a direct path'))
    return
  }
  results.add({
    id: 'sessions.migration',
    group: 'sessions',
    label: 'relayed → direct (WebRTC) during a transfer: direct connection up → session running on it',
    path: 'direct',
    unit: 'ms',
    values: moves,
    better: 'lower',
    note: `a's daemon log (ms resolution): "path changed" to DIRECT → "session moved to a direct path"; ${bytes / 2 ** 20} MiB through \`peerup proxy\`, the WebRTC upgrade held back by a UDP block until 0.7 s into it (up ${fmt(median(iceMs))} ms after the block was lifted); the relay's port saw at most ${Math.max(...afterMove)} bytes from 100 ms after the move to the end`,
  })
}
