/**
 * An ssh session that streams, for test/e2e/sessions.test.ts. Run with Node inside a lab host's
 * namespace: `node ssh-stream.ts '<json>'`, where the JSON is {@link StreamOptions}. It runs ssh
 * with `ssh` as its arguments and the remote command `tee >(sha256sum >&2)`, so sshd echoes every
 * byte back and prints the hash of what it received to ssh's stderr; it writes random bytes to
 * ssh at `rate` bytes a second (honouring ssh's backpressure) and reads the echo, hashing both.
 *
 * Stdout is lines of text: `progress {"sent":…,"received":…}` every {@link PROGRESS_MS} when
 * either changed and at once when a multiple of a MiB arrives, then `result {…}` ({@link StreamResult}) once ssh has
 * exited. A line `finish` on stdin stops the sending and closes ssh's stdin, so a session that
 * went well ends in order; ssh exiting on its own (a reset) ends the run as well.
 *
 * @packageDocumentation
 */

import { spawn } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { createInterface } from 'node:readline'

/** What the driver is told, as JSON in its first argument. */
export interface StreamOptions {
  /** ssh's arguments, up to and including the destination; the remote command is added. */
  ssh: string[]
  /** Bytes sent a second. */
  rate: number
  /** The run ends (ssh killed) after this long at the latest. */
  maxMs: number
}

/** What the driver prints last, after `result `. */
export interface StreamResult {
  sent: number
  sentSha256: string
  received: number
  receivedSha256: string
  /** What the remote sha256sum printed: the hash of every byte sshd received; '' when none. */
  remoteSha256: string
  code: number | null
  signal: string | null
  /** ssh's own stderr, minus the remote hash. */
  stderr: string
  /** The longest time between two arrivals of echoed bytes, after the first. */
  longestGapMs: number
  /** Whether the driver killed ssh because `maxMs` passed. */
  timedOut: boolean
}

/** The remote command: echo everything, and print the hash of it to stderr at the end. */
export const REMOTE_COMMAND = `bash -c 'tee >(sha256sum >&2)'`

const PROGRESS_MS = 100
const TICK_MS = 20
const CHUNK_BYTES = 16 * 1024
const MiB = 1024 * 1024

function main(options: StreamOptions): void {
  const ssh = spawn('ssh', [...options.ssh, REMOTE_COMMAND], { stdio: ['pipe', 'pipe', 'pipe'] })
  const sentHash = createHash('sha256')
  const receivedHash = createHash('sha256')
  let sent = 0
  let received = 0
  let stderr = ''
  let lastArrival: number | undefined
  let longestGapMs = 0
  let blocked = false
  let sending = true
  let allowance = 0
  let timedOut = false
  let said = ''
  const progress = (): void => {
    const line = `progress ${JSON.stringify({ sent, received })}\n`
    if (line !== said) {
      said = line
      process.stdout.write(line)
    }
  }

  ssh.stdin.on('error', () => {})
  ssh.stdin.on('drain', () => {
    blocked = false
  })
  const tick = setInterval(() => {
    if (!sending) {
      return
    }
    allowance = Math.min(allowance + (options.rate * TICK_MS) / 1000, options.rate)
    while (allowance >= CHUNK_BYTES && !blocked) {
      const chunk = randomBytes(CHUNK_BYTES)
      sentHash.update(chunk)
      sent += chunk.byteLength
      allowance -= chunk.byteLength
      blocked = !ssh.stdin.write(chunk)
    }
  }, TICK_MS)
  const ticker = setInterval(progress, PROGRESS_MS)

  ssh.stdout.on('data', (chunk: Buffer) => {
    const now = performance.now()
    if (lastArrival !== undefined) {
      longestGapMs = Math.max(longestGapMs, now - lastArrival)
    }
    lastArrival = now
    receivedHash.update(chunk)
    const before = Math.floor(received / MiB)
    received += chunk.byteLength
    if (Math.floor(received / MiB) !== before) {
      progress()
    }
  })
  ssh.stderr.setEncoding('utf8').on('data', (text: string) => {
    stderr += text
  })

  const finish = (): void => {
    sending = false
    ssh.stdin.end()
  }
  createInterface({ input: process.stdin }).on('line', (line) => {
    if (line.trim() === 'finish') {
      finish()
    }
  })
  const deadline = setTimeout(() => {
    timedOut = true
    ssh.kill('SIGKILL')
  }, options.maxMs)

  ssh.on('close', (code, signal) => {
    clearInterval(tick)
    clearInterval(ticker)
    clearTimeout(deadline)
    progress()
    const remote = /\b([0-9a-f]{64}) {2}-\n?/.exec(stderr)
    const result: StreamResult = {
      sent,
      sentSha256: sentHash.digest('hex'),
      received,
      receivedSha256: receivedHash.digest('hex'),
      remoteSha256: remote?.[1] ?? '',
      code,
      signal,
      stderr: remote === null ? stderr : stderr.replace(remote[0], ''),
      longestGapMs: Math.round(longestGapMs),
      timedOut,
    }
    process.stdout.write(`result ${JSON.stringify(result)}\n`, () => process.exit(0))
  })
}

if (process.argv[1] !== undefined && import.meta.filename === process.argv[1]) {
  main(JSON.parse(process.argv[2] ?? '{}') as StreamOptions)
}
