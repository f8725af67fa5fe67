/**
 * `peerup demo`: the whole mesh on loopback in a temporary directory, run with the real commands
 * as separate processes — `peerup relay serve`, `peerup daemon` on a "home" machine offering a
 * small TCP service, `peerup proxy` and `peerup ping` on a "laptop" — printing each step and the
 * path used, then stopping everything and removing the directory.
 *
 * @packageDocumentation
 */

import { type ChildProcessByStdio, spawn } from 'node:child_process'
import * as fs from 'node:fs/promises'
import * as net from 'node:net'
import * as os from 'node:os'
import * as path from 'node:path'
import { createInterface } from 'node:readline'
import type { Readable } from 'node:stream'
import { editConfigFile } from '../config/edit.ts'
import { nodeConfigSchema, relayConfigSchema } from '../config/schema.ts'
import { PeerupError } from '../errors.ts'
import { selfCommand } from '../util/self.ts'

/** How long one step of the demo may take before it is reported as failed. */
const STEP_TIMEOUT_MS = 30_000

/** The demo failed: a command exited with an error or did not get ready in time. */
export class DemoError extends PeerupError {
  override name = 'DemoError'
}

/** A peerup child process and the log lines it wrote. */
interface Child {
  proc: ChildProcessByStdio<null, Readable, Readable>
  label: string
  /** The demo's: aborted when it is stopped. */
  signal: AbortSignal | undefined
  /** The last lines of its stderr, for an error message. */
  tail: string[]
  exited: Promise<number | null>
}

export interface DemoOptions {
  signal?: AbortSignal
  /** How to run peerup (argv prefix); default: this same executable or dev entry. */
  peerup?: string[]
}

/** Runs the demo, writing its narration with `say`. */
export async function runDemo(say: (line: string) => void, options: DemoOptions = {}): Promise<void> {
  const demo = new Demo(await fs.mkdtemp(path.join(os.tmpdir(), 'peerup-demo-')), say, options)
  try {
    say(`peerup demo — everything lives in ${demo.root} and on 127.0.0.1, and is removed at the end.`)
    say(
      `Each step runs the real command (${demo.self.map((a) => path.basename(a)).join(' ')}) as its own process.\n`,
    )
    const relay = await startRelay(demo)
    const { home, laptop } = await initMachines(demo, relay.address)
    await trustEachOther(demo, relay.configFile, home, laptop)
    await serveHome(demo, home)
    await reachHome(demo, laptop)
    say('Done. On real machines: docs/relay-vps.md — `peerup ssh home` once home runs sshd and offers ssh.')
  } finally {
    await demo.close()
  }
}

/** A machine of the demo, as `peerup init --json` describes it. */
interface Machine {
  peerId: string
  configFile: string
}

/**
 * The demo's processes and files: `peerup` runs to completion or in the background, with
 * PEERUP_HOME in the demo's directory; {@link Demo.close} stops what still runs (the most recent
 * first), then what else was started, and removes the directory.
 */
class Demo {
  readonly root: string
  readonly self: string[]
  /** Writes a line of the narration. */
  readonly say: (line: string) => void
  /** Aborts the demo's waits and commands (the CLI's SIGINT). */
  readonly signal: AbortSignal | undefined
  readonly #env: NodeJS.ProcessEnv
  readonly #children: Child[] = []
  readonly #stops: Array<() => Promise<unknown>> = []

  constructor(root: string, say: (line: string) => void, options: DemoOptions) {
    this.root = root
    this.self = options.peerup ?? selfCommand()
    this.say = say
    this.signal = options.signal
    this.#env = { ...process.env, PEERUP_HOME: root }
    delete this.#env.PEERUP_DEBUG
  }

