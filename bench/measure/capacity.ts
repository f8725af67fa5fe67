/**
 * Relay capacity: reservations, then concurrent relayed circuits, on a relay of its own (relay2)
 * with its config's limits raised, added in steps until something fails or the ceiling is
 * reached. The peers are load generators (bench/loadgen.ts): a few processes on a and b, many
 * identities each, every one its own TCP connection to the relay. Each circuit carries a ping
 * round trip when made, and every circuit is pinged again after each step.
 *
 * @packageDocumentation
 */

import * as path from 'node:path'
import type { LabHost, LabProcess } from '../../test/e2e/lab.ts'
import { type BenchContext, cpuSeconds, rssMB } from '../context.ts'
import { type BenchRelay, LOADGEN, ROOT } from '../lab-setup.ts'
import { benchPeerId } from '../loadgen.ts'

interface Reply {
  op: string
  ok?: number
  failed?: number
  okIndexes?: number[]
  errors?: Record<string, number>
  connected?: number
  lost?: number
  lostIndexes?: number[]
  circuits?: number
  circuitsAlive?: number
  ms?: number
}

/** A load generator process and a way to send it a command and get its answer. */
class LoadGen {
  readonly proc: LabProcess
  readonly #waiting: Array<(r: Reply) => void> = []
  #buffer = ''

  constructor(proc: LabProcess) {
    this.proc = proc
    proc.stdout?.on('data', (chunk: string | Buffer) => {
      this.#buffer += chunk.toString()
      let nl = this.#buffer.indexOf('\n')
      while (nl >= 0) {
        const line = this.#buffer.slice(0, nl).trim()
        this.#buffer = this.#buffer.slice(nl + 1)
        if (line.startsWith('{')) {
          this.#waiting.shift()?.(JSON.parse(line) as Reply)
        }
        nl = this.#buffer.indexOf('\n')
      }
    })
  }

  send(cmd: object, timeoutMs: number): Promise<Reply> {
    return new Promise<Reply>((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(
            new Error(
              `load generator ${this.proc.label} did not answer ${JSON.stringify(cmd).slice(0, 80)} within ${timeoutMs} ms:\n${this.proc.output().slice(-3000)}`,
            ),
          ),
        timeoutMs,
      )
      const onExit = () =>
        reject(new Error(`load generator ${this.proc.label} exited:\n${this.proc.output().slice(-3000)}`))
      this.proc.once('exit', onExit)
      this.#waiting.push((r) => {
        clearTimeout(timer)
        this.proc.off('exit', onExit)
        resolve(r)
      })
      this.proc.stdin?.write(`${JSON.stringify(cmd)}\n`)
    })
  }
}

function mergeErrors(into: Record<string, number>, from: Record<string, number> | undefined): void {
  for (const [k, v] of Object.entries(from ?? {})) {
    into[k] = (into[k] ?? 0) + v
  }
}

function describeErrors(errors: Record<string, number>): string {
  const entries = Object.entries(errors).sort((x, y) => y[1] - x[1])
  return entries.length === 0
    ? 'none'
    : entries
        .slice(0, 4)
        .map(([k, v]) => `${v}× ${k}`)
        .join('; ')
}

/**
 * What the relay itself says: `/healthz` (connected peers) and, when the build has them, its
 * Prometheus metrics (reservations, circuits, refusals). Missing ones are left out.
 */
async function relayMetrics(ctx: BenchContext): Promise<Record<string, number>> {
  const host = ctx.bl.capacityRelay.node.host
  const script = `
    const get = (u) => fetch(u).then((r) => (r.ok ? r.text() : ''), () => '')
    Promise.all([get('http://127.0.0.1:9090/healthz'), get('http://127.0.0.1:9092/metrics')]).then(([h, m]) =>
      process.stdout.write(JSON.stringify({ h, m })))`
  const r = await host.run(ctx.bl.lab.node, ['-e', script])
  const out: Record<string, number> = {}
  try {
    const { h, m } = JSON.parse(r.stdout) as { h: string; m: string }
    if (h !== '') {
      const health = JSON.parse(h) as { connected_peers?: number }
      if (typeof health.connected_peers === 'number') out.connected_peers = health.connected_peers
    }
    for (const line of m.split('\n')) {
      const x =
        /^(peerup_relay_(?:reservations|circuits)|libp2p_connection_manager_connections\S*)\s+(\S+)$/.exec(
          line,
        )
      if (x !== null) out[x[1] as string] = Number(x[2])
    }
  } catch {}
  return out
}

function describeMetrics(m: Record<string, number>): string {
  const parts = Object.entries(m).map(([k, v]) => `${k.replace(/^peerup_relay_/, '')}=${v}`)
  return parts.length === 0 ? 'relay says nothing' : `relay says ${parts.join(', ')}`
}

/** What one capacity run found. */
interface CapacityOutcome {
  /** Reservations held after the last step with no failure at all. */
  held: number
  /** The most held at once, failures or not. */
  heldMax: number
  reservationFailure: string | undefined
  circuitsOk: number
  circuitsMax: number
  circuitFailure: string | undefined
  circuitCeiling: number
  peakRss: number
  cpuS: number
  seconds: number
  attempted: number
  warnings: string[]
}

