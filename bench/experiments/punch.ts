/**
 * Experiment (issue 15): can Node punch TCP through the NAT lab's routers by simultaneous open?
 *
 * `node_modules/.bin/node bench/experiments/punch.ts [attempts] [scenario…]` (root; default 20
 * attempts, every scenario). For each scenario a fresh lab (test/e2e/lab.ts) is built; an agent
 * runs on a and on b (this file with `agent`, commands as JSON lines on stdin), and a reporter on
 * the relay tells each agent the public address:port its TCP connection came from (a STUN-like
 * probe, made from the very local port the punch will use). Then, at one agreed wall-clock time
 * (the two namespaces share the machine's clock; one side starts up to 300 ms after the other,
 * which side alternates), each agent calls
 * `net.connect({ host: peerPublicIp, port: peerPublicPort, localAddress, localPort })`, and again
 * every 100 ms after an error, until connected or the window (3 s) is over. A punch counts only if
 * both sides connect and each reads the other's hello line.
 *
 * Scenarios:
 * - `cone`: both routers port-preserving MASQUERADE, WAN input dropping NEW (the lab's default);
 * - `cone-nodrop`: the same with the two DROP rules of each router removed (inbound NEW is then
 *   answered by the router's own stack, which has nothing on the port: RST);
 * - `open-b`: router-a as in `cone`, router-b without its DROP rules (the lab's `cone-open`);
 * - `symmetric-b`: router-a cone, router-b `--random-fully`.
 *
 * Prints one JSON line per attempt and a summary table; every namespace and process it made is
 * removed at the end (lab.close() in finally, also on errors and signals via the lab's own hooks).
 *
 * @packageDocumentation
 */

import * as net from 'node:net'
import * as readline from 'node:readline'
import { setTimeout as delay } from 'node:timers/promises'
import type { LabProcess } from '../../test/e2e/lab.ts'

const REPORTER_PORT = 3478
const WINDOW_MS = 3000
const RETRY_MS = 100
const MAX_STAGGER_MS = 300

interface ProbeCmd {
  cmd: 'probe'
  localPort: number
  host: string
  port: number
}
interface PunchCmd {
  cmd: 'punch'
  localPort: number
  peerIp: string
  peerPort: number
  startAt: number
  windowMs: number
  retryMs: number
  name: string
}
export interface PunchResult {
  ok: boolean
  /** ms from this side's own start to 'connect'. */
  connectMs?: number
  /** Wall-clock time of 'connect'. */
  connectedAt?: number
  tries: number
  errors: string[]
  hello?: string
  localAddress?: string
  remote?: string
  why?: string
}

// ---------------------------------------------------------------- inside the namespaces

function reporter(port: number): void {
  net
    .createServer((s) => {
      s.on('error', () => s.destroy())
      s.end(`${s.remoteAddress}:${s.remotePort}\n`)
    })
    .listen(port, '0.0.0.0', () => console.log('ready'))
}

function probe(c: ProbeCmd): Promise<unknown> {
  return new Promise((resolve) => {
    let text = ''
    const s = net.connect({ host: c.host, port: c.port, localPort: c.localPort })
    s.setTimeout(2000, () => s.destroy(new Error('probe timeout')))
    s.on('data', (d) => {
      text += d
    })
    s.on('end', () => resolve({ observed: text.trim() }))
    s.on('error', (err: NodeJS.ErrnoException) => resolve({ error: err.code ?? err.message }))
  })
}