  #spawn(args: string[], signal?: AbortSignal): ChildProcessByStdio<null, Readable, Readable> {
    return spawn(this.self[0] as string, [...this.self.slice(1), ...args], {
      env: this.#env,
      stdio: ['ignore', 'pipe', 'pipe'],
      signal,
    })
  }

  /** Runs `peerup args…` to completion; its stdout, or a DemoError with its stderr. */
  peerup(args: string[]): Promise<string> {
    return new Promise((resolve, reject) => {
      const proc = this.#spawn(args, this.signal)
      let out = ''
      let err = ''
      proc.stdout.setEncoding('utf8').on('data', (d: string) => {
        out += d
      })
      proc.stderr.setEncoding('utf8').on('data', (d: string) => {
        err += d
      })
      proc.once('error', reject)
      proc.once('close', (code) =>
        code === 0
          ? resolve(out)
          : reject(new DemoError(`\`peerup ${args.join(' ')}\` failed: ${lastLine(err) ?? `exit ${code}`}`)),
      )
    })
  }

  /** Runs `peerup args… --json` to completion; what it printed, parsed. */
  async json<T>(args: string[]): Promise<T> {
    return JSON.parse(await this.peerup([...args, '--json'])) as T
  }

  /** Starts a long-running `peerup args…`; it is stopped (SIGTERM) when the demo ends. */
  start(label: string, args: string[]): Child {
    const proc = this.#spawn(args)
    const child: Child = {
      proc,
      label,
      signal: this.signal,
      tail: [],
      exited: new Promise((resolve) => proc.once('exit', (code) => resolve(code))),
    }
    proc.once('error', () => {})
    createInterface({ input: proc.stderr }).on('line', (line) => {
      child.tail.push(line)
      child.tail.splice(0, child.tail.length - 20)
    })
    this.#children.unshift(child)
    return child
  }

  /** Runs `stop` when the demo ends, after the processes stopped. */
  onClose(stop: () => Promise<unknown>): void {
    this.#stops.unshift(stop)
  }

  /** Stops every process, then the rest, and removes the directory. */
  async close(): Promise<void> {
    for (const child of this.#children) {
      await stopChild(child)
    }
    for (const stop of this.#stops) {
      await stop().catch(() => {})
    }
    await fs.rm(this.root, { recursive: true, force: true })
  }
}

/** Step 1: a relay, on loopback only; returns its config file and loopback address. */
async function startRelay(demo: Demo): Promise<{ configFile: string; address: string }> {
  const { say } = demo
  say('1. A relay (on a real network: a small VPS you run).')
  say('   $ peerup relay setup && peerup relay serve')
  const dir = path.join(demo.root, 'relay')
  const setup = await demo.json<Machine>(['relay', 'setup', '--dir', dir, '--non-interactive'])
  await editConfigFile(setup.configFile, relayConfigSchema, (doc) => {
    // Loopback only, any free port; STUN and /healthz are not needed here.
    doc.setIn(['network', 'listen_addresses'], doc.createNode(['/ip4/127.0.0.1/tcp/0']))
    doc.setIn(['stun', 'enabled'], false)
    doc.setIn(['health', 'enabled'], false)
    // The splice port on loopback, any free port (7778 may be taken by a relay on this machine).
    doc.setIn(['splice', 'listen_address'], '127.0.0.1:0')
  })
  const serving = demo.start('relay', ['relay', 'serve', '--config', setup.configFile, '--log-level', 'info'])
  const started = await logLine(serving, (l) => l.msg === 'relay started')
  const address = String(started.addresses ?? '')
    .split(' ')
    .find((a) => a.startsWith('/ip4/127.0.0.1/'))
  if (address === undefined) {
    throw new DemoError(`the relay announced no loopback address: ${String(started.addresses)}`)
  }
  say(`   relay ${short(setup.peerId)} listening at ${address}\n`)
  return { configFile: setup.configFile, address }
}

