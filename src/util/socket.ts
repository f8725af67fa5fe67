/**
 * Listening on a Unix socket the way a local API must (docs/decisions/0000-inherited.md): in a directory only its owner
 * can enter, created 0600 with no window where it is wider, and never stealing the socket of a
 * live process — a stale one (its process died) is replaced, a live one is an error.
 *
 * @packageDocumentation
 */

import { once } from 'node:events'
import * as fs from 'node:fs/promises'
import * as net from 'node:net'
import * as path from 'node:path'
import { PeerupError } from '../errors.ts'

/** Longest socket path the kernel takes (`sun_path` is 108 bytes on Linux, 104 on macOS). */
export const MAX_SOCKET_PATH_BYTES = 103

/** Another process answers on the socket already. */
export class SocketInUseError extends PeerupError {
  override name = 'SocketInUseError'
}

/** The socket cannot be made safely (path too long, directory others can enter). */
export class SocketSetupError extends PeerupError {
  override name = 'SocketSetupError'
}

/**
 * Makes `server` listen on `socketPath` (0600, in a 0700 directory). Resolves with a function that
 * closes the server and removes the socket.
 */
export async function listenOnSocket(
  server: net.Server,
  socketPath: string,
  /** `what` runs here, for messages: `a daemon`, `a relay`. */
  options: { what: string },
): Promise<() => Promise<void>> {
  if (Buffer.byteLength(socketPath) > MAX_SOCKET_PATH_BYTES) {
    throw new SocketSetupError(`socket path ${socketPath} is too long for a Unix socket`, {
      hint: 'move the config directory to a shorter path (or use --config with a shorter one)',
    })
  }
  await secureDirectory(path.dirname(socketPath))
  await removeIfStale(socketPath, options.what)
  // The socket takes its mode from the umask at bind() time: set it so the socket is 0600 from
  // the start, instead of a chmod after a window where anyone could connect.
  const previous = process.umask(0o177)
  try {
    server.listen(socketPath)
    await once(server, 'listening')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') {
      // Another process bound it between our check and our bind.
      throw new SocketInUseError(`${options.what} is already running here (${socketPath})`, {
        hint: 'stop it first, or use another --config directory',
      })
    }
    throw err
  } finally {
    process.umask(previous)
  }
  // Belt and braces: a filesystem that ignores the umask for sockets still ends up 0600.
  await fs.chmod(socketPath, 0o600)
  let closed = false
  return async () => {
    if (closed) {
      return
    }
    closed = true
    await new Promise<void>((resolve) => server.close(() => resolve()))
    await fs.rm(socketPath, { force: true })
  }
}

/** Creates `dir` 0700, or checks that an existing one is not open to group or others. */
async function secureDirectory(dir: string): Promise<void> {
  await fs.mkdir(dir, { recursive: true, mode: 0o700 })
  const st = await fs.stat(dir)
  if (process.getuid !== undefined && st.uid !== process.getuid()) {
    throw new SocketSetupError(`${dir} belongs to another user`, {
      hint: 'run peerup as the owner of its config directory',
    })
  }
  if ((st.mode & 0o077) !== 0) {
    throw new SocketSetupError(
      `${dir} has mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}: other users could reach the local API socket`,
      { hint: `run: chmod 700 ${dir}` },
    )
  }
}

async function removeIfStale(socketPath: string, what: string): Promise<void> {
  let st: Awaited<ReturnType<typeof fs.lstat>>
  try {
    st = await fs.lstat(socketPath)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      return
    }
    throw err
  }
  if (!st.isSocket()) {
    throw new SocketSetupError(`${socketPath} exists and is not a socket`, {
      hint: 'move that file away; peerup keeps its socket there',
    })
  }
  if (await socketAnswers(socketPath)) {
    throw new SocketInUseError(`${what} is already running here (${socketPath})`, {
      hint: 'stop it first (`peerup daemon stop`), or use another --config directory',
    })
  }
  // Nobody answers: left behind by a process that died (kill -9, power loss).
  await fs.rm(socketPath, { force: true })
}

/** Resolves true when something accepts a connection on the Unix socket at `socketPath`. */
export function socketAnswers(socketPath: string, timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ path: socketPath })
    const done = (answer: boolean): void => {
      socket.destroy()
      resolve(answer)
    }
    socket.setTimeout(timeoutMs, () => done(false))
    socket.once('connect', () => done(true))
    socket.once('error', () => done(false))
  })
}

/** Closes an HTTP server and every connection it still has; resolves once it is closed. */
export function closeHttpServer(server: {
  closeAllConnections(): void
  close(cb: () => void): void
}): Promise<void> {
  return new Promise<void>((resolve) => {
    server.closeAllConnections()
    server.close(() => resolve())
  })
}
