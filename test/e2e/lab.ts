/**
 * A network lab for end-to-end tests: Linux network namespaces wired into a small "internet" with a
 * relay and two home networks, each behind a router doing real iptables NAT.
 *
 * ```
 *                 inet (bridge br0, 198.18.0.0/24)
 *        ┌──────────────┼───────────────────┐
 *      relay        router-a              router-b          (relay2, relay3… with `relays`)
 *   198.18.0.1   wan 198.18.0.2         wan 198.18.0.3
 *                lan 100.64.1.1/24      lan 100.64.2.1/24   (lan = a bridge, so LAN peers share it)
 *                 ┌─────┴─────┐            │
 *                 a           a2           b                (a2… and b2… with `lanPeers`)
 *            100.64.1.2   100.64.1.3    100.64.2.2
 * ```
 *
 * Everything happens inside namespaces named `pu-<id>-<host>`, so the machine's own interfaces, routes
 * and firewall are never touched. Needs root, `ip` (iproute2) and `iptables`; see {@link labSupport}.
 *
 * @packageDocumentation
 */

import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import * as fs from 'node:fs'
import * as fsp from 'node:fs/promises'
import * as os from 'node:os'
import * as path from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'

/** How a router maps inside flows to its public address. */
export type NatType = 'cone' | 'cone-open' | 'symmetric'

/** What {@link createLab} builds. */
export interface LabOptions {
  /**
   * `cone`: plain MASQUERADE, which keeps the inside source port whenever it is free, so one inside
   * socket gets the same public port towards every destination (endpoint-independent mapping; inbound
   * is still filtered per destination, i.e. port-restricted cone). `cone-open`: the same, but the
   * router takes what arrives on its WAN unfiltered (no DROP rules: hand-built and some ISP routers),
   * so it answers an unsolicited SYN itself, with a reset. `symmetric`: MASQUERADE
   * `--random-fully`, a fresh random public port for every flow. One value for both routers, or one each.
   */
  nat: NatType | { a: NatType; b: NatType }
  /** A label for logs and the temp dir name; the namespaces are named by a random id anyway. */
  name?: string
  /** Extra hosts on a router's LAN: `1` adds `a2` next to `a`; `{ b: 1 }` adds `b2` next to `b`. */
  lanPeers?: number | { a?: number; b?: number }
  /** Hosts with a public address and no NAT: `relay` and, from 2 on, `relay2` (198.18.0.4)… Default 1. */
  relays?: number
}

/** What a finished command did. */
export interface RunResult {
  /** Exit code, `null` when killed by a signal. */
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
  /** Killed because it outlived `timeoutMs`. */
  timedOut: boolean
}

/** Options of {@link LabHost.run}. */
export interface RunOptions {
  /** Killed (the whole process group) after this long. Default 10 s. */
  timeoutMs?: number
  /** Written to stdin, which is then closed; without it stdin is `/dev/null`. */
  input?: string
  /** Added to this process's environment. */
  env?: NodeJS.ProcessEnv
  cwd?: string
}

/** Options of {@link LabHost.spawn}. */
export interface SpawnOptions {
  /** Added to this process's environment. */
  env?: NodeJS.ProcessEnv
  cwd?: string
  /** Name in {@link Lab.dumpLogs}; default the command's base name. */
  label?: string
  /** `pipe` to write to the process; default `ignore` (`/dev/null`). */
  stdin?: 'pipe' | 'ignore'
}

