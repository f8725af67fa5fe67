/**
 * Resumable sessions (issue 14), end to end: the built executable in the NAT lab, real sshd on b,
 * real ssh on a through `ssh -o ProxyCommand='peerup proxy --stdio b ssh'` and a's daemon. Each
 * session streams random bytes both ways (test/e2e/ssh-stream.ts: sshd echoes them and hashes what
 * it got), and each disruption happens once a known number of bytes came back:
 *
 * - symmetric NAT (relayed only, two relays): the session survives `conntrack -F` on router-a and
 *   on router-b, the death (kill -9) of the one of two relays it runs through, and the kill -9 and
 *   restart of the relay it has left — every byte once and in order, ssh exits 0 and says nothing;
 * - cone NAT (one relay, `proxy.resume_grace: 5s`): a daemon started before `peerup relay
 *   authorize` holds its reservation within 30 s of it, without a restart; `conntrack -F` on both
 *   routers, relayed and then direct (the NAT gives the flows their old ports back); a session
 *   that began on the relay moves to WebRTC mid-transfer and the relay's relayed-bytes counter
 *   shows the rest did not cross it; a peer cut off past the grace period has its session reset on
 *   both sides (ssh exits 255, sshd sees its connection reset).
 *
 * Each test prints what it measured (`t.diagnostic`): stalls, recovery times, the NAT mappings
 * before and after a flush, the relay's bytes.
 */

import * as assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { setTimeout as delay } from 'node:timers/promises'
import { createLab, type Lab, type LabHost, type LabProcess, labSupport, withLabLogs } from './lab.ts'
import {
  addNames,
  ensureBuilt,
  type LabRelay,
  logLines,
  PeerupHost,
  RELAY_METRICS_PORT,
  startLabRelay,
} from './peerup-host.ts'
import type { StreamOptions, StreamResult } from './ssh-stream.ts'
import { type Sshd, startSshd } from './sshd.ts'

const support = await labSupport()
const skip = support.ok ? false : `network lab unavailable: ${support.reason}`
// A router forgets its flows with `conntrack -F` (Debian package conntrack; .ci/run installs it).
const noConntrack =
  spawnSync('conntrack', ['--version']).status === 0 ? false : '`conntrack` is missing: install conntrack'
const MiB = 1024 * 1024
const DRIVER = path.join(import.meta.dirname, 'ssh-stream.ts')

/** Bytes a second each session streams (each way): slow enough to be mid-transfer at every disruption. */
const RATE = 1 * MiB
/** Bytes echoed back before the disruption: the session is well under way. */
const LEAD = 2 * MiB
/** After a disruption, bytes sent after it must come back too (not only those in flight). */
const BEYOND = 512 * 1024

interface Progress {
  sent: number
  received: number
  /** performance.now() when the line was read. */
  at: number
}

/** A running ssh-stream.ts (see there) on a lab host: its progress, and its result once ssh exited. */
class SshStream {
  readonly proc: LabProcess
  readonly result: Promise<StreamResult>
  progress: Progress = { sent: 0, received: 0, at: performance.now() }
  readonly #watchers = new Set<(p: Progress) => void>()

  constructor(proc: LabProcess) {
    this.proc = proc
    let partial = ''
    const { promise, resolve } = Promise.withResolvers<StreamResult>()
    this.result = Promise.race([
      promise,
      proc.exited.then(async () => {
        await delay(500)
        throw new Error(`ssh-stream exited without a result:\n${proc.output()}`)
      }),
    ])
    this.result.catch(() => {})
    proc.stdout?.on('data', (text: string) => {
      const lines = (partial + text).split('\n')
      partial = lines.pop() ?? ''
      for (const line of lines) {
        if (line.startsWith('progress ')) {
          this.progress = { ...JSON.parse(line.slice('progress '.length)), at: performance.now() }
          for (const watch of this.#watchers) {
            watch(this.progress)
          }
        } else if (line.startsWith('result ')) {
          resolve(JSON.parse(line.slice('result '.length)) as StreamResult)
        }
      }
    })
  }