/** Reservations in steps until a failure or the ceiling, then circuits among the peers still reserved. */
async function capacityRun(ctx: BenchContext, relay: BenchRelay, tag: string): Promise<CapacityOutcome> {
  const { bl, settings, log } = ctx
  const hosts = [bl.a.host, bl.b.host]
  const gens: LoadGen[] = []
  const pid = relay.process.pid
  const cpu0 = cpuSeconds(pid)
  const t0 = performance.now()
  try {
    for (let i = 0; i < settings.capacityProcesses; i++) {
      const host = hosts[i % hosts.length] as LabHost
      gens.push(
        new LoadGen(
          host.spawn(bl.lab.node, [LOADGEN, relay.address, ctx.runId], {
            stdin: 'pipe',
            label: `loadgen-${tag}-${i}`,
          }),
        ),
      )
    }
    const P = gens.length
    const live = new Set<number>()
    let reservationFailure: string | undefined
    let held = 0
    let heldMax = 0
    let attempted = 0
    let lostSoFar = 0
    const reserveErrors: Record<string, number> = {}
    let peakRss = rssMB(pid)
    for (let from = 0; from < settings.capacityReservations; from += settings.capacityStep) {
      const to = Math.min(settings.capacityReservations, from + settings.capacityStep)
      const started = performance.now()
      const replies = await Promise.all(
        gens.map((g, p) => {
          const indexes: number[] = []
          for (let i = from; i < to; i++) {
            if (i % P === p) indexes.push(i)
          }
          return g.send({ op: 'reserve', indexes, concurrency: 2 }, 600_000)
        }),
      )
      attempted = to
      let failed = 0
      for (const r of replies) {
        failed += r.failed ?? 0
        mergeErrors(reserveErrors, r.errors)
        for (const i of r.okIndexes ?? []) live.add(i)
      }
      const checks = await Promise.all(gens.map((g) => g.send({ op: 'check' }, 120_000)))
      let lost = 0
      for (const c of checks) {
        lost += c.lost ?? 0
        for (const i of c.lostIndexes ?? []) live.delete(i)
      }
      lostSoFar = lost
      heldMax = Math.max(heldMax, live.size)
      peakRss = Math.max(peakRss, rssMB(pid))
      const metrics = await relayMetrics(ctx)
      log(
        `capacity ${tag}: ${to} reservations tried, ${live.size} held, ${failed} failed in this step, ${lost} lost so far; ${describeMetrics(metrics)}; step ${((performance.now() - started) / 1000).toFixed(1)} s; relay RSS ${rssMB(pid).toFixed(0)} MB`,
      )
      if (failed > 0 || lost > 0) {
        reservationFailure = `at ${to} tried: ${failed} failed to reserve, ${lost} lost after reserving (${describeErrors(reserveErrors)})`
        break
      }
      held = live.size
    }

    // Circuits between peers that still hold a reservation: source k → target k + half.
    const peers = [...live].sort((x, y) => x - y)
    const half = Math.floor(peers.length / 2)
    const circuitCeiling = Math.min(settings.capacityCircuits, half)
    let circuitsOk = 0
    let circuitsMax = 0
    let circuitFailure: string | undefined
    const circuitErrors: Record<string, number> = {}
    const circuitStep = Math.max(25, Math.floor(settings.capacityStep / 2))
    for (let from = 0; from < circuitCeiling; from += circuitStep) {
      const to = Math.min(circuitCeiling, from + circuitStep)
      const byGen: Array<Array<[number, string]>> = gens.map(() => [])
      for (let k = from; k < to; k++) {
        const src = peers[k] as number
        const dst = peers[k + half] as number
        byGen[src % P]?.push([src, await benchPeerId(ctx.runId, dst)])
      }
      const replies = await Promise.all(
        gens.map((g, p) => g.send({ op: 'circuits', pairs: byGen[p], concurrency: 4 }, 600_000)),
      )
      let failed = 0
      for (const r of replies) {
        failed += r.failed ?? 0
        mergeErrors(circuitErrors, r.errors)
      }
      const checks = await Promise.all(gens.map((g) => g.send({ op: 'check' }, 300_000)))
      let total = 0
      let alive = 0
      let lost = 0
      for (const c of checks) {
        total += c.circuits ?? 0
        alive += c.circuitsAlive ?? 0
        lost += c.lost ?? 0
        mergeErrors(circuitErrors, c.errors)
      }
      const newlyLost = lost - lostSoFar
      circuitsMax = Math.max(circuitsMax, alive)
      peakRss = Math.max(peakRss, rssMB(pid))
      const metrics = await relayMetrics(ctx)
      log(
        `capacity ${tag}: ${to} circuits tried, ${alive}/${total} answer a ping, ${failed} failed to open, ${newlyLost} more reservations lost; ${describeMetrics(metrics)}; relay RSS ${rssMB(pid).toFixed(0)} MB`,
      )
      if (failed > 0 || alive < total || newlyLost > 0) {
        circuitFailure = `at ${to} tried: ${failed} failed to open, ${total - alive} of ${total} open ones stopped answering, ${newlyLost} reservations lost meanwhile (${describeErrors(circuitErrors)})`
        break
      }
      circuitsOk = alive
    }
    const warnings = relay.process
      .output()
      .split('\n')
      .filter((l) => l.includes('"level":"warn"') || l.includes('"level":"error"'))
    return {
      held,
      heldMax,
      reservationFailure,
      circuitsOk,
      circuitsMax,
      circuitFailure,
      circuitCeiling,
      peakRss,
      cpuS: cpuSeconds(pid) - cpu0,
      seconds: (performance.now() - t0) / 1000,
      attempted,
      warnings,
    }
  } finally {
    await Promise.all(
      gens.map(async (g) => {
        g.proc.stdin?.write('{"op":"stop"}\n')
        await Promise.race([g.proc.exited, new Promise((r) => setTimeout(r, 10_000))])
        await g.proc.stop()
      }),
    )
  }
}