/** A process started with {@link LabHost.spawn}: a ChildProcess the lab tracks and stops on close. */
export type LabProcess = ChildProcess & {
  readonly label: string
  /** Settles once the process has exited; never rejects. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  /** The last 64 KiB of stdout and stderr, interleaved as they arrived. */
  output(): string
  /** Resolves with the first match of `pattern` in the output (including what came before the call). */
  waitForOutput(pattern: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>
  /** SIGTERM to its process group, SIGKILL after `graceMs` (default 2 s); resolves once it has exited. */
  stop(graceMs?: number): Promise<void>
}

/** One machine of the lab: a network namespace with one address. */
export interface LabHost {
  readonly name: string
  /** The network namespace, for `ip netns exec`. */
  readonly ns: string
  /** Its own address: public for relays and routers (the WAN side), private behind a router. */
  readonly ip: string
  /** The address the internet sees its connections come from. */
  readonly publicIp: string
  readonly role: 'relay' | 'router' | 'peer'
  /** The lab's scratch directory, removed by {@link Lab.close}. */
  readonly tmpDir: string
  /** Runs a command in the namespace to completion; never throws for a non-zero exit. */
  run(cmd: string, args?: readonly string[], options?: RunOptions): Promise<RunResult>
  /** Like {@link LabHost.run} but throws unless it exits 0. */
  mustRun(cmd: string, args?: readonly string[], options?: RunOptions): Promise<RunResult>
  /** Runs a bash script in the namespace. */
  sh(script: string, options?: RunOptions): Promise<RunResult>
  /** Starts a long-running command in the namespace; its output is kept for {@link Lab.dumpLogs}. */
  spawn(cmd: string, args?: readonly string[], options?: SpawnOptions): LabProcess
  /** Whether a TCP connection from this host to `ip:port` is accepted within `timeoutMs` (default 1.5 s). */
  canConnect(ip: string, port: number, timeoutMs?: number): Promise<boolean>
  /** Polls until something accepts TCP on `ip:port` (default this host's loopback); throws after `timeoutMs`. */
  waitForPort(port: number, options?: { ip?: string; timeoutMs?: number }): Promise<void>
}

/** A running lab. Close it (or `await using` it) in the test's cleanup. */
export interface Lab {
  /** The random part of the namespace names: `pu-<id>-<host>`. */
  readonly id: string
  readonly name: string
  /** Host names: `relay`, `router-a`, `router-b`, `a`, `b`, then the extras. */
  readonly hosts: readonly string[]
  readonly namespaces: readonly string[]
  readonly tmpDir: string
  /** The iptables command that works inside the namespaces (`iptables`, `iptables-nft` or `iptables-legacy`). */
  readonly iptables: string
  /** The node binary running the tests, to start node scripts inside namespaces. */
  readonly node: string
  host(name: string): LabHost
  /** A timestamped log of the lab's commands and everything its spawned processes printed. */
  dumpLogs(): string
  /** Stops every process, deletes the namespaces (and so the veths) and temp files. Idempotent. */
  close(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

/** Whether labs can be built here, and why not. */
export type LabSupport = { ok: true; iptables: string } | { ok: false; reason: string }

const PREFIX = 'pu-'
// Records which process owns which lab, so a later run can remove labs whose owner died (SIGKILL,
// OOM, a runner timeout) without touching those of another test process that is still running.
const STATE_DIR = '/run/peerup-lab'
const IP = 'ip'
const OUTPUT_LIMIT = 64 * 1024
const EVENT_LIMIT = 400
const GRACE_MS = 2000

interface LabState {
  pid: number
  /** The owner's start time from /proc/<pid>/stat, so a recycled pid does not look alive. */
  start: string
  name: string
  tmpDir: string | null
}

interface HostSpec {
  name: string
  role: 'relay' | 'router' | 'peer'
  ip: string
  prefix: number
  publicIp: string
  gateway?: string
  lanIp?: string
  nat?: NatType
  router?: string
}

/**
 * Checks that labs can be built: root, `ip`, network namespaces, veths, bridges, and an iptables that
 * does NAT and conntrack inside a namespace. Tests skip with `reason` when it is not ok; the result is cached.
 */
export function labSupport(): Promise<LabSupport> {
  supportCache ??= probeSupport()
  return supportCache
}

let supportCache: Promise<LabSupport> | undefined

async function probeSupport(): Promise<LabSupport> {
  if (process.platform !== 'linux') {
    return { ok: false, reason: `network namespaces need Linux, this is ${process.platform}` }
  }
  if (process.getuid?.() !== 0) {
    return { ok: false, reason: 'network namespaces need root (run the e2e tests as root)' }
  }
  const version = await exec(IP, ['-V'])
  if (version.code !== 0) {
    return { ok: false, reason: `\`ip\` (iproute2) is missing: ${version.stderr.trim() || 'not found'}` }
  }
  await sweepStaleLabs()
  const id = await claimId('probe')
  const ns = `${PREFIX}${id}-probe`
  try {
    const added = await exec(IP, ['netns', 'add', ns])
    if (added.code !== 0) {
      return { ok: false, reason: `cannot create a network namespace: ${added.stderr.trim()}` }
    }
    const links = await exec(IP, ['-n', ns, '-batch', '-'], {
      input:
        'link set lo up\nlink add br0 type bridge\nlink add v0 type veth peer name v1\nlink set v0 master br0\n',
    })
    if (links.code !== 0) {
      return {
        ok: false,
        reason: `cannot create veth/bridge interfaces in a namespace: ${links.stderr.trim()}`,
      }
    }
    // Debian 12's `iptables` is iptables-nft; a host may lack nf_tables or the legacy modules, so use
    // whichever variant really loads a NAT + conntrack ruleset (with --random-fully) in a fresh namespace.
    const tried: string[] = []
    for (const bin of ['iptables', 'iptables-nft', 'iptables-legacy']) {
      const r = await exec(IP, ['netns', 'exec', ns, `${bin}-restore`], { input: routerRules('symmetric') })
      if (r.code === 0) {
        return { ok: true, iptables: bin }
      }
      tried.push(`${bin}-restore: ${(r.stderr.trim() || `exit ${r.code}`).split('\n')[0]}`)
    }
    return { ok: false, reason: `no iptables works inside a namespace (${tried.join('; ')})` }
  } finally {
    await removeNamespace(ns)
    await fsp.rm(statePath(id), { force: true })
  }
}

/**
 * Removes `pu-*` namespaces, their processes and temp dirs left by test processes that died without
 * closing their labs. Labs of live processes are left alone. Returns the namespaces removed.
 */
export async function sweepStaleLabs(): Promise<string[]> {
  const byId = new Map<string, string[]>()
  for (const ns of await listNamespaces()) {
    const id = ns.slice(PREFIX.length).split('-')[0] ?? ''
    byId.set(id, [...(byId.get(id) ?? []), ns])
  }
  let files: string[] = []
  try {
    files = await fsp.readdir(STATE_DIR)
  } catch {}
  for (const file of files) {
    if (file.endsWith('.json')) {
      const id = file.slice(0, -'.json'.length)
      byId.set(id, byId.get(id) ?? [])
    }
  }
  const removed: string[] = []
  for (const [id, namespaces] of byId) {
    const state = await readState(id)
    // The state file is written before any namespace exists and removed after the last one is gone,
    // so a namespace without one is an orphan too.
    if (state !== undefined && isAlive(state.pid, state.start)) {
      continue
    }
    for (const ns of namespaces) {
      await removeNamespace(ns)
      removed.push(ns)
    }
    if (state?.tmpDir) {
      await fsp.rm(state.tmpDir, { recursive: true, force: true })
    }
    await fsp.rm(statePath(id), { force: true })
  }
  return removed
}

/** Builds a lab (see the module doc for the topology). Throws when {@link labSupport} says it cannot. */
export async function createLab(options: LabOptions): Promise<Lab> {
  const support = await labSupport()
  if (!support.ok) {
    throw new Error(`network lab unavailable: ${support.reason}`)
  }
  await sweepStaleLabs()
  const name = (options.name ?? 'lab').replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 40)
  const id = await claimId(name)
  const lab = new LabImpl(id, name, support.iptables, planHosts(options))
  openLabs.add(lab)
  installExitCleanup()
  try {
    lab.tmpDir = await fsp.realpath(await fsp.mkdtemp(path.join(os.tmpdir(), `peerup-lab-${id}-`)))
    await writeState(id, {
      pid: process.pid,
      start: processStart(process.pid) ?? '',
      name,
      tmpDir: lab.tmpDir,
    })
    await lab.build()
  } catch (err) {
    const logs = lab.dumpLogs()
    await lab.close()
    throw new Error(`building lab ${id} failed: ${(err as Error).message}\n${logs}`, { cause: err })
  }
  return lab
}

/**
 * Runs `fn`; if it throws, attaches the lab's logs to the test output (`t.diagnostic`) and rethrows,
 * so a failing e2e test shows what its daemons printed.
 */
export async function withLabLogs<T>(
  t: { diagnostic(message: string): void },
  lab: Lab,
  fn: () => Promise<T>,
): Promise<T> {
  try {
    return await fn()
  } catch (err) {
    t.diagnostic(lab.dumpLogs())
    throw err
  }
}

function planHosts(options: LabOptions): HostSpec[] {
  const nat = typeof options.nat === 'string' ? { a: options.nat, b: options.nat } : options.nat
  const lan = typeof options.lanPeers === 'number' ? { a: options.lanPeers } : (options.lanPeers ?? {})
  const relays = options.relays ?? 1
  if (!Number.isInteger(relays) || relays < 1 || relays > 50) {
    throw new Error(`relays must be 1..50, got ${relays}`)
  }
  const hosts: HostSpec[] = []
  for (let i = 1; i <= relays; i++) {
    const ip = `198.18.0.${i === 1 ? 1 : i + 2}`
    hosts.push({ name: i === 1 ? 'relay' : `relay${i}`, role: 'relay', ip, prefix: 24, publicIp: ip })
  }
  for (const [site, n] of [
    ['a', 1],
    ['b', 2],
  ] as const) {
    const publicIp = `198.18.0.${n + 1}`
    const lanIp = `100.64.${n}.1`
    const router = `router-${site}`
    hosts.push({ name: router, role: 'router', ip: publicIp, prefix: 24, publicIp, lanIp, nat: nat[site] })
    const peers = lan[site] ?? 0
    if (!Number.isInteger(peers) || peers < 0 || peers > 50) {
      throw new Error(`lanPeers.${site} must be 0..50, got ${peers}`)
    }
    for (let i = 1; i <= peers + 1; i++) {
      const name = i === 1 ? site : `${site}${i}`
      hosts.push({
        name,
        role: 'peer',
        ip: `100.64.${n}.${i + 1}`,
        prefix: 24,
        publicIp,
        gateway: lanIp,
        router,
      })
    }
  }
  return hosts
}

// The router's firewall: what a home router does by default. NEW connections from the WAN are dropped
// (not rejected: a silent drop is what NAT traversal code meets in the wild), replies are let in.
function routerRules(nat: NatType): string {
  return [
    '*nat',
    ':PREROUTING ACCEPT [0:0]',
    ':INPUT ACCEPT [0:0]',
    ':OUTPUT ACCEPT [0:0]',
    ':POSTROUTING ACCEPT [0:0]',
    `-A POSTROUTING -o wan -j MASQUERADE${nat === 'symmetric' ? ' --random-fully' : ''}`,
    'COMMIT',
    '*filter',
    ':INPUT ACCEPT [0:0]',
    ':FORWARD ACCEPT [0:0]',
    ':OUTPUT ACCEPT [0:0]',
    '-A INPUT -i wan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT',
    '-A INPUT -i wan -p icmp -j ACCEPT',
    ...(nat === 'cone-open' ? [] : ['-A INPUT -i wan -j DROP']),
    '-A FORWARD -i wan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT',
    ...(nat === 'cone-open' ? [] : ['-A FORWARD -i wan -j DROP']),
    'COMMIT',
    '',
  ].join('\n')
}

interface Tracked {
  proc: ChildProcess
  label: string
  host: string
  command: string
  running: boolean
  status: string
  lines: string[]
  lineChars: number
  partial: { out: string; err: string }
  raw: string
}

class LabImpl implements Lab {
  readonly id: string
  readonly name: string
  readonly iptables: string
  readonly node = process.execPath
  tmpDir = ''
  readonly hosts: readonly string[]
  readonly namespaces: readonly string[]
  readonly #specs: Map<string, HostSpec>
  readonly #hosts = new Map<string, LabHost>()
  readonly #procs = new Set<Tracked>()
  readonly #events: string[] = []
  readonly #t0 = Date.now()
  #closing: Promise<void> | undefined

  constructor(id: string, name: string, iptables: string, specs: HostSpec[]) {
    this.id = id
    this.name = name
    this.iptables = iptables
    this.#specs = new Map(specs.map((s) => [s.name, s]))
    this.hosts = specs.map((s) => s.name)
    this.namespaces = ['inet', ...this.hosts].map((h) => this.#ns(h))
  }

  #ns(host: string): string {
    // router-a → ra keeps every name within 15 characters, the limit the brief set for all lab names.
    return `${PREFIX}${this.id}-${host.replace(/^router-/, 'r')}`
  }

  host(name: string): LabHost {
    const existing = this.#hosts.get(name)
    if (existing !== undefined) {
      return existing
    }
    const spec = this.#specs.get(name)
    if (spec === undefined) {
      throw new Error(`no host ${name} in lab ${this.id} (hosts: ${this.hosts.join(', ')})`)
    }
    const host = this.#makeHost(spec)
    this.#hosts.set(name, host)
    return host
  }

  async build(): Promise<void> {
    const specs = [...this.#specs.values()]
    const inet = this.#ns('inet')
    const batch = this.namespaces.map((ns) => `netns add ${ns}`).join('\n')
    await this.#ip(['-batch', '-'], `${batch}\n`)
    // IPv6 off on the lab's links (not lo) so nothing leaves with fe80:: addresses outside the lab's
    // ranges; bridges do pure L2 forwarding (the host's br_netfilter, when loaded, would otherwise push
    // bridged frames through the namespace's iptables and conntrack).
    const sysctls = (forward: boolean) =>
      [
        'net/ipv6/conf/default/disable_ipv6=1',
        `net/ipv4/ip_forward=${forward ? 1 : 0}`,
        'net/bridge/bridge-nf-call-iptables=0',
        'net/bridge/bridge-nf-call-ip6tables=0',
        'net/bridge/bridge-nf-call-arptables=0',
      ]
        .map((kv) => {
          const [key, value] = kv.split('=')
          return `[ -e /proc/sys/${key} ] && echo ${value} > /proc/sys/${key}`
        })
        .join('; ')
    await Promise.all([
      this.#nsSh(inet, sysctls(false)),
      ...specs.map((s) => this.#nsSh(this.#ns(s.name), sysctls(s.role === 'router'))),
    ])
    await this.#ip(
      ['-n', inet, '-batch', '-'],
      'link set dev lo up\nlink add name br0 type bridge\nlink set dev br0 up\n',
    )
    // Each veth is created inside a namespace with its peer placed straight into another, so no lab
    // interface ever exists in the host's namespace, even for a moment.
    await Promise.all(
      specs
        .filter((s) => s.role !== 'peer')
        .map((s) => {
          const ns = this.#ns(s.name)
          const port = ns.slice(`${PREFIX}${this.id}-`.length)
          const wan = s.role === 'router' ? 'wan' : 'eth0'
          const cmds = [
            'link set dev lo up',
            `link add name ${wan} type veth peer name ${port} netns ${inet}`,
            `addr add ${s.ip}/${s.prefix} dev ${wan}`,
            `link set dev ${wan} up`,
          ]
          if (s.role === 'router') {
            cmds.push(
              'link add name lan type bridge',
              `addr add ${s.lanIp}/24 dev lan`,
              'link set dev lan up',
            )
            for (const peer of specs.filter((p) => p.router === s.name)) {
              cmds.push(
                `link add name ${peer.name} type veth peer name eth0 netns ${this.#ns(peer.name)}`,
                `link set dev ${peer.name} master lan`,
                `link set dev ${peer.name} up`,
              )
            }
          }
          return this.#ip(['-n', ns, '-batch', '-'], `${cmds.join('\n')}\n`)
        }),
    )
    const ports = specs
      .filter((s) => s.role !== 'peer')
      .map((s) => this.#ns(s.name).slice(`${PREFIX}${this.id}-`.length))
    await Promise.all([
      this.#ip(
        ['-n', inet, '-batch', '-'],
        ports.map((p) => `link set dev ${p} master br0\nlink set dev ${p} up\n`).join(''),
      ),
      ...specs
        .filter((s) => s.role === 'peer')
        .map((s) =>
          this.#ip(
            ['-n', this.#ns(s.name), '-batch', '-'],
            `link set dev lo up\naddr add ${s.ip}/${s.prefix} dev eth0\nlink set dev eth0 up\nroute add default via ${s.gateway}\n`,
          ),
        ),
      ...specs
        .filter((s) => s.role === 'router')
        .map((s) =>
          this.#nsExec(this.#ns(s.name), `${this.iptables}-restore`, [], routerRules(s.nat ?? 'cone')),
        ),
    ])
    this.#event(`built: ${specs.map((s) => `${s.name}=${s.ip}`).join(' ')}`)
  }

  async #ip(args: string[], input: string): Promise<void> {
    const r = await exec(IP, args, { input })
    this.#event(`ip ${args.join(' ')} → ${r.code}`)
    if (r.code !== 0) {
      throw new Error(`ip ${args.join(' ')} failed (${r.code}): ${r.stderr.trim()}\ninput:\n${input}`)
    }
  }

  async #nsExec(ns: string, cmd: string, args: string[], input?: string): Promise<void> {
    const r = await exec(IP, ['netns', 'exec', ns, cmd, ...args], input === undefined ? {} : { input })
    if (r.code !== 0) {
      throw new Error(`${cmd} ${args.join(' ')} in ${ns} failed (${r.code}): ${r.stderr.trim()}`)
    }
  }

  #nsSh(ns: string, script: string): Promise<void> {
    // `[ -e ] && …` leaves status 1 for a missing key, which is fine; the final `true` says so.
    return this.#nsExec(ns, 'sh', ['-c', `${script}; true`])
  }

  #event(text: string): void {
    this.#events.push(`[+${Date.now() - this.#t0}ms] ${text}`)
    if (this.#events.length > EVENT_LIMIT) {
      this.#events.splice(0, this.#events.length - EVENT_LIMIT)
    }
  }

  #makeHost(spec: HostSpec): LabHost {
    const ns = this.#ns(spec.name)
    const lab = this
    const host: LabHost = {
      name: spec.name,
      ns,
      ip: spec.ip,
      publicIp: spec.publicIp,
      role: spec.role,
      get tmpDir() {
        return lab.tmpDir
      },
      run: (cmd, args = [], options = {}) => this.#run(spec.name, ns, cmd, args, options),
      async mustRun(cmd, args = [], options = {}) {
        const r = await host.run(cmd, args, options)
        if (r.code !== 0) {
          const why = r.timedOut ? 'timed out' : `exited ${r.code ?? r.signal}`
          throw new Error(
            `${spec.name}$ ${cmd} ${args.join(' ')} ${why}: ${r.stderr.trim() || r.stdout.trim()}`,
          )
        }
        return r
      },
      sh: (script, options = {}) => host.run('bash', ['-c', script], options),
      spawn: (cmd, args = [], options = {}) => this.#spawn(spec.name, ns, cmd, args, options),
      async canConnect(ip, port, timeoutMs = 1500) {
        // bash's /dev/tcp plus coreutils' timeout: no netcat needed, and a silently dropped SYN gives up
        // after timeoutMs instead of the kernel's two minutes of retries.
        const r = await host.run(
          'timeout',
          [String(timeoutMs / 1000), 'bash', '-c', 'exec 3<>"/dev/tcp/$0/$1"', ip, String(port)],
          { timeoutMs: timeoutMs + 2000 },
        )
        return r.code === 0
      },
      async waitForPort(port, { ip = '127.0.0.1', timeoutMs = 10_000 } = {}) {
        const deadline = Date.now() + timeoutMs
        while (!(await host.canConnect(ip, port, 500))) {
          if (Date.now() > deadline) {
            throw new Error(`${spec.name}: nothing accepts TCP on ${ip}:${port} after ${timeoutMs} ms`)
          }
          await delay(50)
        }
      },
    }
    return host
  }

  #track(hostName: string, proc: ChildProcess, label: string, command: string): Tracked {
    const tracked: Tracked = {
      proc,
      label,
      host: hostName,
      command,
      running: true,
      status: 'running',
      lines: [],
      lineChars: 0,
      partial: { out: '', err: '' },
      raw: '',
    }
    this.#procs.add(tracked)
    return tracked
  }

  #capture(tracked: Tracked, stream: 'out' | 'err', chunk: string): void {
    tracked.raw = (tracked.raw + chunk).slice(-OUTPUT_LIMIT)
    const text = tracked.partial[stream] + chunk
    const parts = text.split('\n')
    tracked.partial[stream] = parts.pop() ?? ''
    for (const line of parts) {
      this.#addLine(tracked, stream, line)
    }
  }

  #addLine(tracked: Tracked, stream: 'out' | 'err', line: string): void {
    const entry = `[+${Date.now() - this.#t0}ms ${stream}] ${line}`
    tracked.lines.push(entry)
    tracked.lineChars += entry.length + 1
    while (tracked.lineChars > OUTPUT_LIMIT && tracked.lines.length > 1) {
      tracked.lineChars -= (tracked.lines.shift() ?? '').length + 1
    }
  }

  #spawn(
    hostName: string,
    ns: string,
    cmd: string,
    args: readonly string[],
    options: SpawnOptions,
  ): LabProcess {
    if (this.#closing !== undefined) {
      throw new Error(`lab ${this.id} is closed`)
    }
    const label = options.label ?? path.basename(cmd)
    // detached: its own process group, so stop() also reaches whatever the command forks.
    const proc = spawn(IP, ['netns', 'exec', ns, cmd, ...args], {
      detached: true,
      stdio: [options.stdin ?? 'ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...options.env },
      cwd: options.cwd,
    })
    const tracked = this.#track(hostName, proc, label, [cmd, ...args].join(' '))
    this.#event(`${hostName}: spawn [${label}] pid ${proc.pid ?? '?'}: ${tracked.command}`)
    proc.stdout?.setEncoding('utf8').on('data', (c: string) => this.#capture(tracked, 'out', c))
    proc.stderr?.setEncoding('utf8').on('data', (c: string) => this.#capture(tracked, 'err', c))
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
      proc.once('error', (err) => {
        tracked.running = false
        tracked.status = `failed to start: ${err.message}`
        resolve({ code: null, signal: null })
      })
      proc.once('exit', (code, signal) => {
        tracked.running = false
        tracked.status = `exited ${code ?? signal}`
        this.#event(`${hostName}: [${label}] ${tracked.status}`)
        resolve({ code, signal })
      })
    })
    const closed = new Promise<void>((resolve) => proc.once('close', () => resolve()))
    proc.once('close', () => {
      for (const stream of ['out', 'err'] as const) {
        if (tracked.partial[stream] !== '') {
          this.#addLine(tracked, stream, tracked.partial[stream])
          tracked.partial[stream] = ''
        }
      }
    })
    const waitForOutput = (pattern: RegExp, timeoutMs = 10_000) =>
      new Promise<RegExpMatchArray>((resolve, reject) => {
        const check = () => {
          const m = tracked.raw.match(pattern)
          if (m !== null) {
            done()
            resolve(m)
          }
        }
        const onExit = () => {
          // Output can still be in flight when 'exit' fires; look once more after the pipes drain.
          void Promise.race([closed, delay(500, undefined, { ref: false })]).then(() => {
            check()
            done()
            reject(
              new Error(
                `${hostName} [${label}] ${tracked.status} before printing ${pattern}:\n${tracked.raw}`,
              ),
            )
          })
        }
        const timer = setTimeout(() => {
          done()
          reject(
            new Error(
              `${hostName} [${label}] did not print ${pattern} within ${timeoutMs} ms:\n${tracked.raw}`,
            ),
          )
        }, timeoutMs)
        const done = () => {
          clearTimeout(timer)
          proc.stdout?.off('data', check)
          proc.stderr?.off('data', check)
          proc.off('exit', onExit)
        }
        proc.stdout?.on('data', check)
        proc.stderr?.on('data', check)
        if (tracked.running) {
          proc.once('exit', onExit)
        } else {
          onExit()
        }
        check()
      })
    const stop = async (graceMs = GRACE_MS) => {
      await stopProcess(tracked, exited, graceMs)
    }
    return Object.assign(proc, { label, exited, output: () => tracked.raw, waitForOutput, stop })
  }

  #run(
    hostName: string,
    ns: string,
    cmd: string,
    args: readonly string[],
    options: RunOptions,
  ): Promise<RunResult> {
    if (this.#closing !== undefined) {
      return Promise.reject(new Error(`lab ${this.id} is closed`))
    }
    const t = Date.now()
    const proc = spawn(IP, ['netns', 'exec', ns, cmd, ...args], {
      detached: true,
      stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      env: { ...process.env, ...options.env },
      cwd: options.cwd,
    })
    const tracked = this.#track(hostName, proc, `run ${path.basename(cmd)}`, [cmd, ...args].join(' '))
    return new Promise<RunResult>((resolve, reject) => {
      let stdout = ''
      let stderr = ''
      let timedOut = false
      proc.stdout?.setEncoding('utf8').on('data', (c: string) => {
        stdout += c
      })
      proc.stderr?.setEncoding('utf8').on('data', (c: string) => {
        stderr += c
      })
      proc.stdin?.on('error', () => {})
      proc.stdin?.end(options.input)
      const timer = setTimeout(() => {
        timedOut = true
        killGroup(proc, 'SIGKILL')
      }, options.timeoutMs ?? 10_000)
      proc.once('error', (err) => {
        clearTimeout(timer)
        tracked.running = false
        this.#procs.delete(tracked)
        reject(err)
      })
      proc.once('exit', () => {
        tracked.running = false
      })
      // 'close' rather than 'exit': all output has been read by then.
      proc.once('close', (code, signal) => {
        clearTimeout(timer)
        this.#procs.delete(tracked)
        const how = timedOut ? 'timed out' : `${code ?? signal}`
        this.#event(`${hostName}$ ${tracked.command} → ${how} (${Date.now() - t} ms)`)
        resolve({ code, signal, stdout, stderr, timedOut })
      })
    })
  }

  dumpLogs(): string {
    const parts = [`=== lab ${this.id} (${this.name}): ${this.namespaces.join(' ')} ===`, ...this.#events]
    for (const p of this.#procs) {
      if (
        p.lines.length === 0 &&
        p.partial.out === '' &&
        p.partial.err === '' &&
        p.label.startsWith('run ')
      ) {
        continue
      }
      parts.push(
        `--- ${p.host} [${p.label}] pid ${p.proc.pid ?? '?'} ${p.status}: ${p.command} ---`,
        ...p.lines,
      )
      for (const stream of ['out', 'err'] as const) {
        if (p.partial[stream] !== '') {
          parts.push(`[${stream}, no newline yet] ${p.partial[stream]}`)
        }
      }
    }
    return `${parts.join('\n')}\n`
  }

  close(): Promise<void> {
    this.#closing ??= this.#close()
    return this.#closing
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close()
  }

  async #close(): Promise<void> {
    this.#event('closing')
    await Promise.all(
      [...this.#procs].map((p) =>
        stopProcess(
          p,
          new Promise((resolve) => (p.running ? p.proc.once('exit', resolve) : resolve(undefined))),
          GRACE_MS,
        ),
      ),
    )
    // Whatever escaped the process groups (daemons that setsid, like sshd's per-connection children).
    await Promise.all(this.namespaces.map((ns) => removeNamespace(ns)))
    if (this.tmpDir !== '') {
      await fsp.rm(this.tmpDir, { recursive: true, force: true })
    }
    await fsp.rm(statePath(this.id), { force: true })
    openLabs.delete(this)
  }

  /** Last-resort synchronous cleanup when the process exits with the lab still open. */
  closeSync(): void {
    for (const p of this.#procs) {
      if (p.running) {
        killGroup(p.proc, 'SIGKILL')
      }
    }
    for (const ns of this.namespaces) {
      const pids = spawnSync(IP, ['netns', 'pids', ns], { encoding: 'utf8' }).stdout ?? ''
      for (const pid of pids.split(/\s+/).filter(Boolean)) {
        try {
          process.kill(Number(pid), 'SIGKILL')
        } catch {}
      }
      spawnSync(IP, ['netns', 'del', ns], { stdio: 'ignore' })
    }
    if (this.tmpDir !== '') {
      fs.rmSync(this.tmpDir, { recursive: true, force: true })
    }
    fs.rmSync(statePath(this.id), { force: true })
    openLabs.delete(this)
  }
}