/** Step 2: "home" and "laptop", each reachable only through the relay, as behind NAT. */
async function initMachines(demo: Demo, relayAddr: string): Promise<{ home: Machine; laptop: Machine }> {
  const { say } = demo
  say('2. Two machines: "home" (behind NAT, offers a service) and "laptop".')
  say('   $ peerup init --relay <relay address>')
  const init = async (name: string): Promise<Machine> => {
    const dir = path.join(demo.root, name)
    const r = await demo.json<Machine>(['init', '--non-interactive', '--relay', relayAddr, '--dir', dir])
    // Like a machine behind NAT: no listening port anyone could dial, only the relay reservation.
    await editConfigFile(r.configFile, nodeConfigSchema, (doc) => {
      doc.setIn(['network', 'listen_addresses'], doc.createNode([]))
    })
    return r
  }
  const home = await init('home')
  const laptop = await init('laptop')
  say(`   home   ${home.peerId}`)
  say(`   laptop ${laptop.peerId}\n`)
  return { home, laptop }
}

/** Step 3: the relay serves both; home and laptop know each other by name. */
async function trustEachOther(
  demo: Demo,
  relayConfig: string,
  home: Machine,
  laptop: Machine,
): Promise<void> {
  const { say } = demo
  say('3. Trust: the relay serves both, home and laptop know each other by name.')
  say('   $ peerup relay authorize <id>            (on the relay, for each)')
  say('   $ peerup auth add <id> --name <name>     (on home, and on laptop)')
  await demo.peerup(['relay', 'authorize', home.peerId, '--comment', 'home', '--config', relayConfig])
  await demo.peerup(['relay', 'authorize', laptop.peerId, '--comment', 'laptop', '--config', relayConfig])
  await demo.peerup(['auth', 'add', laptop.peerId, '--name', 'laptop', '--config', home.configFile])
  await demo.peerup(['auth', 'add', home.peerId, '--name', 'home', '--config', laptop.configFile])
  say('   anyone else is refused by home and cannot hold a reservation on the relay\n')
}

/** Step 4: home offers a small TCP service and runs its daemon, which holds a reservation. */
async function serveHome(demo: Demo, home: Machine): Promise<void> {
  const { say } = demo
  say('4. home offers a local TCP service and runs its daemon.')
  const service = await startGreeter()
  demo.onClose(() => service.close())
  say(`   $ peerup service add greet 127.0.0.1:${service.port} && peerup daemon`)
  await demo.peerup(['service', 'add', 'greet', `127.0.0.1:${service.port}`, '--config', home.configFile])
  const daemon = demo.start('home daemon', ['daemon', '--config', home.configFile, '--log-level', 'info'])
  await logLine(daemon, (l) => l.msg === 'reservation held')
  say(
    `   home holds a reservation on the relay: reachable at <relay>/p2p-circuit/p2p/${short(home.peerId)}\n`,
  )
}

/** Steps 5 and 6: laptop forwards a local port to home's service, then pings home. */
async function reachHome(demo: Demo, laptop: Machine): Promise<void> {
  const { say } = demo
  const config = ['--config', laptop.configFile]
  say("5. laptop forwards a local port to home's service.")
  say('   $ peerup proxy home greet 127.0.0.1:0')
  const proxy = demo.start('laptop proxy', ['proxy', 'home', 'greet', '127.0.0.1:0', '--json', ...config])
  // It listens at once, then says on stderr whether home answers and by which path.
  const [forwarding, path] = await Promise.all([
    firstStdoutJson(proxy),
    awaitLine(proxy, proxy.proc.stderr, (line) => {
      const m = /^home answers: (\w+)(?: via (\S+))?/.exec(line)
      return m === null ? undefined : `${m[1]}${m[2] === undefined ? '' : ` via ${m[2]}`}`
    }),
  ])
  const listen = String(forwarding.listen)
  say(`   listening on ${listen}, path ${path}`)
  const port = Number(listen.split(':').pop())
  const reply = await talk(port, 'hello from laptop')
  say(`   sent "hello from laptop"; home's service answered: "${reply}"\n`)

  say('6. laptop pings home.')
  say('   $ peerup ping home -c 3 --interval 200ms')
  const pinged = await demo.peerup(['ping', 'home', '-c', '3', '--interval', '200ms', ...config])
  for (const line of pinged.trimEnd().split('\n')) {
    say(`   ${line}`)
  }
  say('')
}

