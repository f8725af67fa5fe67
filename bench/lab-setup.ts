/**
 * The benchmark lab: the NAT lab of test/e2e (network namespaces, iptables MASQUERADE) with, on the
 * same hops, every path the benchmark compares.
 *
 * ```
 *   relay 198.18.0.1   peerup relay (tcp 7777, STUN), sshd :22, raw forwarders :6201 → router-b:5201
 *                      and :6222 → router-b:2022; `ssh -R` from b lands on its loopback :6202/:6203
 *   relay2 198.18.0.4  a second peerup relay with raised limits, for the capacity test only
 *   router-a (cone)    a  100.64.1.2  direct client: daemon (direct: a TCP punch); `ssh -L` to router-b:2022
 *                      a2 100.64.1.3  relayed client: daemon without WebRTC (stays on the relay);
 *                                     `ssh -L` to the relay's :6202/:6203 (the reverse tunnel);
 *                                     a second daemon (a2-plain) like it but with PEERUP_SESSIONS=off:
 *                                     plain streams, the baseline of what resumable sessions cost
 *   router-b (cone)    b  100.64.2.2  target: daemon offering `bench` (servers.ts :5201) and `ssh` (:22);
 *                      DNAT on router-b: tcp 5201 → b:5201 and 2022 → b:22, only for the baselines
 * ```
 *
 * A raw TCP path between a and b does not exist across the NATs, which is the point: the baselines
 * use a port forwarded by router-b (the direct path's hops: a → router-a → router-b → b) and a plain
 * forwarder on the relay host (the relayed path's hops: a2 → router-a → relay → router-b → b).
 *
 * @packageDocumentation
 */

import { execFileSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import YAML from 'yaml'
import { createLab, type Lab, type LabHost, type LabProcess, labSupport } from '../test/e2e/lab.ts'
import { type Sshd, startSshd } from '../test/e2e/sshd.ts'

/** The repository root. */
export const ROOT = path.resolve(import.meta.dirname, '..')
/** The built single executable. */
export const EXE = path.join(ROOT, 'dist', 'peerup')
/** The benchmark's helper scripts, run with the harness's Node inside the namespaces. */
export const SERVERS = path.join(import.meta.dirname, 'servers.ts')
export const CLIENT = path.join(import.meta.dirname, 'client.ts')
export const LOADGEN = path.join(import.meta.dirname, 'loadgen.ts')
export const MEMPROBE = path.join(import.meta.dirname, 'memprobe.cjs')

/** The environment that preloads bench/memprobe.cjs, writing memory figures to `file`. */
export function memprobeEnv(file: string): Record<string, string> {
  return { NODE_OPTIONS: `--require ${MEMPROBE}`, PEERUP_BENCH_MEMFILE: file }
}

/** What bench/memprobe.cjs last wrote, in MB; undefined when it has not written. */
export function readMemprobe(
  file: string,
): { heapUsed: number; heapTotal: number; external: number; arrayBuffers: number; rss: number } | undefined {
  try {
    const m = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, number>
    const mb = (k: string) => (m[k] ?? Number.NaN) / 1e6
    return {
      heapUsed: mb('heapUsed'),
      heapTotal: mb('heapTotal'),
      external: mb('external'),
      arrayBuffers: mb('arrayBuffers'),
      rss: mb('rss'),
    }
  } catch {
    return undefined
  }
}

/** Ports of the lab's services. */
export const PORTS = {
  relay: 7777,
  bench: 5201,
  dnatBench: 5201,
  dnatSsh: 2022,
  rawRelayBench: 6201,
  rawRelaySsh: 6222,
  reverseBench: 6202,
  reverseSsh: 6203,
  sshLDirect: 7201,
  sshLRelayBench: 7202,
  sshLRelaySsh: 7203,
  proxyDirect: 8201,
  connectDirect: 8211,
  proxyRelayed: 8202,
  connectRelayed: 8212,
  proxyRelayedNoDaemon: 8222,
  proxySshRelayed: 8203,
  proxySshRelayedNoDaemon: 8204,
  proxyRelayedPlain: 8205,
  proxyDirectWebrtc: 8206,
  /** The SOCKS5 gateway of a's and a2's daemons (bench/measure/socks.ts). */
  socks: 1080,
  capacityRelay: 7777,
} as const

/** How the bench's paths are reached: a host and the address its client connects to. */
export interface Endpoint {
  id: string
  label: string
  path: 'direct' | 'relayed'
  kind: 'peerup' | 'ssh' | 'raw'
  host: LabHost
  ip: string
  port: number
}

/** Builds dist/peerup when it is missing or older than the sources; returns why it did, if it did. */
export function ensureBuilt(force: boolean): string | undefined {
  const why = force ? 'asked to' : staleReason()
  if (why !== undefined) {
    execFileSync(process.execPath, [path.join(ROOT, 'build.mjs')], { cwd: ROOT, stdio: 'inherit' })
  }
  return why
}

function staleReason(): string | undefined {
  if (!fs.existsSync(EXE)) {
    return 'dist/peerup is missing'
  }
  const built = fs.statSync(EXE).mtimeMs
  const newer = (p: string): boolean => {
    const st = fs.statSync(p)
    if (st.isDirectory()) {
      return fs.readdirSync(p).some((e) => newer(path.join(p, e)))
    }
    return st.mtimeMs > built
  }
  for (const p of ['src', 'bin', 'build.mjs', 'package-lock.json', 'patches']) {
    const full = path.join(ROOT, p)
    if (fs.existsSync(full) && newer(full)) {
      return `${p} changed after dist/peerup was built`
    }
  }
  return undefined
}

/** One machine running peerup: its own HOME and config dir, and the run's copy of the executable. */
export class PeerupNode {
  readonly host: LabHost
  /** The host's name, or another for a second node on the same host. */
  readonly name: string
  readonly dir: string
  readonly exe: string
  readonly env: Record<string, string>
  peerId = ''

  constructor(host: LabHost, lab: Lab, exe: string, name = host.name) {
    this.host = host
    this.name = name
    this.dir = path.join(lab.tmpDir, `peerup-${name}`)
    this.exe = exe
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 })
    this.env = {
      HOME: this.dir,
      PEERUP_CACHE_DIR: path.join(lab.tmpDir, 'cache'),
      PATH: '/usr/sbin:/usr/bin:/sbin:/bin',
    }
  }

  get config(): string {
    return path.join(this.dir, 'node', 'config.yaml')
  }

  /** Runs peerup to completion; throws unless it exits 0. */
  async peerup(args: string[], timeoutMs = 60_000): Promise<string> {
    const r = await this.host.run(this.exe, args, { env: this.env, timeoutMs })
    if (r.code !== 0) {
      throw new Error(`${this.host.name}: peerup ${args.join(' ')} exited ${r.code}: ${r.stderr}`)
    }
    return r.stdout
  }

  spawn(args: string[], label: string, extraEnv: Record<string, string> = {}): LabProcess {
    return this.host.spawn(this.exe, args, { env: { ...this.env, ...extraEnv }, label })
  }
}

/** Edits a YAML file in place, keeping its comments. */
export function editYaml(file: string, edit: (doc: YAML.Document) => void): void {
  const doc = YAML.parseDocument(fs.readFileSync(file, 'utf8'))
  edit(doc)
  fs.writeFileSync(file, doc.toString())
}

/** A peerup relay on a lab host. */
export interface BenchRelay {
  node: PeerupNode
  config: string
  peerId: string
  address: string
  process: LabProcess
  /** Where bench/memprobe.cjs in the relay writes its memory figures. */
  memFile: string
  /** (Re)starts `relay serve`, optionally with extra environment (NODE_OPTIONS for a profile). */
  start(env?: Record<string, string>): Promise<void>
}

