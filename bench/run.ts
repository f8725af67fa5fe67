/**
 * `npm run bench [-- --quick] [--only a,b] [--out DIR] [--docs|--no-docs] [--no-build]`: builds
 * dist/peerup if needed, creates the NAT lab, measures everything listed below beside its
 * baselines in one run, checks the targets (bench/targets.ts), prints the results and writes them.
 *
 * Measurements, in order: cli, idle-memory, relay-memory, ttfb, direct, throughput, socks, latency, held,
 * resume-cost, recovery, migration (resumable sessions), profile, capacity. `--only` runs a subset (the lab is built anyway).
 *
 * Output: figures are printed as they are measured, the whole markdown at the end; `--out DIR`
 * (default a new directory under the system temp dir) gets results.md, results.json,
 * benchmarks.svg and profiles/. A full run (no --quick, no --only) also writes the results into
 * docs/benchmarks.md (between its markers) and docs/benchmarks.svg, unless --no-docs; --docs
 * forces it.
 *
 * Everything the run starts lives in the lab's namespaces and temp dir, and is stopped and removed
 * on exit, on an error and on Ctrl+C.
 *
 * @packageDocumentation
 */

import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { parseArgs } from 'node:util'
import type { Lab } from '../test/e2e/lab.ts'
import { type BenchContext, FULL, QUICK } from './context.ts'
import { benchLabSupport, createBenchLab, EXE, ensureBuilt, ROOT } from './lab-setup.ts'
import { benchPeerId } from './loadgen.ts'
import { measureCapacity } from './measure/capacity.ts'
import { measureCli } from './measure/cli.ts'
import { measureDirect } from './measure/direct.ts'
import { measureLatency } from './measure/latency.ts'
import { measureHeldConnections, measureIdleMemory, measureRelayMemory } from './measure/memory.ts'
import { measureProfiles } from './measure/profile.ts'
import { measureMigration, measureRecovery, measureResumeCost } from './measure/sessions.ts'
import { measureSocks } from './measure/socks.ts'
import { measureThroughput } from './measure/throughput.ts'
import { measureTtfb } from './measure/ttfb.ts'
import { renderMarkdown, renderSvg } from './report.ts'
import { Results } from './results.ts'
import { checkTargets } from './targets.ts'

const MEASUREMENTS: Array<[string, (ctx: BenchContext) => Promise<void>]> = [
  ['cli', measureCli],
  ['idle-memory', measureIdleMemory],
  // Before the other transfers, so that "idle" is the relay as started, not after gigabytes.
  ['relay-memory', measureRelayMemory],
  ['ttfb', measureTtfb],
  ['direct', measureDirect],
  ['throughput', measureThroughput],
  ['socks', measureSocks],
  ['latency', measureLatency],
  ['held', measureHeldConnections],
  // Sessions: recovery kills the relay and flushes the routers, migration restarts a's daemon.
  ['resume-cost', measureResumeCost],
  ['recovery', measureRecovery],
  ['migration', measureMigration],
  ['profile', measureProfiles],
  ['capacity', measureCapacity],
]

const DOC = path.join(ROOT, 'docs', 'benchmarks.md')
const DOC_SVG = path.join(ROOT, 'docs', 'benchmarks.svg')
const BEGIN = '<!-- bench:results:begin (written by npm run bench; do not edit by hand) -->'
const END = '<!-- bench:results:end -->'

const t0 = performance.now()
function log(msg: string): void {
  process.stderr.write(`[bench +${((performance.now() - t0) / 1000).toFixed(1).padStart(6)} s] ${msg}\n`)
}

function sh(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()
  } catch {
    return '?'
  }
}

function machineInfo(): Record<string, string> {
  const cpus = os.cpus()
  const lsb = fs.existsSync('/etc/os-release')
    ? (/PRETTY_NAME="([^"]+)"/.exec(fs.readFileSync('/etc/os-release', 'utf8'))?.[1] ?? '?')
    : '?'
  return {
    cpu: `${cpus.length} × ${cpus[0]?.model ?? '?'}`,
    memory: `${(os.totalmem() / 2 ** 30).toFixed(1)} GiB`,
    os: `${lsb}, kernel ${os.release()}`,
    node: process.version,
    openssh: execSshVersion() ?? '?',
    'load average at start': os
      .loadavg()
      .map((x) => x.toFixed(2))
      .join(', '),
  }
}

