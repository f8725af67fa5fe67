/**
 * Runs peerup command lines in-process with captured output and a private environment.
 */

import * as fs from 'node:fs/promises'
import * as os from 'node:os'
import * as path from 'node:path'
import { PassThrough, Writable } from 'node:stream'
import type { CliContext } from '../../src/cli/context.ts'
import { readEnv } from '../../src/env.ts'
import { run } from '../../src/main.ts'

/** What a command printed and how it exited. */
export interface CliResult {
  code: number
  stdout: string
  stderr: string
}

class Capture extends Writable {
  text = ''
  readonly #waiters: Array<{ re: RegExp; resolve: (m: RegExpMatchArray) => void }> = []
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.text += chunk.toString()
    for (const w of [...this.#waiters]) {
      const m = this.text.match(w.re)
      if (m !== null) {
        this.#waiters.splice(this.#waiters.indexOf(w), 1)
        w.resolve(m)
      }
    }
    cb()
  }
  /** Resolves with the first match of `re` in what was written, now or when it comes. */
  seen(re: RegExp): Promise<RegExpMatchArray> {
    const m = this.text.match(re)
    return m === null ? new Promise((resolve) => this.#waiters.push({ re, resolve })) : Promise.resolve(m)
  }
}

/** A command started with {@link startCli}: its output as it comes, and its end. */
export interface RunningCli {
  /** The first match of `re` on stdout or stderr, once it is there. */
  stdout: (re: RegExp) => Promise<RegExpMatchArray>
  stderr: (re: RegExp) => Promise<RegExpMatchArray>
  /** Stops it like Ctrl+C. */
  stop(): void
  done: Promise<CliResult>
}

/** Starts `peerup <args>` in this process (a long-running command: proxy, daemon) and returns at once. */
export function startCli(args: string[], home: string, options: RunOptions = {}): RunningCli {
  const controller = new AbortController()
  const signal =
    options.signal === undefined ? controller.signal : AbortSignal.any([options.signal, controller.signal])
  const stdout = new Capture()
  const stderr = new Capture()
  const stdin = new PassThrough()
  stdin.end(options.stdin ?? '')
  const ctx: CliContext = {
    programName: options.programName ?? 'peerup',
    stdout,
    stderr,
    stdin,
    env: readEnv({ HOME: home, ...options.env }),
    cwd: options.cwd ?? home,
    signal,
  }
  const done = run(args, ctx).then((code) => ({ code, stdout: stdout.text, stderr: stderr.text }))
  return {
    stdout: (re) => stdout.seen(re),
    stderr: (re) => stderr.seen(re),
    stop: () => controller.abort(),
    done,
  }
}

/** Options for {@link runCli}. */
export interface RunOptions {
  /** Extra environment variables (on top of an empty environment with HOME set). */
  env?: Record<string, string>
  cwd?: string
  programName?: string
  stdin?: string
  /** Stops long-running commands (daemon, proxy) when aborted, like Ctrl+C. */
  signal?: AbortSignal
  /** Pretend stdin is a terminal, so interactive prompts are shown. */
  tty?: boolean
}

/** A scratch directory removed after the test. */
export async function tempDir(
  t: { after: (fn: () => Promise<void>) => void },
  prefix = 'peerup-test-',
): Promise<string> {
  const dir = await fs.realpath(await fs.mkdtemp(path.join(os.tmpdir(), prefix)))
  t.after(() => fs.rm(dir, { recursive: true, force: true }))
  return dir
}

/** Runs `args` like `peerup <args>` and captures the result. */
export async function runCli(args: string[], home: string, options: RunOptions = {}): Promise<CliResult> {
  const stdout = new Capture()
  const stderr = new Capture()
  const stdin = new PassThrough()
  stdin.end(options.stdin ?? '')
  if (options.tty === true) {
    Object.assign(stdin, { isTTY: true })
  }
  const ctx: CliContext = {
    programName: options.programName ?? 'peerup',
    stdout,
    stderr,
    stdin,
    env: readEnv({ HOME: home, ...options.env }),
    cwd: options.cwd ?? home,
    signal: options.signal ?? new AbortController().signal,
  }
  const code = await run(args, ctx)
  return { code, stdout: stdout.text, stderr: stderr.text }
}

/** A relay address with a real peer id, on the test-only 198.18.0.0/15 range. */
export const RELAY_ADDR = '/ip4/198.18.0.1/tcp/7777/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN'

/** Initialises a node in `<root>/node` and returns its config path. */
export async function initNodeDir(root: string, extra: string[] = []): Promise<string> {
  const dir = path.join(root, 'node')
  const r = await runCli(['init', '--non-interactive', '--dir', dir, '--relay', RELAY_ADDR, ...extra], root)
  if (r.code !== 0) {
    throw new Error(`init failed: ${r.stderr}`)
  }
  return path.join(dir, 'config.yaml')
}