async function punch(c: PunchCmd): Promise<PunchResult> {
  const wait = c.startAt - Date.now()
  if (wait > 0) {
    await delay(wait)
  }
  const started = Date.now()
  const deadline = started + c.windowMs
  const errors: string[] = []
  let tries = 0
  while (Date.now() < deadline) {
    tries++
    const socket = net.connect({ host: c.peerIp, port: c.peerPort, localPort: c.localPort })
    const outcome = await new Promise<'connect' | 'timeout' | string>((resolve) => {
      const timer = setTimeout(() => resolve('timeout'), Math.max(deadline - Date.now(), 1))
      socket.once('connect', () => {
        clearTimeout(timer)
        resolve('connect')
      })
      socket.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer)
        resolve(err.code ?? err.message)
      })
    })
    if (outcome === 'connect') {
      const connectedAt = Date.now()
      const base = {
        connectMs: connectedAt - started,
        connectedAt,
        tries,
        errors,
        localAddress: `${socket.localAddress}:${socket.localPort}`,
        remote: `${socket.remoteAddress}:${socket.remotePort}`,
      }
      // Both sides talk: a connection only one side believes in is no punch.
      const hello = await new Promise<string | Error>((resolve) => {
        let text = ''
        const timer = setTimeout(() => resolve(new Error('no hello within 2 s')), 2000)
        socket.on('data', (d) => {
          text += d
          if (text.includes('\n')) {
            clearTimeout(timer)
            resolve(text.trim())
          }
        })
        socket.on('error', (err) => {
          clearTimeout(timer)
          resolve(err)
        })
        socket.write(`hello from ${c.name}\n`)
      })
      await delay(100)
      socket.destroy()
      if (hello instanceof Error) {
        return { ok: false, ...base, why: hello.message }
      }
      return { ok: true, ...base, hello }
    }
    socket.destroy()
    if (outcome === 'timeout') {
      break
    }
    errors.push(`${Date.now() - started}ms ${outcome}`)
    await delay(Math.min(c.retryMs, Math.max(deadline - Date.now(), 0)))
  }
  return { ok: false, tries, errors, why: `not connected within ${c.windowMs} ms` }
}

function agent(): void {
  const rl = readline.createInterface({ input: process.stdin })
  rl.on('line', (line) => {
    const c = JSON.parse(line) as ProbeCmd | PunchCmd
    void (c.cmd === 'probe' ? probe(c) : punch(c)).then((r) => console.log(`RESULT ${JSON.stringify(r)}`))
  })
  rl.on('close', () => process.exit(0))
  console.log('ready')
}

// ---------------------------------------------------------------- the harness

