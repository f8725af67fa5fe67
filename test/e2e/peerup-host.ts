/**
 * Running the built executable on lab hosts: a copy of dist/peerup per host with its own HOME, and
 * the steps every end-to-end test takes — a relay set up and serving, nodes initialised against
 * it, authorized on the relay and by each other.
 */

import { execFileSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import type { Lab, LabHost, LabProcess } from './lab.ts'
import { type Sshd, startSshd } from './sshd.ts'

/** The repository root. */
export const ROOT = path.resolve(import.meta.dirname, '../..')

/** The built single executable. */
export const EXE = path.join(ROOT, 'dist', 'peerup')

/** Builds dist/peerup when it is missing, so `npm run test:e2e` works on its own. */
export function ensureBuilt(): void {
  if (!fs.existsSync(EXE)) {
    execFileSync(process.execPath, [path.join(ROOT, 'build.mjs')], { cwd: ROOT, stdio: 'inherit' })
  }
}

/** One machine running peerup: its directory and a way to run the executable there. */
export class PeerupHost {
  readonly host: LabHost
  readonly dir: string
  readonly exe: string
  readonly env: Record<string, string>

  /** With `peerupHome`, PEERUP_HOME points at `<dir>/node`, so commands need no --config. */
  constructor(host: LabHost, lab: Lab, options: { peerupHome?: boolean } = {}) {
    this.host = host
    this.dir = path.join(lab.tmpDir, `peerup-${host.name}`)
    this.exe = path.join(this.dir, 'peerup')
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 })
    fs.copyFileSync(EXE, this.exe)
    fs.chmodSync(this.exe, 0o755)
    this.env = {
      HOME: this.dir,
      PEERUP_CACHE_DIR: path.join(lab.tmpDir, 'cache'),
      PATH: '/usr/sbin:/usr/bin:/sbin:/bin',
      ...(options.peerupHome === true ? { PEERUP_HOME: path.join(this.dir, 'node') } : {}),
    }
  }

  /** The node config written by `init --dir <dir>/node`. */
  get config(): string {
    return path.join(this.dir, 'node', 'config.yaml')
  }

  /** Runs peerup to completion, whatever its exit code. */
  run(args: string[], options: { timeoutMs?: number; env?: Record<string, string> } = {}) {
    return this.host.run(this.exe, args, {
      env: { ...this.env, ...options.env },
      timeoutMs: options.timeoutMs ?? 60_000,
    })
  }

  /** Runs peerup to completion; throws unless it exits 0. */
  async peerup(args: string[], timeoutMs = 60_000): Promise<string> {
    const r = await this.run(args, { timeoutMs })
    if (r.code !== 0) {
      throw new Error(`${this.host.name}: peerup ${args.join(' ')} exited ${r.code}: ${r.stderr}`)
    }
    return r.stdout
  }

  /** Starts a long-running peerup (daemon, relay, proxy), with `env` added to its environment. */
  spawn(args: string[], label: string, env: Record<string, string> = {}): LabProcess {
    return this.host.spawn(this.exe, args, { env: { ...this.env, ...env }, label })
  }
}

/**
 * The environment our systemd unit gives a relay (`Environment=` lines of
 * configs/relay-server.service), so the lab runs the relay as it is deployed.
 */
export const RELAY_UNIT_ENV: Record<string, string> = Object.fromEntries(
  [
    ...fs
      .readFileSync(path.resolve(import.meta.dirname, '../../configs/relay-server.service'), 'utf8')
      .matchAll(/^Environment=(\w+)=(.*)$/gm),
  ].map((m) => [m[1] as string, m[2] as string]),
)

/** A relay serving on `relay` (198.18.0.1, tcp 7777, STUN on udp 3478 unless `stun: false`). */
export interface LabRelay {
  host: PeerupHost
  config: string
  peerId: string
  /** `/ip4/198.18.0.1/tcp/7777/p2p/<relay>` */
  address: string
  /** The running `relay serve`; {@link LabRelay.restart} replaces it. */
  process: LabProcess
  authorize(peerId: string): Promise<void>
  /** Starts `relay serve` again (after the test stopped or killed it) and waits for its port. */
  restart(): Promise<void>
}