function execSshVersion(): string | undefined {
  try {
    // ssh -V prints on stderr.
    return execFileSync('sh', ['-c', 'ssh -V 2>&1'], { encoding: 'utf8' }).trim()
  } catch {
    return undefined
  }
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      only: { type: 'string' },
      out: { type: 'string' },
      docs: { type: 'boolean' },
      'no-docs': { type: 'boolean', default: false },
      'no-build': { type: 'boolean', default: false },
      rebuild: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    allowPositionals: false,
  })
  if (values.help) {
    console.log(
      `usage: npm run bench -- [--quick] [--only ${MEASUREMENTS.map(([n]) => n).join(',')}] [--out DIR] [--docs|--no-docs] [--no-build|--rebuild]`,
    )
    return 0
  }
  const only = values.only
    ?.split(',')
    .map((s) => s.trim())
    .filter(Boolean)
  for (const name of only ?? []) {
    if (!MEASUREMENTS.some(([n]) => n === name)) {
      console.error(`unknown measurement ${name}; known: ${MEASUREMENTS.map(([n]) => n).join(', ')}`)
      return 2
    }
  }
  const quick = values.quick === true
  const settings = quick ? QUICK : FULL
  const writeDocs = values.docs ?? (!quick && only === undefined && !values['no-docs'])
  const outDir = path.resolve(values.out ?? fs.mkdtempSync(path.join(os.tmpdir(), 'peerup-bench-')))
  fs.mkdirSync(outDir, { recursive: true })

  const support = await benchLabSupport()
  if (!support.ok) {
    console.error(
      `peerup bench: the NAT lab cannot be built here (${support.reason}).\n` +
        'The benchmark compares paths across real NAT routers in network namespaces; it needs Linux, root, ip, iptables and conntrack.\n' +
        'Run it as root on Linux (the CI machine does: .ci/run installs iptables, conntrack and OpenSSH).',
    )
    return 1
  }
  if (!values['no-build']) {
    const why = ensureBuilt(values.rebuild === true)
    if (why !== undefined) log(`built dist/peerup (${why})`)
  }
  if (!fs.existsSync(EXE)) {
    console.error('dist/peerup is missing: run npm run build (or drop --no-build)')
    return 1
  }
  const version = sh(EXE, ['version'])
    .split('\n')
    .map((l) => l.trim())
    .join('; ')
  const runId = randomBytes(4).toString('hex')
  const results = new Results(
    {
      startedAt: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
      quick,
      argv: ['npm run bench', ...(process.argv.slice(2).length > 0 ? ['--', ...process.argv.slice(2)] : [])],
      machine: machineInfo(),
      peerup: version,
      settings: {
        'runs per figure': settings.runs,
        'throughput payload': `${settings.throughputBytes / 2 ** 20} MiB`,
        'latency round trips per run': `${settings.latencyRoundTrips} × ${settings.latencyBytes} B (after 50 warm-up)`,
        'TTFB runs': `${settings.ttfbRuns} (--no-daemon: ${settings.ttfbSlowRuns})`,
        'relay memory payload': `${settings.relayGiBBytes / 2 ** 20} MiB`,
        'capacity ceilings': `${settings.capacityReservations} reservations, ${settings.capacityCircuits} circuits, in steps of ${settings.capacityStep}, ${settings.capacityProcesses} load generators`,
      },
      notes: [],
    },
    (line) => console.log(line),
  )
  log(`peerup: ${version}`)
  log(`output: ${outDir}`)

  let lab: Lab | undefined
  let interrupted = false
  const onSignal = (signal: NodeJS.Signals) => {
    if (interrupted) return
    interrupted = true
    log(`${signal}: stopping everything the bench started`)
    // lab.ts removes open labs synchronously on exit (processes, namespaces, temp dir).
    process.exit(130)
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)

  try {
    const capacityPeers = await Promise.all(
      Array.from({ length: settings.capacityReservations }, (_, i) => benchPeerId(runId, i)),
    )
    log('building the lab')
    const bl = await createBenchLab({ exe: EXE, capacityPeers, log })
    lab = bl.lab
    log(`lab ${bl.lab.id} up; ssh negotiated ${bl.sshCipher}`)
    results.info.settings['OpenSSH cipher (defaults)'] = bl.sshCipher
    results.info.settings['direct path'] = bl.direct.detail
    if (!bl.direct.ok) {
      results.note(`no direct path: ${bl.direct.detail}; direct peerup rows are missing`)
    }
    const ctx: BenchContext = { bl, settings, quick, results, log, outDir, runId }
    console.log(`peerup bench${quick ? ' --quick' : ''}: figures are medians of runs (min, max)`)
    for (const [name, fn] of MEASUREMENTS) {
      if (only !== undefined && !only.includes(name)) continue
      log(`== ${name}`)
      console.log(`${name}:`)
      try {
        await fn(ctx)
      } catch (err) {
        results.fail(name, err)
        fs.writeFileSync(
          path.join(outDir, `failed-${name}.log`),
          `${(err as Error).stack}\n\n${bl.lab.dumpLogs()}`,
        )
      }
    }
    console.log('targets:')
    checkTargets(results, settings, quick)
  } finally {
    if (lab !== undefined) {
      // What every process of the lab printed, for looking into a failure after the fact.
      fs.writeFileSync(path.join(outDir, 'lab.log'), lab.dumpLogs())
      log('stopping the lab')
      await lab.close()
      const left = sh('ip', ['netns', 'list'])
        .split('\n')
        .filter((l) => l.includes(`pu-${lab?.id}-`))
      if (left.length > 0) log(`WARNING: namespaces left behind: ${left.join(' ')}`)
    }
  }
  results.info.finishedAt = new Date().toISOString().replace(/\.\d+Z$/, 'Z')
  results.info.durationS = (performance.now() - t0) / 1000
  results.info.machine['load average at end'] = os
    .loadavg()
    .map((x) => x.toFixed(2))
    .join(', ')

  const md = renderMarkdown(results)
  const svg = renderSvg(results)
  fs.writeFileSync(path.join(outDir, 'results.md'), md)
  fs.writeFileSync(path.join(outDir, 'benchmarks.svg'), svg)
  fs.writeFileSync(path.join(outDir, 'results.json'), `${JSON.stringify(results, null, 2)}\n`)
  if (writeDocs) {
    const doc = fs.existsSync(DOC) ? fs.readFileSync(DOC, 'utf8') : `# Benchmarks\n\n${BEGIN}\n${END}\n`
    const b = doc.indexOf(BEGIN)
    const e = doc.indexOf(END)
    if (b < 0 || e < b) {
      log(`docs/benchmarks.md has no ${BEGIN} … ${END} section; not touched`)
    } else {
      fs.writeFileSync(DOC, `${doc.slice(0, b + BEGIN.length)}\n\n${md}\n${doc.slice(e)}`)
      fs.writeFileSync(DOC_SVG, svg)
      // The repository's formatter pads the tables (whitespace only), so `npm run lint` stays clean.
      try {
        execFileSync(path.join(ROOT, 'node_modules', '.bin', 'biome'), ['format', '--write', DOC], {
          cwd: ROOT,
          stdio: 'ignore',
        })
      } catch {
        log('could not run biome format on docs/benchmarks.md; run npm run format')
      }
      log('wrote docs/benchmarks.md and docs/benchmarks.svg')
    }
  }
  console.log(`\n${md}`)
  log(`results in ${outDir} (results.md, results.json, benchmarks.svg)`)
  return results.failures.length > 0 ? 1 : 0
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(`peerup bench failed: ${(err as Error).stack ?? String(err)}`)
    process.exit(1)
  },
)
