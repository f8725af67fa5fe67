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
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.text += chunk.toString()
    cb()
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