/** Options of {@link startLabRelay}. */
export interface LabRelayOptions {
  /** Serve STUN (udp 3478); default true. */
  stun?: boolean
  /** Also answer STUN on udp {@link RELAY_STUN_ALTERNATE_PORT} (`stun.alternate_listen_address`), for `doctor`. */
  stunAlternate?: boolean
  /** The lab host to run on; default `relay` (with `relays: 2`, also `relay2`). */
  host?: string
  /** Serve Prometheus metrics on 127.0.0.1:{@link RELAY_METRICS_PORT} in the relay's namespace. */
  metrics?: boolean
}

/** The relay's second STUN port with `stunAlternate: true`. */
export const RELAY_STUN_ALTERNATE_PORT = 3479

/** Where a relay started with `metrics: true` serves /metrics (loopback of its namespace). */
export const RELAY_METRICS_PORT = 9092

/** Sets a relay up on the lab's `relay` host (or `options.host`) and starts it. */
export async function startLabRelay(lab: Lab, options: LabRelayOptions = {}): Promise<LabRelay> {
  const name = options.host ?? 'relay'
  const host = new PeerupHost(lab.host(name), lab)
  await host.peerup(['relay', 'setup', '--dir', path.join(host.dir, 'relay')])
  const config = path.join(host.dir, 'relay', 'relay-server.yaml')
  let yaml = fs.readFileSync(config, 'utf8')
  if (options.stun === false) {
    yaml = yaml.replace('stun:\n  enabled: true', 'stun:\n  enabled: false')
  }
  if (options.stunAlternate === true) {
    yaml = yaml.replace(
      "alternate_listen_address: ''",
      `alternate_listen_address: 0.0.0.0:${RELAY_STUN_ALTERNATE_PORT}`,
    )
  }
  if (options.metrics === true) {
    yaml += `\ntelemetry:\n  metrics:\n    enabled: true\n    listen_address: 127.0.0.1:${RELAY_METRICS_PORT}\n`
  }
  fs.writeFileSync(config, yaml)
  const info = JSON.parse(await host.peerup(['relay', 'info', '--json', '--config', config]))
  const address = `/ip4/${host.host.ip}/tcp/7777/p2p/${info.peerId}`
  const serve = async (label: string): Promise<LabProcess> => {
    const proc = host.spawn(['relay', 'serve', '--config', config], label, RELAY_UNIT_ENV)
    await host.host.waitForPort(7777, { ip: host.host.ip, timeoutMs: 20_000 })
    return proc
  }
  const relay: LabRelay = {
    host,
    config,
    peerId: info.peerId,
    address,
    process: await serve(name),
    authorize: async (peerId) => {
      await host.peerup(['relay', 'authorize', peerId, '--config', config])
    },
    restart: async () => {
      relay.process = await serve(`${name}-restarted`)
    },
  }
  return relay
}

/**
 * Initialises a node on `host` using `relay`, authorized there (unless `authorize: false`);
 * returns it with its peer id.
 */
export async function initLabNode(
  lab: Lab,
  name: string,
  relay: LabRelay,
  options: { authorize?: boolean } = {},
): Promise<{ node: PeerupHost; peerId: string }> {
  const node = new PeerupHost(lab.host(name), lab)
  await node.peerup([
    'init',
    '--non-interactive',
    '--relay',
    relay.address,
    '--dir',
    path.join(node.dir, 'node'),
  ])
  const peerId = (await node.peerup(['whoami', '--config', node.config])).trim()
  if (options.authorize !== false) {
    await relay.authorize(peerId)
  }
  return { node, peerId }
}

/** Adds `names:` entries to a node's config (the file `init` wrote has `names: {}`). */
export function addNames(node: PeerupHost, names: Record<string, string>): void {
  const entries = Object.entries(names)
    .map(([n, id]) => `  ${n}: ${id}`)
    .join('\n')
  fs.writeFileSync(
    node.config,
    fs.readFileSync(node.config, 'utf8').replace('names: {}', `names:\n${entries}`),
  )
}