/** Stops a child with SIGTERM (its orderly shutdown), then SIGKILL if it hangs. */
async function stopChild(child: Child): Promise<void> {
  if (child.proc.exitCode !== null || child.proc.signalCode !== null) {
    return
  }
  child.proc.kill('SIGTERM')
  const timer = setTimeout(() => child.proc.kill('SIGKILL'), 5_000)
  await child.exited
  clearTimeout(timer)
}

/** Resolves with the first JSON log line of `child` for which `match` holds. */
function logLine(
  child: Child,
  match: (line: Record<string, unknown>) => boolean,
): Promise<Record<string, unknown>> {
  return awaitLine(child, child.proc.stderr, (text) => {
    try {
      const parsed = JSON.parse(text) as Record<string, unknown>
      return match(parsed) ? parsed : undefined
    } catch {
      return undefined
    }
  })
}

/** Resolves with the first JSON document `child` writes to stdout (`--json` output is indented). */
function firstStdoutJson(child: Child): Promise<Record<string, unknown>> {
  let text = ''
  return awaitLine(child, child.proc.stdout, (line) => {
    text += `${line}\n`
    try {
      return JSON.parse(text) as Record<string, unknown>
    } catch {
      return undefined
    }
  })
}

/**
 * Resolves with the first value `pick` finds in the lines of `input`; fails when `child` exits, the
 * step times out or the demo is stopped.
 */
function awaitLine<T>(child: Child, input: Readable, pick: (line: string) => T | undefined): Promise<T> {
  const { signal } = child
  return new Promise((resolve, reject) => {
    const rl = createInterface({ input })
    const timeout = AbortSignal.timeout(STEP_TIMEOUT_MS)
    const done = (): void => {
      rl.close()
      timeout.removeEventListener('abort', onTimeout)
      signal?.removeEventListener('abort', onAbort)
      child.proc.off('exit', onExit)
    }
    const onTimeout = (): void => {
      done()
      reject(new DemoError(`${child.label} was not ready after ${STEP_TIMEOUT_MS / 1000} s${why(child)}`))
    }
    const onAbort = (): void => {
      done()
      reject(signal?.reason)
    }
    const onExit = (code: number | null): void => {
      done()
      reject(new DemoError(`${child.label} exited (${code ?? 'signal'})${why(child)}`))
    }
    rl.on('line', (line) => {
      const value = pick(line)
      if (value !== undefined) {
        done()
        resolve(value)
      }
    })
    timeout.addEventListener('abort', onTimeout)
    signal?.addEventListener('abort', onAbort)
    child.proc.once('exit', onExit)
  })
}

/** The last error a child logged, for a one-line message. */
function why(child: Child): string {
  for (const line of [...child.tail].reverse()) {
    try {
      const parsed = JSON.parse(line) as { level?: string; msg?: string; error?: string }
      if (parsed.level === 'error' || parsed.level === 'warn') {
        return `: ${parsed.msg}${parsed.error === undefined ? '' : ` (${parsed.error})`}`
      }
    } catch {
      if (line.trim() !== '') {
        return `: ${line.trim()}`
      }
    }
  }
  return ''
}

function lastLine(text: string): string | undefined {
  return text
    .trim()
    .split('\n')
    .at(-1)
    ?.replace(/^peerup: /, '')
}

function short(id: string): string {
  return `${id.slice(0, 12)}…`
}

/** A service that answers the first line of each connection with a greeting that proves who answered. */
async function startGreeter(): Promise<{ port: number; close(): Promise<void> }> {
  const server = net.createServer((socket) => {
    socket.setEncoding('utf8')
    socket.on('error', () => {})
    socket.once('data', (line: string) => socket.end(`home got "${line.trim()}"\n`))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  }
}

function talk(port: number, message: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1' })
    let reply = ''
    socket.setEncoding('utf8')
    socket.setTimeout(STEP_TIMEOUT_MS, () => socket.destroy(new DemoError('no answer through the proxy')))
    socket.on('data', (d: string) => {
      reply += d
    })
    socket.once('error', reject)
    socket.once('connect', () => socket.write(`${message}\n`))
    socket.once('end', () => resolve(reply.trim()))
  })
}
