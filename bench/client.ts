/**
 * The benchmark's client, run inside a lab namespace with the Node that runs the harness, so the
 * timings are taken on the host that would be the user's machine. Prints one JSON line.
 *
 * - `throughput <host> <port> <bytes> <seed> [<socks-host>:<socks-port>]`: streams the payload to
 *   servers.ts, waits for its verdict; `{bytes, seconds}`. With a SOCKS gateway, `host` is a name
 *   the gateway connects to (`bench.b.peerup`).
 * - `latency <host> <port> <count> <size> <warmup>`: round trips of `size` bytes on one connection;
 *   `{rttMs: [...]}` (warm-up round trips left out).
 * - `ttfb <host> <port> <runs>`: new connections, each timed from `connect()` to its first byte in
 *   (an SSH banner); `{ms: [...]}`.
 * - `spawn <runs> <until> <timeout-ms> <cmd> [args...]`: starts a command `runs` times and times it
 *   until `until`: `first-byte` (of stdout), `exit` (status 0), or `/regex/` (on stdout); a run
 *   that gets there not within the timeout is killed and listed; `{ms: [...], codes, failures}`.
 * - `hold <host> <port> <count>`: opens `count` echo connections at once, checks each with a round
 *   trip, prints `{ready, failed}`, and keeps them open until stdin ends.
 * - `flow <host> <port> <bytes> <interval-ms>`: a steady two-way transfer on one echo connection:
 *   a numbered, timestamped message of `bytes` every `interval-ms` (none while the socket is full),
 *   each echo compared byte for byte with what was sent. Prints `{ready}` after the first echo;
 *   for each line `mark <epoch-ms>` on stdin, prints `{mark, ms, gapMs}` once a message written at
 *   or after that time has come back (`ms` after the mark; `gapMs` the longest wait between two
 *   echoes since a second before it). When stdin ends: `{sent, echoed, intact, error}`.
 *
 * @packageDocumentation
 */

import { spawn } from 'node:child_process'
import { once } from 'node:events'
import * as net from 'node:net'
import { createInterface } from 'node:readline'
import {
  BLOCK_BYTES,
  MODE_ECHO,
  MODE_THROUGHPUT,
  payloadBlock,
  payloadMiB,
  REPLY_OK,
  THROUGHPUT_HEADER_BYTES,
} from './wire.ts'

function connect(host: string, port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port, noDelay: true, allowHalfOpen: true })
    socket.once('connect', () => {
      socket.off('error', reject)
      resolve(socket)
    })
    socket.once('error', reject)
  })
}

/**
 * A SOCKS5 CONNECT to `host:port` (a domain name) on `socket`, connected to the gateway: resolves
 * once the gateway answered success, with nothing of the tunnel's bytes read.
 */
async function socksConnect(socket: net.Socket, host: string, port: number): Promise<void> {
  const name = Buffer.from(host)
  const request = Buffer.concat([Buffer.from([5, 1, 0, 5, 1, 0, 3, name.length]), name, Buffer.alloc(2)])
  request.writeUInt16BE(port, request.length - 2)
  socket.write(request)
  // The method choice (2 bytes) and the reply (10: an IPv4 bound address).
  let got = Buffer.alloc(0)
  while (got.length < 12) {
    const [chunk] = (await once(socket, 'data')) as [Buffer]
    got = Buffer.concat([got, chunk])
  }
  if (got[1] !== 0 || got[3] !== 0 || got.length !== 12) {
    throw new Error(`the SOCKS gateway refused ${host}:${port}: ${got.subarray(0, 12).toString('hex')}`)
  }
}

async function throughput(
  host: string,
  port: number,
  bytes: number,
  seed: number,
  socks?: string,
): Promise<object> {
  const block = payloadBlock(seed)
  const [socksHost, socksPort] = socks?.split(':') ?? []
  const socket = await connect(socksHost ?? host, Number(socksPort ?? port))
  // Timed from the connection, as the other ways are: their session opens after it too.
  const started = performance.now()
  if (socks !== undefined) {
    await socksConnect(socket, host, port)
  }
  const reply: Buffer[] = []
  socket.on('data', (c: Buffer) => reply.push(c))
  const ended = once(socket, 'end')
  const closed = new Promise<void>((resolve, reject) => {
    socket.once('error', reject)
    socket.once('close', () => resolve())
  })
  const head = Buffer.alloc(THROUGHPUT_HEADER_BYTES)
  head[0] = MODE_THROUGHPUT
  head.writeBigUInt64BE(BigInt(bytes), 1)
  head.writeUInt32BE(seed, 9)
  socket.write(head)
  const totalMiB = Math.ceil(bytes / BLOCK_BYTES)
  for (let i = 0; i < totalMiB; i++) {
    const chunk = payloadMiB(block, i).subarray(0, Math.min(BLOCK_BYTES, bytes - i * BLOCK_BYTES))
    if (!socket.write(chunk)) {
      await Promise.race([once(socket, 'drain'), closed])
    }
  }
  socket.end()
  await Promise.race([ended, closed])
  const seconds = (performance.now() - started) / 1000
  await closed
  const answer = Buffer.concat(reply)
  if (answer[0] !== REPLY_OK) {
    throw new Error(`server: ${answer.subarray(1).toString() || 'no answer'}`)
  }
  return { bytes, seconds }
}

