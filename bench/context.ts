/**
 * What every measurement gets: the lab, the run's settings, where results go, and helpers to run
 * the bench client on a lab host and to read a process's memory and CPU time.
 *
 * @packageDocumentation
 */

import * as fs from 'node:fs'
import type { LabHost } from '../test/e2e/lab.ts'
import { type BenchLab, CLIENT } from './lab-setup.ts'
import type { Results } from './results.ts'

/** Sizes and counts of one run: `--quick` shrinks them so the whole run takes under two minutes. */
export interface Settings {
  /** Runs per figure (the median of these is reported). */
  runs: number
  throughputBytes: number
  latencyRoundTrips: number
  latencyBytes: number
  ttfbRuns: number
  /** Runs of `peerup ... --no-daemon` commands, which start a node each (slow). */
  ttfbSlowRuns: number
  cliRuns: number
  heldConnections: number
  relayGiBBytes: number
  /** How long after the 1 GiB transfer the relay's RSS is read again. */
  relayAfterMs: number
  capacityReservations: number
  capacityCircuits: number
  capacityStep: number
  capacityProcesses: number
  profileBytes: number
}

export const FULL: Settings = {
  runs: 5,
  throughputBytes: 256 * 1024 * 1024,
  latencyRoundTrips: 2000,
  latencyBytes: 64,
  ttfbRuns: 9,
  ttfbSlowRuns: 5,
  cliRuns: 15,
  heldConnections: 100,
  relayGiBBytes: 1024 * 1024 * 1024,
  relayAfterMs: 20_000,
  capacityReservations: 1200,
  capacityCircuits: 400,
  capacityStep: 100,
  capacityProcesses: 4,
  profileBytes: 256 * 1024 * 1024,
}

export const QUICK: Settings = {
  runs: 3,
  throughputBytes: 32 * 1024 * 1024,
  latencyRoundTrips: 500,
  latencyBytes: 64,
  ttfbRuns: 3,
  ttfbSlowRuns: 3,
  cliRuns: 5,
  heldConnections: 100,
  relayGiBBytes: 128 * 1024 * 1024,
  relayAfterMs: 3_000,
  capacityReservations: 200,
  capacityCircuits: 50,
  capacityStep: 100,
  capacityProcesses: 2,
  profileBytes: 32 * 1024 * 1024,
}

/** Everything a measurement module gets. */
export interface BenchContext {
  bl: BenchLab
  settings: Settings
  quick: boolean
  results: Results
  /** Progress on stderr. */
  log: (msg: string) => void
  /** Where profiles and raw outputs are kept. */
  outDir: string
  /** The run id the load generators derive their identities from. */
  runId: string
}

/** Runs bench/client.ts on `host` and returns its JSON answer. */
export async function runClient<T>(
  bl: BenchLab,
  host: LabHost,
  args: Array<string | number>,
  options: { timeoutMs?: number; env?: Record<string, string> } = {},
): Promise<T> {
  const r = await host.run(bl.lab.node, [CLIENT, ...args.map(String)], {
    timeoutMs: options.timeoutMs ?? 120_000,
    ...(options.env === undefined ? {} : { env: options.env }),
  })
  if (r.code !== 0) {
    throw new Error(
      `client ${args.join(' ')} on ${host.name} ${r.timedOut ? 'timed out' : `exited ${r.code}`}: ${r.stderr.trim().slice(-2000)}`,
    )
  }
  const line = r.stdout.trim().split('\n').at(-1) ?? ''
  return JSON.parse(line) as T
}

/** Resident memory of a process, in MB (10^6 bytes, like the targets). */
export function rssMB(pid: number | undefined): number {
  if (pid === undefined) {
    return Number.NaN
  }
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8')
    return (Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1]) * 1024) / 1e6
  } catch {
    return Number.NaN
  }
}

/** Resident memory split into anonymous (heaps) and file-backed (the mapped executable), in MB. */
export function rssParts(pid: number | undefined): { anon: number; file: number } {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8')
    const kb = (key: string) => (Number(new RegExp(`${key}:\\s+(\\d+) kB`).exec(status)?.[1]) * 1024) / 1e6
    return { anon: kb('RssAnon'), file: kb('RssFile') }
  } catch {
    return { anon: Number.NaN, file: Number.NaN }
  }
}

/** CPU seconds (user + system) a process has used so far. */
export function cpuSeconds(pid: number | undefined): number {
  if (pid === undefined) {
    return Number.NaN
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return (Number(fields[11]) + Number(fields[12])) / 100
  } catch {
    return Number.NaN
  }
}

/**
 * CPU seconds used so far by every process inside the lab's namespaces (found by their network
 * namespace), daemons, relay, ssh, sshd, the bench's client and server alike: a path's total cost.
 */
export function labCpuSeconds(namespaces: readonly string[]): number {
  const inodes = new Set<string>()
  for (const ns of namespaces) {
    try {
      inodes.add(`net:[${fs.statSync(`/run/netns/${ns}`).ino}]`)
    } catch {}
  }
  let total = 0
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      if (inodes.has(fs.readlinkSync(`/proc/${entry}/ns/net`))) {
        total += cpuSeconds(Number(entry))
      }
    } catch {}
  }
  return total
}

/** Sleeps. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}