async function stopProcess(tracked: Tracked, exited: Promise<unknown>, graceMs: number): Promise<void> {
  if (!tracked.running) {
    return
  }
  killGroup(tracked.proc, 'SIGTERM')
  // Unref'd: a grace timer that is no longer needed must not keep the test process alive.
  const timer = delay(graceMs, 'timeout', { ref: false })
  if ((await Promise.race([exited, timer])) === 'timeout' && tracked.running) {
    killGroup(tracked.proc, 'SIGKILL')
    await Promise.race([exited, delay(graceMs, undefined, { ref: false })])
  }
}

function killGroup(proc: ChildProcess, signal: NodeJS.Signals): void {
  if (proc.pid === undefined) {
    return
  }
  try {
    process.kill(-proc.pid, signal)
  } catch {
    try {
      proc.kill(signal)
    } catch {}
  }
}

const openLabs = new Set<LabImpl>()
let exitCleanupInstalled = false

// A test process that is interrupted or exits with labs open still removes them: synchronously on
// 'exit', and on SIGINT/SIGTERM before dying of the signal as it would have. SIGKILL is covered by the
// next run's sweepStaleLabs().
function installExitCleanup(): void {
  if (exitCleanupInstalled) {
    return
  }
  exitCleanupInstalled = true
  const cleanup = () => {
    for (const lab of [...openLabs]) {
      lab.closeSync()
    }
  }
  process.on('exit', cleanup)
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    const onSignal = () => {
      cleanup()
      if (process.listenerCount(signal) === 1) {
        process.off(signal, onSignal)
        process.kill(process.pid, signal)
      }
    }
    process.on(signal, onSignal)
  }
}