  /** Resolves with the first progress that `cond` holds for (now or later). */
  until(cond: (p: Progress) => boolean, what: string, timeoutMs: number): Promise<Progress> {
    if (cond(this.progress)) {
      return Promise.resolve(this.progress)
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#watchers.delete(watch)
        reject(new Error(`${what}: not within ${timeoutMs} ms (at ${JSON.stringify(this.progress)})`))
      }, timeoutMs)
      const watch = (p: Progress): void => {
        if (cond(p)) {
          clearTimeout(timer)
          this.#watchers.delete(watch)
          resolve(p)
        }
      }
      this.#watchers.add(watch)
      void this.result.then(
        () => watch(this.progress),
        () => {},
      )
    })
  }

  /** Stops sending, closes ssh's stdin and resolves with the result once ssh has exited. */
  finish(timeoutMs = 60_000): Promise<StreamResult> {
    this.proc.stdin?.write('finish\n')
    return within(this.result, timeoutMs, 'ssh finishes')
  }
}

/** Starts an ssh session from `node` to the peer `peer`'s sshd through `peerup proxy --stdio`. */
function startStream(node: PeerupHost, sshd: Sshd, peer: string, label: string): SshStream {
  const proxyCommand = `${node.exe} --config ${node.config} proxy --stdio ${peer} ssh`
  const options: StreamOptions = {
    ssh: [...sshd.sshArgs(peer), '-o', `ProxyCommand=${proxyCommand}`, peer],
    rate: RATE,
    maxMs: 240_000,
  }
  const proc = node.host.spawn(process.execPath, [DRIVER, JSON.stringify(options)], {
    env: node.env,
    label,
    stdin: 'pipe',
  })
  return new SshStream(proc)
}

/** Runs `fn` with a streaming ssh session from `node` to b; the driver is stopped however `fn` ends. */
async function withStream<T>(
  node: PeerupHost,
  sshd: Sshd,
  label: string,
  fn: (stream: SshStream) => Promise<T>,
): Promise<T> {
  const stream = startStream(node, sshd, 'b', label)
  try {
    return await fn(stream)
  } finally {
    await stream.proc.stop()
  }
}

/** Every byte arrived once and in order both ways, and ssh exited 0 without a word. */
function assertIntact(r: StreamResult): void {
  assert.equal(r.timedOut, false, 'ssh was still running at the driver deadline')
  assert.equal(r.code, 0, `ssh exited ${r.code ?? r.signal}: ${r.stderr}`)
  assert.doesNotMatch(r.stderr, /broken pipe/i)
  assert.equal(r.stderr.trim(), '', 'ssh said nothing')
  assert.equal(r.remoteSha256, r.sentSha256, 'sshd received exactly what was sent')
  assert.equal(r.received, r.sent)
  assert.equal(r.receivedSha256, r.sentSha256, 'the echo came back exactly')
}

/** Resolves once `pattern` occurs in `proc`'s output more than `count` times; the new match. */
async function nextMatch(
  proc: LabProcess,
  pattern: RegExp,
  count: number,
  timeoutMs: number,
): Promise<string> {
  await proc.waitForOutput(new RegExp(`(?:${pattern.source}[\\s\\S]*?){${count + 1}}`), timeoutMs)
  return (proc.output().match(new RegExp(pattern.source, 'g')) ?? [])[count] as string
}

/** Resolves once `proc` has logged `msg` more than `count` times; the new line, parsed. */
async function nextLog(
  proc: LabProcess,
  msg: string,
  count: number,
  timeoutMs: number,
): Promise<Record<string, unknown>> {
  await nextMatch(proc, new RegExp(`"msg":"${msg.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}"`), count, timeoutMs)
  return logLines(proc, msg)[count] as Record<string, unknown>
}