/** The `RESULT …` lines of a process, one per call, in order. */
function lineQueue(proc: LabProcess): (timeoutMs: number) => Promise<string> {
  const lines: string[] = []
  const waiters: Array<(line: string) => void> = []
  let partial = ''
  proc.stdout?.on('data', (chunk: string) => {
    const parts = (partial + chunk).split('\n')
    partial = parts.pop() ?? ''
    for (const line of parts) {
      if (line.startsWith('RESULT ')) {
        const w = waiters.shift()
        if (w) {
          w(line.slice(7))
        } else {
          lines.push(line.slice(7))
        }
      }
    }
  })
  return (timeoutMs) => {
    const next = lines.shift()
    if (next !== undefined) {
      return Promise.resolve(next)
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${proc.label}: no answer in ${timeoutMs} ms`)),
        timeoutMs,
      )
      waiters.push((line) => {
        clearTimeout(timer)
        resolve(line)
      })
    })
  }
}

type Scenario = 'cone' | 'cone-nodrop' | 'open-b' | 'symmetric-b'
const SCENARIOS: Scenario[] = ['cone', 'cone-nodrop', 'open-b', 'symmetric-b']
const NAT = {
  cone: 'cone',
  'cone-nodrop': 'cone-open',
  'open-b': { a: 'cone', b: 'cone-open' },
  'symmetric-b': { a: 'cone', b: 'symmetric' },
} as const

async function harness(attempts: number, scenarios: Scenario[]): Promise<void> {
  const { createLab } = await import('../../test/e2e/lab.ts')
  const summary: string[] = []
  const self = import.meta.filename
  for (const scenario of scenarios) {
    const lab = await createLab({
      name: `punch-${scenario}`,
      nat: NAT[scenario],
    })
    try {
      const relay = lab.host('relay')
      const rep = relay.spawn(lab.node, [self, 'reporter', String(REPORTER_PORT)], { label: 'reporter' })
      await rep.waitForOutput(/ready/, 10_000)
      const agents: Record<'a' | 'b', LabProcess> = {
        a: lab.host('a').spawn(lab.node, [self, 'agent'], { label: 'agent-a', stdin: 'pipe' }),
        b: lab.host('b').spawn(lab.node, [self, 'agent'], { label: 'agent-b', stdin: 'pipe' }),
      }
      await Promise.all(Object.values(agents).map((p) => p.waitForOutput(/ready/, 10_000)))
      const replies = { a: lineQueue(agents.a), b: lineQueue(agents.b) }
      // One command at a time per agent, so the next RESULT line is this command's answer.
      const ask = async (who: 'a' | 'b', cmd: ProbeCmd | PunchCmd, timeoutMs: number) => {
        agents[who].stdin?.write(`${JSON.stringify(cmd)}\n`)
        return JSON.parse(await replies[who](timeoutMs))
      }
      const rows: Array<{
        ok: boolean
        both: number | undefined
        first: 'a' | 'b'
        a: PunchResult
        b: PunchResult
      }> = []
      for (let i = 0; i < attempts; i++) {
        // Fresh ports each attempt: no conntrack entry or TIME_WAIT of an earlier attempt in the way.
        const port = { a: 20000 + i * 2, b: 20001 + i * 2 }
        const [pa, pb] = await Promise.all([
          ask('a', { cmd: 'probe', localPort: port.a, host: relay.ip, port: REPORTER_PORT }, 5000),
          ask('b', { cmd: 'probe', localPort: port.b, host: relay.ip, port: REPORTER_PORT }, 5000),
        ])
        const pub = (p: { observed?: string }) => {
          const [ip, pt] = (p.observed ?? ':').split(':')
          return { ip: ip ?? '', port: Number(pt) }
        }
        const t0 = Date.now() + 300
        const stagger = Math.round(Math.random() * MAX_STAGGER_MS)
        // Which side goes first alternates; the other starts `stagger` ms later.
        const start = i % 2 === 0 ? { a: t0, b: t0 + stagger } : { a: t0 + stagger, b: t0 }
        const cmd = (who: 'a' | 'b', peer: 'a' | 'b', peerPub: { ip: string; port: number }): PunchCmd => ({
          cmd: 'punch',
          localPort: port[who],
          peerIp: peerPub.ip,
          peerPort: peerPub.port,
          startAt: start[who],
          windowMs: WINDOW_MS,
          retryMs: RETRY_MS,
          name: `${who}->${peer}`,
        })
        const [ra, rb] = (await Promise.all([
          ask('a', cmd('a', 'b', pub(pb)), WINDOW_MS + 8000),
          ask('b', cmd('b', 'a', pub(pa)), WINDOW_MS + 8000),
        ])) as [PunchResult, PunchResult]
        const ok = ra.ok && rb.ok
        const later = Math.max(start.a, start.b)
        const both =
          ok && ra.connectedAt !== undefined && rb.connectedAt !== undefined
            ? Math.max(ra.connectedAt, rb.connectedAt) - later
            : undefined
        rows.push({ ok, both, first: i % 2 === 0 ? 'a' : 'b', a: ra, b: rb })
        console.log(
          JSON.stringify({
            scenario,
            attempt: i + 1,
            ok,
            bothConnectedMsAfterLaterStart: both,
            firstSide: i % 2 === 0 ? 'a' : 'b',
            staggerMs: stagger,
            probe: { a: pa, b: pb },
            local: port,
            a: ra,
            b: rb,
          }),
        )
      }
      const okRows = rows.filter((r) => r.ok)
      const times = okRows.map((r) => r.both ?? Number.NaN).sort((x, y) => x - y)
      const errs = new Map<string, number>()
      for (const r of rows) {
        for (const e of [...r.a.errors, ...r.b.errors]) {
          const code = e.split(' ')[1] ?? e
          errs.set(code, (errs.get(code) ?? 0) + 1)
        }
      }
      const med = times.length === 0 ? '–' : String(times[Math.floor((times.length - 1) / 2)])
      const byFirst = (who: 'a' | 'b') =>
        `${rows.filter((r) => r.first === who && r.ok).length}/${rows.filter((r) => r.first === who).length}`
      summary.push(
        `| ${scenario} | ${okRows.length}/${rows.length} | ${byFirst('a')} | ${byFirst('b')} | ${med} | ${times.length === 0 ? '–' : `${times[0]}–${times.at(-1)}`} | ${[...errs].map(([k, v]) => `${k}×${v}`).join(', ') || '–'} |`,
      )
      for (const p of Object.values(agents)) {
        p.stdin?.end()
      }
    } catch (err) {
      console.error(lab.dumpLogs())
      throw err
    } finally {
      await lab.close()
    }
  }
  console.log(
    `\nloadavg at end: ${(await import('node:fs')).readFileSync('/proc/loadavg', 'utf8').trim()}\n` +
      '| scenario | punched | a first | b first | both connected, ms after the later start (median) | min–max | errors seen by connect() (all tries) |\n' +
      '| --- | --- | --- | --- | --- | --- | --- |',
  )
  for (const line of summary) {
    console.log(line)
  }
}

const [mode, ...rest] = process.argv.slice(2)
if (mode === 'agent') {
  agent()
} else if (mode === 'reporter') {
  reporter(Number(rest[0]))
} else {
  const attempts = mode === undefined ? 20 : Number(mode)
  const chosen = rest.length === 0 ? SCENARIOS : (rest as Scenario[])
  await harness(attempts, chosen)
}