function report(ctx: BenchContext, o: CapacityOutcome, idPrefix: string, labelSuffix: string): void {
  const { results, settings } = ctx
  results.add({
    id: `${idPrefix}.reservations`,
    group: 'capacity',
    label: `reservations held at once, no failure${labelSuffix}`,
    path: 'relayed',
    unit: 'count',
    values: [o.held],
    better: 'higher',
    note:
      o.reservationFailure === undefined
        ? `ceiling of ${settings.capacityReservations} reached`
        : `at most ${o.heldMax} held; first failure ${o.reservationFailure}`,
  })
  results.add({
    id: `${idPrefix}.circuits`,
    group: 'capacity',
    label: `concurrent relayed circuits, each answering a ping${labelSuffix}`,
    path: 'relayed',
    unit: 'count',
    values: [o.circuitsOk],
    better: 'higher',
    note:
      o.circuitFailure !== undefined
        ? `first failure ${o.circuitFailure}`
        : o.circuitCeiling < settings.capacityCircuits
          ? `stopped at ${o.circuitCeiling}: only ${o.circuitCeiling * 2} peers still held a reservation (one source and one target each)`
          : `ceiling of ${settings.capacityCircuits} reached`,
  })
  results.add({
    id: `${idPrefix}.relay-rss`,
    group: 'capacity',
    label: `relay RSS, peak during the test${labelSuffix}`,
    path: 'relayed',
    unit: 'MB',
    values: [o.peakRss],
    better: 'lower',
    note: `${o.cpuS.toFixed(1)} CPU s on the relay in ${o.seconds.toFixed(0)} s; ${o.attempted} reservations tried by ${settings.capacityProcesses} processes`,
  })
  if (o.warnings.length > 0) {
    results.note(
      `capacity relay${labelSuffix}: ${o.warnings.length} warning lines, last: ${o.warnings.at(-1)?.slice(0, 300)}`,
    )
  }
}

/** Raises libp2p's connection manager default (300) for one relay process started from the sources. */
const RAISE_LIMITS = path.join(import.meta.dirname, '..', 'raise-limits.ts')
const WHAT_IF_MAX_CONNECTIONS = 4096

export async function measureCapacity(ctx: BenchContext): Promise<void> {
  const { bl, results, log } = ctx
  const relay = bl.capacityRelay
  const product = await capacityRun(ctx, relay, 'product')
  report(ctx, product, 'capacity', '')
  if (product.reservationFailure === undefined && product.circuitFailure === undefined) {
    return
  }
  results.note(
    `relay capacity (as built): reservations ${product.reservationFailure ?? 'ok'}; circuits ${product.circuitFailure ?? 'ok'}`,
  )
  // What-if: the same relay code and config, only libp2p's connectionManager.maxConnections raised
  // (a preload hook edits that one default), to show whether that default is what stops it.
  log(`capacity: what-if run with libp2p maxConnections ${WHAT_IF_MAX_CONNECTIONS}`)
  await relay.process.stop(10_000)
  const node = relay.node
  relay.process = node.host.spawn(
    bl.lab.node,
    [
      '--import',
      RAISE_LIMITS,
      path.join(ROOT, 'bin', 'peerup.js'),
      'relay',
      'serve',
      '--config',
      relay.config,
    ],
    { env: { ...node.env, BENCH_MAX_CONNECTIONS: String(WHAT_IF_MAX_CONNECTIONS) }, label: 'relay2-whatif' },
  )
  await node.host.waitForPort(7777, { ip: node.host.ip, timeoutMs: 30_000 })
  await relay.process.waitForOutput(/maxConnections raised/, 10_000)
  const whatIf = await capacityRun(ctx, relay, 'what-if')
  report(ctx, whatIf, 'capacity-whatif', ` (what-if: maxConnections ${WHAT_IF_MAX_CONNECTIONS})`)
}