async function latency(
  host: string,
  port: number,
  count: number,
  size: number,
  warmup: number,
): Promise<object> {
  const socket = await connect(host, port)
  socket.write(Buffer.from([MODE_ECHO]))
  const message = Buffer.alloc(size, 0x61)
  const rttMs: number[] = []
  let pending = 0
  let resolveRound: (() => void) | undefined
  socket.on('data', (c: Buffer) => {
    pending -= c.length
    if (pending <= 0) {
      resolveRound?.()
    }
  })
  const failed = new Promise<never>((_, reject) => {
    socket.once('error', reject)
    socket.once('end', () => reject(new Error('the echo server ended the connection')))
  })
  for (let i = 0; i < warmup + count; i++) {
    const round = new Promise<void>((resolve) => {
      resolveRound = resolve
    })
    pending = size
    const t = performance.now()
    socket.write(message)
    await Promise.race([round, failed])
    if (i >= warmup) {
      rttMs.push(performance.now() - t)
    }
  }
  socket.destroy()
  return { rttMs: rttMs.map((x) => Math.round(x * 1000) / 1000) }
}

async function ttfb(host: string, port: number, runs: number): Promise<object> {
  const ms: number[] = []
  for (let i = 0; i < runs; i++) {
    const t = performance.now()
    const socket = net.connect({ host, port, noDelay: true })
    await new Promise<void>((resolve, reject) => {
      socket.once('data', () => resolve())
      socket.once('error', reject)
      socket.once('end', () => reject(new Error('closed before the first byte')))
    })
    ms.push(performance.now() - t)
    socket.destroy()
    // Let the far side notice the close before the next connection.
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  return { ms }
}

async function spawnTimed(
  runs: number,
  until: string,
  timeoutMs: number,
  cmd: string,
  args: string[],
): Promise<object> {
  const ms: number[] = []
  const codes: Array<number | null> = []
  const failures: string[] = []
  const pattern = until.startsWith('/') ? new RegExp(until.slice(1, until.lastIndexOf('/'))) : undefined
  for (let i = 0; i < runs; i++) {
    const t = performance.now()
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], env: process.env, detached: true })
    let out = ''
    let err = ''
    let at: number | undefined
    let timedOut = false
    const timer = setTimeout(() => {
      timedOut = true
      try {
        process.kill(-(child.pid as number), 'SIGKILL')
      } catch {}
    }, timeoutMs)
    child.stderr.setEncoding('utf8').on('data', (c: string) => {
      err = (err + c).slice(-2000)
    })
    child.stdout.setEncoding('utf8').on('data', (c: string) => {
      out = (out + c).slice(-2000)
      if (at === undefined && (until === 'first-byte' || (pattern?.test(out) ?? false))) {
        at = performance.now() - t
        if (until === 'first-byte') {
          // A ProxyCommand's stdin ends when ssh would hang up: the proxy then exits.
          child.stdin.end()
        }
      }
    })
    child.stdin.on('error', () => {})
    if (until !== 'first-byte') {
      child.stdin.end()
    }
    const [code] = (await once(child, 'exit')) as [number | null]
    clearTimeout(timer)
    const end = performance.now() - t
    codes.push(code)
    if (until === 'exit' && !timedOut && code === 0) {
      at = end
    }
    if (at === undefined || (until === 'exit' && code !== 0)) {
      const why = timedOut ? `no ${until} within ${timeoutMs} ms` : `exited ${code} before ${until}`
      failures.push(`run ${i + 1}: ${why}: ${`${out} ${err}`.replace(/\s+/g, ' ').trim().slice(-300)}`)
      continue
    }
    ms.push(at)
  }
  return { ms, codes, failures }
}

async function hold(host: string, port: number, count: number): Promise<void> {
  const sockets = await Promise.allSettled(
    Array.from({ length: count }, async () => {
      const socket = await connect(host, port)
      socket.write(Buffer.from([MODE_ECHO, 0x68, 0x69]))
      await new Promise<void>((resolve, reject) => {
        let got = 0
        socket.on('data', (c: Buffer) => {
          got += c.length
          if (got >= 2) {
            resolve()
          }
        })
        socket.once('error', reject)
        socket.once('end', () => reject(new Error('ended')))
      })
      return socket
    }),
  )
  const open = sockets.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []))
  const errors = sockets.flatMap((s) => (s.status === 'rejected' ? [String(s.reason)] : []))
  let dropped = 0
  for (const s of open) {
    s.on('error', () => {})
    s.on('close', () => dropped++)
  }
  console.log(JSON.stringify({ ready: open.length, failed: errors.length, errors: errors.slice(0, 3) }))
  process.stdin.resume()
  await once(process.stdin, 'end')
  // Each connection must still work after the hold.
  let alive = 0
  await Promise.all(
    open.map(
      (s) =>
        new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, 5000)
          s.once('data', () => {
            alive++
            clearTimeout(timer)
            resolve()
          })
          s.write('x')
        }),
    ),
  )
  for (const s of open) {
    s.destroy()
  }
  console.log(JSON.stringify({ alive, dropped }))
}