/** `peerup daemon status --json` of a node. */
async function daemonStatus(node: PeerupHost): Promise<{
  pid: number
  relays: Array<{
    peerId: string
    connected: boolean
    reserved: boolean
    reason?: string
    failures: number
    nextAttemptAt?: string
  }>
}> {
  const out = JSON.parse(await node.peerup(['daemon', 'status', '--json', '--config', node.config], 20_000))
  return out.data ?? out
}

/** Polls `daemon status` until `cond` holds; throws after `timeoutMs`. */
async function statusUntil(
  node: PeerupHost,
  cond: (s: Awaited<ReturnType<typeof daemonStatus>>) => boolean,
  what: string,
  timeoutMs: number,
): Promise<Awaited<ReturnType<typeof daemonStatus>>> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const status = await daemonStatus(node).catch(() => undefined)
    if (status !== undefined && cond(status)) {
      return status
    }
    if (Date.now() > deadline) {
      throw new Error(`${node.host.name}: ${what}: not within ${timeoutMs} ms: ${JSON.stringify(status)}`)
    }
    await delay(200)
  }
}

/** `peerup init` on a lab host with these relays; authorized on `authorizeOn`. */
async function initNode(
  lab: Lab,
  name: string,
  relays: LabRelay[],
  authorizeOn: LabRelay[],
): Promise<{ node: PeerupHost; peerId: string }> {
  const node = new PeerupHost(lab.host(name), lab)
  const relayArgs = relays.flatMap((r) => ['--relay', r.address])
  await node.peerup(['init', '--non-interactive', ...relayArgs, '--dir', path.join(node.dir, 'node')])
  const peerId = (await node.peerup(['whoami', '--config', node.config])).trim()
  for (const relay of authorizeOn) {
    await relay.authorize(peerId)
  }
  return { node, peerId }
}

/** b offers ssh (127.0.0.1:22) to a; a calls b `b` (and knows `names` too). */
async function offerSsh(
  a: { node: PeerupHost; peerId: string },
  b: { node: PeerupHost; peerId: string },
  names: Record<string, string> = {},
): Promise<void> {
  await b.node.peerup(['auth', 'add', a.peerId, '--comment', 'a', '--config', b.node.config])
  await b.node.peerup(['service', 'add', 'ssh', '127.0.0.1:22', '--config', b.node.config])
  addNames(a.node, { b: b.peerId, ...names })
}

function startDaemon(node: PeerupHost, label: string, env: Record<string, string> = {}): LabProcess {
  return node.spawn(['daemon', '--config', node.config, '--log-level', 'info'], label, env)
}

/** Kills a relay with SIGKILL (no goodbye to anyone) and waits for it to be gone. */
async function killRelay(relay: LabRelay): Promise<void> {
  process.kill(-(relay.process.pid as number), 'SIGKILL')
  await relay.process.exited
}

/** `iptables -w …` in a lab host's namespace. */
function iptables(lab: Lab, host: LabHost, ...args: string[]) {
  return host.mustRun(lab.iptables, ['-w', ...args])
}

/** `conntrack -F` in a router's namespace: it forgets every flow, as a NAT that restarted. */
async function flushConntrack(host: LabHost): Promise<void> {
  await host.mustRun('conntrack', ['-F'])
}

/**
 * The router's NAT mappings of flows of `proto` to `port` (the relays' libp2p port, or any with
 * 0): `inside → public` pairs, e.g. `100.64.1.2:40123→198.18.0.2:51234 ESTABLISHED`.
 */
async function natMappings(host: LabHost, proto: 'tcp' | 'udp', port = 0): Promise<string[]> {
  const args = ['-L', '-p', proto, ...(port === 0 ? [] : ['--dport', String(port)])]
  const r = await host.mustRun('conntrack', args)
  return r.stdout
    .split('\n')
    .filter((line) => line.includes('src=100.64.'))
    .map((line) => {
      const [orig, reply] = [
        [...line.matchAll(/src=(\S+) dst=\S+ sport=(\d+)/g)][0],
        [...line.matchAll(/dst=(\S+) sport=\d+ dport=(\d+)/g)][1],
      ]
      const state = /^\w+\s+\d+\s+\d+\s+([A-Z_]+)/.exec(line)?.[1] ?? ''
      return `${orig?.[1]}:${orig?.[2]}→${reply?.[1]}:${reply?.[2]}${state === '' ? '' : ` ${state}`}`
    })
}