async function listNamespaces(): Promise<string[]> {
  const r = await exec(IP, ['netns', 'list'])
  return r.stdout
    .split('\n')
    .map((line) => line.trim().split(/\s+/)[0] ?? '')
    .filter((ns) => ns.startsWith(PREFIX))
}

async function removeNamespace(ns: string): Promise<void> {
  // Kill first: a namespace whose name is deleted lives on (with its veths) while a process is in it.
  for (let attempt = 0; attempt < 20; attempt++) {
    const r = await exec(IP, ['netns', 'pids', ns])
    const pids = r.code === 0 ? r.stdout.split(/\s+/).filter(Boolean).map(Number) : []
    if (pids.length === 0) {
      break
    }
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL')
      } catch {}
    }
    await delay(25)
  }
  await exec(IP, ['netns', 'del', ns])
}

function statePath(id: string): string {
  return path.join(STATE_DIR, `${id}.json`)
}

// Ids are 5 lowercase alphanumerics, so `pu-<id>-relay2` fits in 15 characters. Claimed by hard-linking
// a complete state file into place: exclusive like O_EXCL, and nobody ever reads a half-written file.
async function claimId(name: string): Promise<string> {
  await fsp.mkdir(STATE_DIR, { recursive: true })
  const state: LabState = { pid: process.pid, start: processStart(process.pid) ?? '', name, tmpDir: null }
  for (let attempt = 0; ; attempt++) {
    const id = Array.from(randomBytes(5), (b) => 'abcdefghijklmnopqrstuvwxyz0123456789'[b % 36]).join('')
    const tmp = path.join(STATE_DIR, `.${id}.${process.pid}.tmp`)
    await fsp.writeFile(tmp, JSON.stringify(state))
    try {
      await fsp.link(tmp, statePath(id))
      return id
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 20) {
        throw err
      }
    } finally {
      await fsp.rm(tmp, { force: true })
    }
  }
}