async function setupRelay(
  lab: Lab,
  hostName: string,
  exe: string,
  authorize: string[],
  edit: (doc: YAML.Document) => void,
): Promise<BenchRelay> {
  const node = new PeerupNode(lab.host(hostName), lab, exe)
  await node.peerup(['relay', 'setup', '--dir', path.join(node.dir, 'relay')])
  const config = path.join(node.dir, 'relay', 'relay-server.yaml')
  editYaml(config, edit)
  // Writing the file directly: `relay authorize` once per peer would take a process start each.
  fs.appendFileSync(
    path.join(node.dir, 'relay', 'relay_authorized_keys'),
    authorize.map((id) => `${id} # bench\n`).join(''),
  )
  const info = JSON.parse(await node.peerup(['relay', 'info', '--json', '--config', config]))
  const relay: BenchRelay = {
    node,
    config,
    peerId: info.peerId,
    address: `/ip4/${node.host.ip}/tcp/${PORTS.relay}/p2p/${info.peerId}`,
    process: undefined as unknown as LabProcess,
    memFile: path.join(node.dir, 'mem.json'),
    async start(env = {}) {
      relay.process = node.spawn(['relay', 'serve', '--config', config], `relay:${hostName}`, {
        ...memprobeEnv(path.join(node.dir, 'mem.json')),
        ...env,
      })
      await node.host.waitForPort(PORTS.relay, { ip: node.host.ip, timeoutMs: 20_000 })
    },
  }
  return relay
}

/** Options of {@link createBenchLab}. */
export interface BenchLabOptions {
  /** The executable to run (a copy of dist/peerup taken at the start of the run). */
  exe: string
  /** Peer ids the capacity relay must accept (the load generators' identities). */
  capacityPeers: string[]
  log: (msg: string) => void
}

/** Everything the measurements use. */
export interface BenchLab {
  lab: Lab
  relay: BenchRelay
  capacityRelay: BenchRelay
  a: PeerupNode
  a2: PeerupNode
  /** A second node on a2, its daemon run with PEERUP_SESSIONS=off: plain streams, no sessions. */
  a2plain: PeerupNode
  b: PeerupNode
  daemons: { a: LabProcess; a2: LabProcess; a2plain: LabProcess; b: LabProcess }
  proxies: Record<string, LabProcess>
  /** The OpenSSH tunnels, by label: ssh-L-direct, ssh-R-b, ssh-L-a2. */
  tunnels: Record<string, LabProcess>
  sshdB: Sshd
  sshdRelay: Sshd
  /** Throughput and latency paths, by id. */
  endpoints: Endpoint[]
  /** Whether a's connection to b went DIRECT (a TCP punch, else WebRTC; otherwise direct rows are skipped). */
  direct: { ok: boolean; detail: string }
  /** The OpenSSH cipher and key exchange the tunnels negotiated (OpenSSH defaults). */
  sshCipher: string
  /** Bytes seen on the relay's libp2p port so far (iptables counters, in and out). */
  relayBytes(): Promise<number>
  /** Restarts a node's daemon (with extra environment, for a profile) and waits until it is ready. */
  restartDaemon(name: DaemonName, env?: Record<string, string>): Promise<LabProcess>
  /** Starts `peerup proxy` on a node and waits for its listener. */
  startProxy(
    node: PeerupNode,
    args: string[],
    port: number,
    label: string,
    env?: Record<string, string>,
  ): Promise<LabProcess>
}

/** The daemons of the lab. */
export type DaemonName = 'a' | 'a2' | 'a2plain' | 'b'

/** The environment of a2plain's daemon: plain service streams instead of resumable sessions. */
const PLAIN_ENV = { PEERUP_SESSIONS: 'off' }