/** The relay's peerup_relay_relayed_bytes_total, read from its /metrics. */
async function relayedBytes(lab: Lab, relay: LabRelay): Promise<number> {
  const script = `fetch('http://127.0.0.1:${RELAY_METRICS_PORT}/metrics').then(r => r.text()).then(t => process.stdout.write(t))`
  const r = await relay.host.host.mustRun(lab.node, ['-e', script])
  const m = /^peerup_relay_relayed_bytes_total(?:\{[^}]*\})? (\d+(?:\.\d+)?(?:e\+\d+)?)$/m.exec(r.stdout)
  assert.ok(m, `no peerup_relay_relayed_bytes_total in the relay's /metrics:\n${r.stdout.slice(0, 2000)}`)
  return Number(m[1])
}

const seconds = (ms: number): string => `${(ms / 1000).toFixed(1)} s`

/** `promise`, or an error saying `what` did not happen within `timeoutMs`. */
function within<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  return Promise.race([
    promise,
    delay(timeoutMs, undefined, { ref: false }).then(() => {
      throw new Error(`${what}: not within ${timeoutMs} ms`)
    }),
  ])
}

/** What sshd (LogLevel VERBOSE) says when its client's connection is reset under it. */
const SSHD_RESET = /(?:Connection reset by|Read error from remote host)[^\n]*/

/** A path from `daemon paths --json`, briefly: `RELAYED via relay2`. */
function describePath(path: { type?: string; relay?: string } | undefined, relays: LabRelay[]): string {
  const relay = relays.find((r) => r.peerId === path?.relay)
  return path?.type === 'RELAYED' ? `RELAYED via ${relay?.host.host.name ?? path.relay}` : String(path?.type)
}

/** What a disruption did to a session that survived it. */
interface Survived {
  result: StreamResult
  /** From the disruption until bytes sent after it had come back. */
  backMs: number
  /** Times a's daemon attached the session again meanwhile (0: the path held). */
  relinks: number
}

/** Streams until {@link LEAD} bytes came back, runs `disrupt`, streams on until it is over, finishes. */
async function survive(
  stream: SshStream,
  daemonA: LabProcess,
  disrupt: () => Promise<void>,
): Promise<Survived> {
  await stream.until((p) => p.received >= LEAD, 'the stream under way', 60_000)
  const attached = logLines(daemonA, 'session attached').length
  const cut = stream.progress
  const started = performance.now()
  await disrupt()
  const back = await stream.until(
    (p) => p.received >= cut.sent + BEYOND,
    'bytes sent after the disruption came back',
    120_000,
  )
  const result = await stream.finish()
  return {
    result,
    backMs: back.at - started,
    relinks: logLines(daemonA, 'session attached').length - attached,
  }
}

function describeSurvival(what: string, s: Survived): string {
  const r = s.result
  return `${what}: ${(r.sent / MiB).toFixed(1)} MiB each way byte-exact, ssh exit ${r.code}; session attached again ${s.relinks}×; longest stall ${seconds(r.longestGapMs)}; bytes sent after the disruption back within ${seconds(s.backMs)}`
}

/** The relay the session opened last by a's daemon runs through (a names the relays r1 and r2). */
function relayInUse(daemonA: LabProcess, relays: LabRelay[]): { used: LabRelay; other: LabRelay } {
  const path = String(logLines(daemonA, 'service session opened').at(-1)?.path)
  const m = /^RELAYED via r([12])$/.exec(path)
  assert.ok(m, `the session opened on ${path}, not through r1 or r2`)
  const i = Number(m[1]) - 1
  return { used: relays[i] as LabRelay, other: relays[1 - i] as LabRelay }
}

