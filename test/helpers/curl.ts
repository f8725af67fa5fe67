/**
 * The real curl for tests of the gateway's handshakes, a web server for it to reach, and a gateway
 * of the tests' own around a handshake.
 */

import { execFile, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import * as http from 'node:http'
import type * as net from 'node:net'
import { connect, createServer } from 'node:net'
import { promisify } from 'node:util'

/** Why the tests that need curl are skipped, or false when it is installed. */
export const NO_CURL: string | false =
  spawnSync('curl', ['--version']).error === undefined ? false : 'no curl'

const run = promisify(execFile)

/** Runs `curl -sS --max-time 10 <args>`; its exit code (0 or curl's error code) and output. */
export async function curl(args: string[]): Promise<{ code: number; out: string; err: string }> {
  try {
    const r = await run('curl', ['-sS', '--max-time', '10', ...args])
    return { code: 0, out: r.stdout, err: r.stderr }
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string }
    return { code: e.code, out: e.stdout, err: e.stderr }
  }
}

/** An HTTP server on loopback answering `hello from b <path>`; closed after the test. */
export async function webServer(t: { after: (fn: () => void) => void }): Promise<number> {
  const server = http.createServer((req, res) => res.end(`hello from b ${req.url}\n`))
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.after(() => server.close())
  return (server.address() as net.AddressInfo).port
}

/**
 * A gateway of the tests' own on loopback: each connection's `handshake` (SOCKS5, HTTP CONNECT)
 * gives the request, kept in `seen`; `answer` replies, and returns true to have the connection
 * tunnelled to 127.0.0.1:`target` (the reply then said success) or false to end it.
 */
export async function tunnelServer<R>(
  t: { after: (fn: () => void) => void },
  target: number,
  handshake: (socket: net.Socket, signal: AbortSignal) => Promise<R>,
  answer: (socket: net.Socket, request: R) => boolean,
  seen: R[] = [],
): Promise<number> {
  const server = createServer({ pauseOnConnect: true }, async (socket) => {
    socket.on('error', () => {})
    let request: R
    try {
      request = await handshake(socket, AbortSignal.timeout(5_000))
    } catch {
      socket.end()
      return
    }
    seen.push(request)
    const far = connect(target, '127.0.0.1')
    far.on('error', () => socket.destroy())
    await once(far, 'connect')
    if (!answer(socket, request)) {
      far.destroy()
      socket.end()
      return
    }
    socket.pipe(far).pipe(socket)
    socket.resume()
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.after(() => server.close())
  return (server.address() as net.AddressInfo).port
}