async function writeState(id: string, state: LabState): Promise<void> {
  const tmp = path.join(STATE_DIR, `.${id}.${process.pid}.tmp`)
  await fsp.writeFile(tmp, JSON.stringify(state))
  await fsp.rename(tmp, statePath(id))
}

async function readState(id: string): Promise<LabState | undefined> {
  try {
    return JSON.parse(await fsp.readFile(statePath(id), 'utf8')) as LabState
  } catch {
    return undefined
  }
}

function processStart(pid: number): string | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    // Field 22 (starttime), counted after the parenthesised command name, which may contain spaces.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]
  } catch {
    return undefined
  }
}

function isAlive(pid: number, start: string): boolean {
  const now = processStart(pid)
  return now !== undefined && (start === '' || now === start)
}

function exec(cmd: string, args: string[], options: { input?: string } = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    const proc = spawn(cmd, args, {
      stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    proc.stdout?.setEncoding('utf8').on('data', (c: string) => {
      stdout += c
    })
    proc.stderr?.setEncoding('utf8').on('data', (c: string) => {
      stderr += c
    })
    proc.stdin?.on('error', () => {})
    proc.stdin?.end(options.input)
    proc.once('error', (err) =>
      resolve({ code: 127, signal: null, stdout, stderr: err.message, timedOut: false }),
    )
    proc.once('close', (code, signal) => resolve({ code, signal, stdout, stderr, timedOut: false }))
  })
}