describe('an ssh session across broken paths (symmetric NAT: relayed only; two relays)', {
  skip,
  timeout: 240_000,
}, () => {
  let lab: Lab
  let relays: LabRelay[]
  let a: PeerupHost
  let b: PeerupHost
  let sshd: Sshd
  let daemonA: LabProcess

  before(async () => {
    ensureBuilt()
    lab = await createLab({ nat: 'symmetric', relays: 2, name: 'sessions-relayed' })
    relays = await Promise.all([startLabRelay(lab), startLabRelay(lab, { host: 'relay2' })])
    const na = await initNode(lab, 'a', relays, relays)
    const nb = await initNode(lab, 'b', relays, relays)
    a = na.node
    b = nb.node
    await offerSsh(na, nb, { r1: relays[0]?.peerId as string, r2: relays[1]?.peerId as string })
    sshd = await startSshd(b.host)
    startDaemon(b, 'daemon-b')
    daemonA = startDaemon(a, 'daemon-a')
    await statusUntil(
      b,
      (s) => s.relays.length === 2 && s.relays.every((r) => r.reserved),
      'reservations on both relays',
      60_000,
    )
    await statusUntil(a, () => true, 'the daemon answers', 30_000)
  })

  after(async () => {
    await lab?.close()
  })

  for (const router of ['router-a', 'router-b']) {
    it(`survives conntrack -F on ${router}`, { skip: noConntrack }, async (t) => {
      const host = lab.host(router)
      await withLabLogs(t, lab, () =>
        withStream(a, sshd, `ssh-conntrack-${router}`, async (stream) => {
          let before: string[] = []
          const s = await survive(stream, daemonA, async () => {
            before = await natMappings(host, 'tcp', 7777)
            await flushConntrack(host)
          })
          const afterwards = await natMappings(host, 'tcp', 7777)
          t.diagnostic(describeSurvival(`conntrack -F on ${router}`, s))
          t.diagnostic(`${router} NAT before: ${before.join(', ')}; after: ${afterwards.join(', ')}`)
          assertIntact(s.result)
          // --random-fully: the flow's next packet leaves from another public port, which the
          // relay answers with a RST: the path really broke, and the session went on.
          assert.ok(s.relinks >= 1, 'the flush broke the path and the session was attached again')
        }),
      )
    })
  }

  it('survives the death (kill -9) of the one relay of two it runs through', async (t) => {
    await withLabLogs(t, lab, () =>
      withStream(a, sshd, 'ssh-relay-of-two', async (stream) => {
        await stream.until((p) => p.received > 0, 'the stream under way', 60_000)
        const { used, other } = relayInUse(daemonA, relays)
        const s = await survive(stream, daemonA, () => killRelay(used))
        const paths = JSON.parse(await a.peerup(['daemon', 'paths', '--json', '--config', a.config]))
        const toB = (paths.data ?? paths).find((p: { name?: string }) => p.name === 'b')?.path
        t.diagnostic(describeSurvival(`kill -9 of ${used.host.host.name}, the relay in use`, s))
        t.diagnostic(`a's path to b afterwards: ${describePath(toB, relays)}`)
        assertIntact(s.result)
        assert.ok(s.relinks >= 1, 'the session was attached again')
        assert.equal(toB?.relay, other.peerId, 'a reaches b through the other relay')
      }),
    )
  })

  it('survives the kill -9 and restart of the relay it runs through (no other relay left)', async (t) => {
    await withLabLogs(t, lab, () =>
      withStream(a, sshd, 'ssh-relay-restart', async (stream) => {
        await stream.until((p) => p.received > 0, 'the stream under way', 60_000)
        // Whichever relay the session took is the only one alive (the other died in the test
        // before; killed here when this test runs alone).
        const { used, other } = relayInUse(daemonA, relays)
        if (other.process.exitCode === null && other.process.signalCode === null) {
          await killRelay(other)
        }
        let downMs = 0
        const s = await survive(stream, daemonA, async () => {
          const killed = performance.now()
          await killRelay(used)
          await used.restart()
          downMs = performance.now() - killed
        })
        t.diagnostic(
          describeSurvival(`kill -9 of ${used.host.host.name}, serving again ${seconds(downMs)} later`, s),
        )
        assertIntact(s.result)
        assert.ok(s.relinks >= 1, 'the session was attached again')
      }),
    )
  })
})