/** Whether the namespace lab can be built here, and why not. */
export async function benchLabSupport(): Promise<{ ok: boolean; reason?: string }> {
  const s = await labSupport()
  if (!s.ok) {
    return { ok: false, reason: s.reason }
  }
  // The recovery measurement makes a router forget its connections (`conntrack -F`).
  try {
    execFileSync('conntrack', ['--version'], {
      stdio: 'ignore',
      env: { ...process.env, PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin` },
    })
  } catch {
    return { ok: false, reason: 'conntrack is missing (Debian package conntrack)' }
  }
  return { ok: true }
}

/** Builds the lab and starts everything in it. Close `lab` to stop it all. */
export async function createBenchLab(options: BenchLabOptions): Promise<BenchLab> {
  const { exe, log } = options
  const lab = await createLab({ nat: 'cone', lanPeers: 1, relays: 2, name: 'bench' })
  try {
    return await populate(lab, options, exe, log)
  } catch (err) {
    const logs = lab.dumpLogs()
    await lab.close()
    throw new Error(`setting up the bench lab failed: ${(err as Error).message}\n${logs.slice(-20_000)}`, {
      cause: err,
    })
  }
}

async function populate(
  lab: Lab,
  options: BenchLabOptions,
  exeSource: string,
  log: (msg: string) => void,
): Promise<BenchLab> {
  // One copy of the executable for the whole run: others may rebuild dist/ meanwhile.
  const exe = path.join(lab.tmpDir, 'peerup')
  fs.copyFileSync(exeSource, exe)
  fs.chmodSync(exe, 0o755)
  const relayHost = lab.host('relay')
  const routerB = lab.host('router-b')

  const a = new PeerupNode(lab.host('a'), lab, exe)
  const a2 = new PeerupNode(lab.host('a2'), lab, exe)
  const a2plain = new PeerupNode(lab.host('a2'), lab, exe, 'a2plain')
  // a2 stays on the relay: nothing run on it punches TCP to b (src/env.ts) — its daemons, its
  // `proxy --no-daemon`, its one-off commands.
  for (const n of [a2, a2plain]) {
    n.env.PEERUP_PUNCH = 'off'
  }
  const b = new PeerupNode(lab.host('b'), lab, exe)

  // Nodes first, so their ids can go into relay_authorized_keys before the relay starts.
  const relay = await setupRelay(lab, 'relay', exe, [], (doc) => {
    doc.setIn(['log', 'level'], 'warn')
  })
  for (const n of [a, a2, a2plain, b]) {
    await n.peerup(['init', '--non-interactive', '--relay', relay.address, '--dir', path.join(n.dir, 'node')])
    n.peerId = (await n.peerup(['whoami', '--config', n.config])).trim()
  }
  fs.appendFileSync(
    path.join(relay.node.dir, 'relay', 'relay_authorized_keys'),
    [a, a2, a2plain, b].map((n) => `${n.peerId} # ${n.name}\n`).join(''),
  )
  const capacityRelay = await setupRelay(lab, 'relay2', exe, options.capacityPeers, (doc) => {
    // Raised so that the load generators, a few processes on two hosts behind NAT, are limited by
    // what the relay can do, not by its per-IP fairness limits; STUN and health are not needed.
    doc.setIn(['resources', 'max_reservations'], 100_000)
    doc.setIn(['resources', 'max_reservations_per_ip'], 100_000)
    doc.setIn(['resources', 'max_circuits'], 100_000)
    doc.setIn(['stun', 'enabled'], false)
    doc.setIn(['telemetry', 'metrics', 'enabled'], true)
    doc.setIn(['log', 'level'], 'warn')
  })
  log('relays set up; starting them')
  await Promise.all([relay.start(), capacityRelay.start()])

  // Byte counters on the relay's libp2p port: proof that a direct transfer did not cross it.
  const ipt = (host: LabHost, ...args: string[]) => host.mustRun(lab.iptables, ['-w', ...args])
  await ipt(relayHost, '-A', 'INPUT', '-p', 'tcp', '--dport', String(PORTS.relay))
  await ipt(relayHost, '-A', 'OUTPUT', '-p', 'tcp', '--sport', String(PORTS.relay))
  const relayBytes = async (): Promise<number> => {
    let total = 0
    for (const chain of ['INPUT', 'OUTPUT']) {
      const out = (await ipt(relayHost, '-n', '-v', '-x', '-L', chain)).stdout
      for (const line of out.split('\n')) {
        if (new RegExp(`[sd]pt:${PORTS.relay}\\b`).test(line)) {
          total += Number(line.trim().split(/\s+/)[1])
        }
      }
    }
    return total
  }

  // The baselines' way in to b: router-b forwards two ports, as a home router would for a server.
  for (const [from, to] of [
    [PORTS.dnatBench, PORTS.bench],
    [PORTS.dnatSsh, 22],
  ] as const) {
    await ipt(
      routerB,
      '-t',
      'nat',
      '-A',
      'PREROUTING',
      '-i',
      'wan',
      '-p',
      'tcp',
      '--dport',
      String(from),
      '-j',
      'DNAT',
      '--to-destination',
      `${b.host.ip}:${to}`,
    )
  }
  await ipt(
    routerB,
    '-I',
    'FORWARD',
    '1',
    '-i',
    'wan',
    '-m',
    'conntrack',
    '--ctstate',
    'DNAT',
    '-j',
    'ACCEPT',
  )

  // The target service and the raw forwarders.
  const server = b.host.spawn(lab.node, [SERVERS, 'serve', '0.0.0.0', String(PORTS.bench)], {
    label: 'bench-server',
  })
  await server.waitForOutput(/listening/, 10_000)
  for (const [port, to] of [
    [PORTS.rawRelayBench, PORTS.dnatBench],
    [PORTS.rawRelaySsh, PORTS.dnatSsh],
  ] as const) {
    const fwd = relayHost.spawn(
      lab.node,
      [SERVERS, 'forward', relayHost.ip, String(port), routerB.ip, String(to)],
      {
        label: `forward:${port}`,
      },
    )
    await fwd.waitForOutput(/listening/, 10_000)
  }

  // b offers the bench service and ssh to a and a2; a and a2 know b by name.
  await b.peerup(['service', 'add', 'bench', `127.0.0.1:${PORTS.bench}`, '--config', b.config])
  await b.peerup(['service', 'add', 'ssh', '127.0.0.1:22', '--config', b.config])
  for (const n of [a, a2, a2plain]) {
    await b.peerup(['auth', 'add', n.peerId, '--comment', n.name, '--config', b.config])
    editYaml(n.config, (doc) => {
      doc.setIn(['names'], doc.createNode({ b: b.peerId }))
    })
  }
  // a's and a2's daemons run the gateway (a2plain, on a2's host too, would take the same port).
  for (const n of [a, a2]) {
    editYaml(n.config, (doc) => {
      doc.setIn(
        ['socks'],
        doc.createNode({
          enabled: true,
          listen_address: `127.0.0.1:${PORTS.socks}`,
          http_listen_address: '',
        }),
      )
    })
  }
  // a2 stays on the relay: without /webrtc it neither offers nor dials a direct path, its LAN is
  // not b's, so the TCP upgrade finds nothing either, and it does not punch (PEERUP_PUNCH=off above).
  for (const n of [a2, a2plain]) {
    editYaml(n.config, (doc) => {
      doc.setIn(['network', 'listen_addresses'], doc.createNode(['/ip4/0.0.0.0/tcp/0']))
    })
  }

  const sshdB = await startSshd(b.host, { port: 22 })
  const sshdRelay = await startSshd(relayHost, { port: 22 })

  const daemons = {} as BenchLab['daemons']
  const nodes = { a, a2, a2plain, b }
  const restartDaemon = async (name: DaemonName, env: Record<string, string> = {}): Promise<LabProcess> => {
    await daemons[name]?.stop(10_000)
    const n = nodes[name]
    const proc = n.spawn(['daemon', '--config', n.config, '--log-level', 'info'], `daemon-${name}`, {
      ...memprobeEnv(path.join(n.dir, 'mem.json')),
      ...(name === 'a2plain' ? PLAIN_ENV : {}),
      ...env,
    })
    daemons[name] = proc
    await proc.waitForOutput(/"msg":"reservation held"/, 60_000)
    // Ready when its socket answers.
    await n.peerup(['daemon', 'status', '--config', n.config], 20_000)
    return proc
  }
  log('starting daemons on a, a2 (two: with sessions and with plain streams) and b')
  await Promise.all([restartDaemon('b'), restartDaemon('a'), restartDaemon('a2'), restartDaemon('a2plain')])

  // a → b must become DIRECT (a TCP punch through the cone NATs, docs/decisions/0007-direct-path-transport.md);
  // a2 → b stays RELAYED.
  const direct = { ok: false, detail: '' }
  const up = await a.host.run(
    a.exe,
    [
      'ping',
      'b',
      '--until-direct',
      '--interval',
      '500ms',
      '--deadline',
      '40s',
      '--json',
      '--config',
      a.config,
    ],
    { env: a.env, timeoutMs: 90_000 },
  )
  if (up.code === 0) {
    const report = JSON.parse(up.stdout)
    direct.ok = report.finalPath?.type === 'DIRECT'
    direct.detail = `a → b ${report.finalPath?.type} (${report.finalPath?.transport}) after ${report.upgrade?.timeToDirectMs} ms`
  } else {
    direct.detail = `a → b never went direct: ${up.stderr.trim()}`
  }
  log(direct.detail)
  const relayed = JSON.parse(await a2.peerup(['ping', 'b', '-c', '1', '--json', '--config', a2.config]))
  if (relayed.path?.type !== 'RELAYED') {
    throw new Error(`a2 → b should be RELAYED, is ${JSON.stringify(relayed.path)}`)
  }
  log(`a2 → b ${relayed.path.type} via ${relayed.path.relay}`)

  const proxies: Record<string, LabProcess> = {}
  const startProxy = async (
    node: PeerupNode,
    args: string[],
    port: number,
    label: string,
    env: Record<string, string> = {},
  ): Promise<LabProcess> => {
    const proc = node.spawn(['proxy', ...args, `127.0.0.1:${port}`, '--config', node.config], label, env)
    await proc.waitForOutput(new RegExp(`127\\.0\\.0\\.1:${port}`), 60_000)
    proxies[label] = proc
    return proc
  }
  const connect = async (node: PeerupNode, service: string, port: number): Promise<void> => {
    await node.peerup([
      'daemon',
      'connect',
      '--peer',
      'b',
      '--service',
      service,
      '--listen',
      `127.0.0.1:${port}`,
      '--config',
      node.config,
    ])
  }
  if (direct.ok) {
    await startProxy(a, ['b', 'bench'], PORTS.proxyDirect, 'proxy-direct')
    await connect(a, 'bench', PORTS.connectDirect)
  }
  // The fallback's figure: a node of its own on a with the punch off goes DIRECT over WebRTC.
  const webrtc = await startProxy(
    a,
    ['--no-daemon', '--log-level', 'info', 'b', 'bench'],
    PORTS.proxyDirectWebrtc,
    'proxy-direct-webrtc',
    { PEERUP_PUNCH: 'off' },
  )
    .then((p) => p.waitForOutput(/"msg":"direct path up".*"transport":"webrtc"/, 30_000))
    .then(
      () => true,
      (err: unknown) => {
        log(`a → b never went direct over WebRTC (punch off): ${(err as Error).message}`)
        return false
      },
    )
  await startProxy(a2, ['b', 'bench'], PORTS.proxyRelayed, 'proxy-relayed')
  await startProxy(a2plain, ['b', 'bench'], PORTS.proxyRelayedPlain, 'proxy-relayed-plain')
  await connect(a2, 'bench', PORTS.connectRelayed)
  await startProxy(a2, ['--no-daemon', 'b', 'bench'], PORTS.proxyRelayedNoDaemon, 'proxy-relayed-nodaemon')
  await startProxy(a2, ['b', 'ssh'], PORTS.proxySshRelayed, 'proxy-ssh-relayed')
  await startProxy(
    a2,
    ['--no-daemon', 'b', 'ssh'],
    PORTS.proxySshRelayedNoDaemon,
    'proxy-ssh-relayed-nodaemon',
  )

  // OpenSSH baselines, with OpenSSH's default ciphers: one `ssh -L` on the direct path's hops, and
  // the classic reverse tunnel through the relay host (`ssh -R` on b, `ssh -L` on a2).
  const tunnels: Record<string, LabProcess> = {}
  const tunnel = async (host: LabHost, args: string[], label: string, port: number, on: LabHost) => {
    const proc = host.spawn('ssh', ['-N', '-o', 'ExitOnForwardFailure=yes', ...args], { label })
    const deadline = Date.now() + 20_000
    while (!(await on.canConnect('127.0.0.1', port, 500))) {
      if (Date.now() > deadline || proc.exitCode !== null) {
        throw new Error(`${label} did not come up:\n${proc.output()}`)
      }
      await new Promise((r) => setTimeout(r, 100))
    }
    tunnels[label] = proc
    return proc
  }
  await tunnel(
    a.host,
    [
      ...sshdB.sshArgs('b', { port: PORTS.dnatSsh }),
      '-L',
      `127.0.0.1:${PORTS.sshLDirect}:127.0.0.1:${PORTS.bench}`,
      routerB.ip,
    ],
    'ssh-L-direct',
    PORTS.sshLDirect,
    a.host,
  )
  await tunnel(
    b.host,
    [
      ...sshdRelay.sshArgs('relay'),
      '-R',
      `127.0.0.1:${PORTS.reverseBench}:127.0.0.1:${PORTS.bench}`,
      '-R',
      `127.0.0.1:${PORTS.reverseSsh}:127.0.0.1:22`,
      relayHost.ip,
    ],
    'ssh-R-b',
    PORTS.reverseBench,
    relayHost,
  )
  await tunnel(
    a2.host,
    [
      ...sshdRelay.sshArgs('relay'),
      '-L',
      `127.0.0.1:${PORTS.sshLRelayBench}:127.0.0.1:${PORTS.reverseBench}`,
      '-L',
      `127.0.0.1:${PORTS.sshLRelaySsh}:127.0.0.1:${PORTS.reverseSsh}`,
      relayHost.ip,
    ],
    'ssh-L-a2',
    PORTS.sshLRelayBench,
    a2.host,
  )
  // What the tunnels negotiated, for the method section.
  const probe = await a2.host.run(
    'ssh',
    ['-o', 'LogLevel=DEBUG1', ...sshdRelay.sshArgs('relay'), relayHost.ip, 'true'],
    {
      timeoutMs: 20_000,
    },
  )
  const kex = /kex: algorithm: (\S+)/.exec(probe.stderr)?.[1] ?? '?'
  const cipher = /kex: server->client cipher: (\S+) MAC: (\S+)/.exec(probe.stderr)
  const sshCipher = `${cipher?.[1] ?? '?'} (MAC ${cipher?.[2] ?? '?'}), kex ${kex}`

  const endpoints: Endpoint[] = [
    {
      id: 'raw-direct',
      label: 'raw TCP (router-b port forward)',
      path: 'direct',
      kind: 'raw',
      host: a.host,
      ip: routerB.ip,
      port: PORTS.dnatBench,
    },
    {
      id: 'ssh-direct',
      label: 'ssh -L (one hop)',
      path: 'direct',
      kind: 'ssh',
      host: a.host,
      ip: '127.0.0.1',
      port: PORTS.sshLDirect,
    },
    ...(direct.ok
      ? [
          {
            id: 'peerup-direct',
            label: 'peerup proxy (via daemon)',
            path: 'direct',
            kind: 'peerup',
            host: a.host,
            ip: '127.0.0.1',
            port: PORTS.proxyDirect,
          } as const,
          {
            id: 'peerup-direct-connect',
            label: 'peerup daemon connect',
            path: 'direct',
            kind: 'peerup',
            host: a.host,
            ip: '127.0.0.1',
            port: PORTS.connectDirect,
          } as const,
        ]
      : []),
    ...(webrtc
      ? [
          {
            id: 'peerup-direct-webrtc',
            label: 'peerup proxy --no-daemon over WebRTC (punch off)',
            path: 'direct',
            kind: 'peerup',
            host: a.host,
            ip: '127.0.0.1',
            port: PORTS.proxyDirectWebrtc,
          } as const,
        ]
      : []),
    {
      id: 'raw-relayed',
      label: 'raw TCP (forwarder on the relay host)',
      path: 'relayed',
      kind: 'raw',
      host: a2.host,
      ip: relayHost.ip,
      port: PORTS.rawRelayBench,
    },
    {
      id: 'ssh-relayed',
      label: 'ssh -R + ssh -L via the relay host',
      path: 'relayed',
      kind: 'ssh',
      host: a2.host,
      ip: '127.0.0.1',
      port: PORTS.sshLRelayBench,
    },
    {
      id: 'peerup-relayed',
      label: 'peerup proxy (via daemon)',
      path: 'relayed',
      kind: 'peerup',
      host: a2.host,
      ip: '127.0.0.1',
      port: PORTS.proxyRelayed,
    },
    {
      id: 'peerup-relayed-connect',
      label: 'peerup daemon connect',
      path: 'relayed',
      kind: 'peerup',
      host: a2.host,
      ip: '127.0.0.1',
      port: PORTS.connectRelayed,
    },
    {
      id: 'peerup-relayed-nodaemon',
      label: 'peerup proxy --no-daemon',
      path: 'relayed',
      kind: 'peerup',
      host: a2.host,
      ip: '127.0.0.1',
      port: PORTS.proxyRelayedNoDaemon,
    },
  ]

  return {
    lab,
    relay,
    capacityRelay,
    a,
    a2,
    a2plain,
    b,
    daemons,
    proxies,
    tunnels,
    sshdB,
    sshdRelay,
    endpoints,
    direct,
    sshCipher,
    relayBytes,
    restartDaemon,
    startProxy,
  }
}