/** Wall-clock time in ms with sub-ms precision: comparable between processes on one machine. */
function epochMs(): number {
  return performance.timeOrigin + performance.now()
}

async function flow(host: string, port: number, size: number, intervalMs: number): Promise<void> {
  const socket = await connect(host, port)
  socket.write(Buffer.from([MODE_ECHO]))
  // Sequence number and time of writing, then filler.
  const bytes = Math.max(size, 12)
  const pending: Buffer[] = []
  /** [written at, echoed at] of every message that came back, oldest first. */
  const history: Array<[number, number]> = []
  /** Times asked about (`mark` lines) whose answer has not come yet. */
  let marks: number[] = []
  let sent = 0
  let echoed = 0
  let error: string | undefined
  let inbox: Buffer = Buffer.alloc(0)
  // A mark may arrive after the echo that answers it: the history is searched as well.
  const answer = (mark: number): boolean => {
    const i = history.findIndex(([writtenAt]) => writtenAt >= mark)
    if (i < 0) return false
    const at = (history[i] as [number, number])[1]
    let gapMs = 0
    for (let j = i; j > 0 && (history[j] as [number, number])[1] > mark - 1000; j--) {
      gapMs = Math.max(gapMs, (history[j] as [number, number])[1] - (history[j - 1] as [number, number])[1])
    }
    console.log(JSON.stringify({ mark, ms: at - mark, gapMs }))
    return true
  }
  let onFirst: (() => void) | undefined
  const first = new Promise<void>((resolve) => {
    onFirst = resolve
  })
  socket.on('data', (chunk: Buffer) => {
    inbox = inbox.length === 0 ? chunk : Buffer.concat([inbox, chunk])
    while (inbox.length >= bytes) {
      const got = inbox.subarray(0, bytes)
      inbox = inbox.subarray(bytes)
      const want = pending.shift()
      if (want === undefined || !want.equals(got)) {
        error ??= `echo ${echoed} differs from what was sent`
      }
      echoed++
      history.push([got.readDoubleBE(4), epochMs()])
      onFirst?.()
      onFirst = undefined
    }
    if (marks.length > 0) {
      marks = marks.filter((mark) => !answer(mark))
    }
  })
  socket.on('error', (err: NodeJS.ErrnoException) => {
    error ??= err.code ?? err.message
  })
  socket.on('close', () => {
    error ??= 'the connection closed'
  })
  const timer = setInterval(() => {
    if (socket.writableNeedDrain || socket.destroyed) return
    const m = Buffer.alloc(bytes, sent & 0xff)
    m.writeUInt32BE(sent, 0)
    m.writeDoubleBE(epochMs(), 4)
    sent++
    pending.push(m)
    socket.write(m)
  }, intervalMs)
  await first
  console.log(JSON.stringify({ ready: true }))
  for await (const line of createInterface({ input: process.stdin })) {
    const [word, value] = line.trim().split(/\s+/)
    if (word === 'mark' && !answer(Number(value))) {
      marks.push(Number(value))
    }
  }
  clearInterval(timer)
  // What is still on its way comes back before the end, or the transfer was not intact.
  const deadline = Date.now() + 30_000
  while (pending.length > 0 && error === undefined && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  const intact = error === undefined && pending.length === 0
  socket.destroy()
  console.log(
    JSON.stringify({ sent, echoed, intact, error: error ?? (intact ? undefined : 'echoes missing') }),
  )
}

async function main(argv: string[]): Promise<void> {
  const [mode, ...args] = argv
  const num = (i: number): number => Number(args[i])
  const str = (i: number): string => args[i] as string
  let result: object | undefined
  switch (mode) {
    case 'throughput':
      result = await throughput(str(0), num(1), num(2), num(3), args[4])
      break
    case 'latency':
      result = await latency(str(0), num(1), num(2), num(3), num(4))
      break
    case 'ttfb':
      result = await ttfb(str(0), num(1), num(2))
      break
    case 'spawn':
      result = await spawnTimed(num(0), str(1), num(2), str(3), args.slice(4))
      break
    case 'hold':
      await hold(str(0), num(1), num(2))
      return
    case 'flow':
      await flow(str(0), num(1), num(2), num(3))
      return
    default:
      throw new Error(`unknown mode ${mode}`)
  }
  console.log(JSON.stringify(result))
}

main(process.argv.slice(2)).then(
  () => process.exit(0),
  (err: unknown) => {
    console.error((err as Error).message)
    process.exit(1)
  },
)