/** How long the grace period is in the cone lab (`proxy.resume_grace`), on a and b. */
const GRACE_S = 5

describe('late authorization, the move to WebRTC, the grace period (cone NAT)', {
  skip,
  timeout: 240_000,
}, () => {
  let lab: Lab
  let relay: LabRelay
  let a: PeerupHost
  let b: PeerupHost
  let bId: string
  let sshd: Sshd
  let daemonA: LabProcess
  let daemonB: LabProcess
  let routerA: LabHost

  before(async () => {
    ensureBuilt()
    lab = await createLab({ nat: 'cone', name: 'sessions-direct' })
    routerA = lab.host('router-a')
    relay = await startLabRelay(lab, { metrics: true })
    const na = await initNode(lab, 'a', [relay], [relay])
    // b is not authorized on the relay yet: the first test does it, with b's daemon running.
    const nb = await initNode(lab, 'b', [relay], [])
    a = na.node
    b = nb.node
    bId = nb.peerId
    await offerSsh(na, nb)
    for (const n of [a, b]) {
      fs.appendFileSync(n.config, `\nproxy:\n  resume_grace: ${GRACE_S}s\n`)
    }
    sshd = await startSshd(b.host)
    // No UDP through a's router until the move test lets it: a reaches b relayed, and WebRTC fails.
    await iptables(lab, routerA, '-I', 'FORWARD', '1', '-p', 'udp', '-j', 'DROP')
    // a does not punch TCP (PEERUP_PUNCH=off, src/env.ts): the direct path here is WebRTC, held
    // back by the UDP block (the move to a punched connection is test/e2e/direct.test.ts's).
    daemonA = startDaemon(a, 'daemon-a', { PEERUP_PUNCH: 'off' })
    await statusUntil(a, () => true, 'the daemon answers', 30_000)
  })

  after(async () => {
    await lab?.close()
  })

  it('a daemon started before `peerup relay authorize` holds its reservation within 30 s of it, without a restart', async (t) => {
    await withLabLogs(t, lab, async () => {
      daemonB = startDaemon(b, 'daemon-b')
      // Well into its backoff (1 s, 2 s, 4 s…): refused three times, and status says why.
      const refused = await statusUntil(
        b,
        (s) => /relay_authorized_keys/.test(s.relays[0]?.reason ?? '') && (s.relays[0]?.failures ?? 0) >= 3,
        'three refusals shown',
        60_000,
      )
      const started = performance.now()
      const startedAt = Date.now()
      const nextTry = refused.relays[0]?.nextAttemptAt
      await relay.authorize(bId)
      const held = await statusUntil(b, (s) => s.relays[0]?.reserved === true, 'reservation held', 40_000)
      const tookMs = performance.now() - started
      const due = nextTry === undefined ? '?' : seconds(Date.parse(nextTry) - startedAt)
      t.diagnostic(
        `b refused ${refused.relays[0]?.failures}× ("${refused.relays[0]?.reason}", next try due ${due} after the authorize); \`relay authorize\` → reservation held in ${seconds(tookMs)}, daemon pid ${refused.pid} → ${held.pid}`,
      )
      assert.equal(held.pid, refused.pid, 'the same daemon, not restarted')
      assert.ok(tookMs <= 30_000, `reservation held ${seconds(tookMs)} after the authorize`)
    })
  })

  it('survives conntrack -F on both routers while relayed (cone NAT: ports kept)', {
    skip: noConntrack,
  }, async (t) => {
    await withLabLogs(t, lab, () =>
      withStream(a, sshd, 'ssh-conntrack-cone', async (stream) => {
        await stream.until((p) => p.received > 0, 'the stream under way', 60_000)
        assert.match(String(logLines(daemonA, 'service session opened').at(-1)?.path), /^RELAYED via /)
        let before: string[] = []
        const s = await survive(stream, daemonA, async () => {
          before = await natMappings(routerA, 'tcp', 7777)
          await Promise.all([flushConntrack(routerA), flushConntrack(lab.host('router-b'))])
        })
        const afterwards = await natMappings(routerA, 'tcp', 7777)
        t.diagnostic(describeSurvival('conntrack -F on router-a and router-b, session relayed', s))
        t.diagnostic(`router-a NAT before: ${before.join(', ')}; after: ${afterwards.join(', ')}`)
        assertIntact(s.result)
      }),
    )
  })

  it('a session that began on the relay moves to WebRTC mid-transfer; the relay carries none of the rest', async (t) => {
    const relayAtStart = await relayedBytes(lab, relay)
    await withLabLogs(t, lab, () =>
      withStream(a, sshd, 'ssh-upgrade', async (stream) => {
        await stream.until((p) => p.received >= LEAD, 'the stream under way on the relay', 60_000)
        const opened = logLines(daemonA, 'service session opened').at(-1)
        assert.match(String(opened?.path), /^RELAYED via /, 'the session began on the relay')
        const moves = logLines(daemonA, 'session moved to a direct path').length
        const relayAtLift = await relayedBytes(lab, relay)
        const lifted = performance.now()
        await iptables(lab, routerA, '-D', 'FORWARD', '-p', 'udp', '-j', 'DROP')
        await nextLog(daemonA, 'session moved to a direct path', moves, 60_000)
        const movedMs = performance.now() - lifted
        const atMove = stream.progress
        // What was in flight on the relayed link when the session moved is behind us.
        const settled = await stream.until((p) => p.received >= atMove.sent + BEYOND, 'settled', 30_000)
        const relayAtSettle = await relayedBytes(lab, relay)
        const end = await stream.until((p) => p.received >= settled.sent + 8 * MiB, '8 MiB more', 60_000)
        const relayAtEnd = await relayedBytes(lab, relay)
        const result = await stream.finish()
        const carried = relayAtEnd - relayAtSettle
        const direct = end.received - settled.received
        t.diagnostic(
          `relay carried ${((relayAtLift - relayAtStart) / MiB).toFixed(1)} MiB for the first ${(LEAD / MiB).toFixed(0)}+ MiB each way; UDP let through → session moved to WebRTC in ${seconds(movedMs)}; relay carried ${relayAtSettle - relayAtLift} bytes until what was in flight had arrived, then ${carried} bytes while ${(direct / MiB).toFixed(1)} MiB went each way direct; longest stall ${seconds(result.longestGapMs)}`,
        )
        assertIntact(result)
        assert.ok(carried < 64 * 1024, `the relay carried ${carried} bytes after the move`)
      }),
    )
  })

  it('survives conntrack -F on both routers while it runs over WebRTC (cone NAT: ports kept)', {
    skip: noConntrack,
  }, async (t) => {
    await withLabLogs(t, lab, () =>
      withStream(a, sshd, 'ssh-conntrack-direct', async (stream) => {
        await stream.until((p) => p.received > 0, 'the stream under way', 60_000)
        assert.equal(logLines(daemonA, 'service session opened').at(-1)?.path, 'DIRECT (webrtc)')
        let before: string[] = []
        const s = await survive(stream, daemonA, async () => {
          before = await natMappings(routerA, 'udp')
          await Promise.all([flushConntrack(routerA), flushConntrack(lab.host('router-b'))])
        })
        const afterwards = await natMappings(routerA, 'udp')
        t.diagnostic(describeSurvival('conntrack -F on router-a and router-b, session on WebRTC', s))
        t.diagnostic(`router-a UDP NAT before: ${before.join(', ')}; after: ${afterwards.join(', ')}`)
        assertIntact(s.result)
      }),
    )
  })

  it(`a peer away past the grace period (${GRACE_S} s): the session is reset on both sides`, async (t) => {
    await withLabLogs(t, lab, () =>
      withStream(a, sshd, 'ssh-grace', async (stream) => {
        await stream.until((p) => p.received >= LEAD / 2, 'the stream under way', 60_000)
        const closedAtB = logLines(daemonB, 'service connection closed').length
        const lostAtA = logLines(daemonA, 'session lost its link').length
        const resetsAtSshd = sshd.process.output().match(new RegExp(SSHD_RESET.source, 'g'))?.length ?? 0
        // a disappears: nothing crosses its router any more, either way.
        await iptables(lab, routerA, '-I', 'FORWARD', '1', '-j', 'DROP')
        const cut = performance.now()
        const cutAt = Date.now()
        try {
          const result = await within(stream.result, 60_000, 'ssh exits')
          const sshMs = performance.now() - cut
          const closed = await nextLog(daemonB, 'service connection closed', closedAtB, 60_000)
          const sshdSaid = await nextMatch(sshd.process, SSHD_RESET, resetsAtSshd, 10_000)
          const lost = logLines(daemonA, 'session lost its link')[lostAtA]
          const since = (line: Record<string, unknown> | undefined): string =>
            line === undefined ? '?' : seconds(Date.parse(String(line.time)) - cutAt)
          t.diagnostic(
            `a cut off: a's session lost its link after ${since(lost)}, ssh exited ${result.code} after ${seconds(sshMs)} (${JSON.stringify(result.stderr.trim())}); b reset its socket to sshd after ${since(closed)} ("${closed.error}"); sshd: "${sshdSaid}"`,
          )
          assert.notEqual(result.code, 0, 'ssh noticed')
          assert.ok(result.received < result.sent, 'the stream did not finish')
          assert.match(result.stderr, new RegExp(`did not come back within ${GRACE_S} s`))
          assert.equal(closed.reset, true, 'b reset its socket to sshd')
          assert.match(String(closed.error), new RegExp(`did not come back within ${GRACE_S} s`))
        } finally {
          await iptables(lab, routerA, '-D', 'FORWARD', '-j', 'DROP')
        }
      }),
    )
  })
})