/** Log lines (JSON) of a peerup process whose `msg` is `msg`, in order. */
export function logLines(proc: LabProcess, msg: string): Array<Record<string, unknown>> {
  return proc
    .output()
    .split('\n')
    .flatMap((line) => {
      const start = line.indexOf('{')
      if (start < 0) {
        return []
      }
      try {
        const parsed = JSON.parse(line.slice(start)) as Record<string, unknown>
        return parsed.msg === msg ? [parsed] : []
      } catch {
        return []
      }
    })
}

/**
 * Byte counters of the relay's ports — its libp2p port (tcp 7777, circuits) and its splice port
 * (tcp 7778, bulk transfers joined as plain TCP, src/relay/splice.ts) — in and out, from iptables
 * rules in the relay's namespace that count and do nothing else: everything relayed crosses them
 * twice. The function returns the total; `.splice()` the splice port's part.
 */
export async function relayCounters(
  lab: Lab,
  relay: LabHost,
): Promise<(() => Promise<number>) & { splice: () => Promise<number> }> {
  const ipt = (...args: string[]) => relay.mustRun(lab.iptables, ['-w', ...args])
  for (const port of ['7777', '7778']) {
    await ipt('-A', 'INPUT', '-p', 'tcp', '--dport', port)
    await ipt('-A', 'OUTPUT', '-p', 'tcp', '--sport', port)
  }
  const count = async (ports: RegExp): Promise<number> => {
    let total = 0
    for (const chain of ['INPUT', 'OUTPUT']) {
      const out = (await ipt('-n', '-v', '-x', '-L', chain)).stdout
      for (const line of out.split('\n')) {
        if (ports.test(line)) {
          total += Number(line.trim().split(/\s+/)[1])
        }
      }
    }
    return total
  }
  return Object.assign(() => count(/[sd]pt:(7777|7778)\b/), { splice: () => count(/[sd]pt:7778\b/) })
}

/** Runs ssh through `peerup proxy` listening on `port` of `host`, feeding `input` from a file. */
export async function sshThrough(
  host: LabHost,
  sshd: Sshd,
  port: number,
  command: string,
  stdinFile: string,
  timeoutMs: number,
) {
  return host.run(
    'sh',
    ['-c', `ssh ${sshd.sshArgs('b', { port }).join(' ')} 127.0.0.1 '${command}' < ${stdinFile}`],
    { timeoutMs },
  )
}

/** Pings until the peer answers at all (its daemon needs a moment for its reservation). */
export async function waitUntilReachable(from: PeerupHost, peer: string): Promise<void> {
  for (let i = 0; i < 60; i++) {
    const r = await from.host.run(from.exe, ['ping', peer, '-c', '1', '--config', from.config], {
      env: from.env,
      timeoutMs: 30_000,
    })
    if (r.code === 0) {
      return
    }
    await new Promise((resolve) => setTimeout(resolve, 500))
  }
  throw new Error(`${peer} never answered a ping`)
}

/**
 * The setting of the tests that ssh from a to b through `peerup proxy`: a and b initialised on
 * `relay`, b authorizing a, offering `ssh` (sshd on b's port 22) and running its daemon; a knows b
 * by the name `b` and runs no daemon.
 */
export async function startSshTarget(
  lab: Lab,
  relay: LabRelay,
): Promise<{ a: PeerupHost; b: PeerupHost; daemonB: LabProcess; sshd: Sshd }> {
  const na = await initLabNode(lab, 'a', relay)
  const nb = await initLabNode(lab, 'b', relay)
  addNames(na.node, { b: nb.peerId })
  await nb.node.peerup(['auth', 'add', na.peerId, '--comment', 'a', '--config', nb.node.config])
  await nb.node.peerup(['service', 'add', 'ssh', '127.0.0.1:22', '--config', nb.node.config])
  const daemonB = nb.node.spawn(['daemon', '--config', nb.node.config, '--log-level', 'info'], 'daemon-b')
  const sshd = await startSshd(nb.node.host, { port: 22 })
  return { a: na.node, b: nb.node, daemonB, sshd }
}