describe('an ssh session on a bulk link of a punched path (cone NAT)', { skip, timeout: 240_000 }, () => {
  let lab: Lab
  let a: PeerupHost
  let sshd: Sshd
  let daemonA: LabProcess

  before(async () => {
    ensureBuilt()
    lab = await createLab({ nat: 'cone', name: 'sessions-bulk' })
    const relay = await startLabRelay(lab)
    const na = await initNode(lab, 'a', [relay], [relay])
    const nb = await initNode(lab, 'b', [relay], [relay])
    a = na.node
    await offerSsh(na, nb)
    sshd = await startSshd(nb.node.host)
    startDaemon(nb.node, 'daemon-b')
    daemonA = startDaemon(a, 'daemon-a')
    await statusUntil(a, () => true, 'the daemon answers', 30_000)
  })

  after(async () => {
    await lab?.close()
  })

  it('moves onto its own TLS connection after 8 MiB and survives conntrack -F on both routers there', {
    skip: noConntrack,
  }, async (t) => {
    await withLabLogs(t, lab, () =>
      withStream(a, sshd, 'ssh-bulk', async (stream) => {
        const moved = await nextLog(daemonA, 'session moved to a bulk link', 0, 90_000)
        const at = stream.progress
        let before: string[] = []
        const s = await survive(stream, daemonA, async () => {
          before = await natMappings(lab.host('router-a'), 'tcp')
          await Promise.all([flushConntrack(lab.host('router-a')), flushConntrack(lab.host('router-b'))])
        })
        t.diagnostic(
          `session moved to a bulk link after ${(at.received / MiB).toFixed(1)} MiB came back (${String(moved.session)})`,
        )
        t.diagnostic(describeSurvival('conntrack -F on router-a and router-b, session on a bulk link', s))
        t.diagnostic(`router-a TCP NAT before: ${before.join(', ')}`)
        assertIntact(s.result)
        assert.equal(logLines(daemonA, 'session stays on its stream').length, 0, 'the bulk link was set up')
      }),
    )
  })
})
