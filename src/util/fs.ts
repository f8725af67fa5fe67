/**
 * File helpers with the guarantees peerup promises about its files: a write is all-or-nothing
 * (temp file + fsync + rename), secret files are created 0600 without a window where they are
 * wider, and files whose mode is too open are refused with a `chmod` hint.
 *
 * @packageDocumentation
 */

import { randomBytes } from 'node:crypto'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import { PeerupError } from '../errors.ts'

/** A file's permissions are wider than peerup accepts. */
export class FileModeError extends PeerupError {
  override name = 'FileModeError'
}

export interface AtomicWriteOptions {
  /** Mode of the new file; defaults to the existing file's mode, or 0600 for a new one. */
  mode?: number
  /** Fail when the target already exists instead of replacing it. */
  exclusive?: boolean
}

/**
 * Writes `data` to `file` so that a reader (or a crash) sees either the old content or the new,
 * never a mix: the bytes go to a temp file in the same directory, are fsynced, then renamed over
 * the target, and the directory is fsynced so the rename itself survives a power loss.
 */
export async function atomicWriteFile(
  file: string,
  data: string | Uint8Array,
  options: AtomicWriteOptions = {},
): Promise<void> {
  const dir = path.dirname(file)
  const mode =
    options.mode ??
    (await fs.stat(file).then(
      (st) => st.mode & 0o777,
      () => 0o600,
    ))
  const tmp = path.join(dir, `.${path.basename(file)}.${randomBytes(6).toString('hex')}.tmp`)
  // 'wx' + an explicit mode: the temp file never exists with a wider mode, whatever the umask.
  const handle = await fs.open(tmp, 'wx', mode)
  try {
    await handle.writeFile(data)
    await handle.chmod(mode)
    await handle.sync()
  } catch (err) {
    await handle.close().catch(() => {})
    await fs.rm(tmp, { force: true })
    throw err
  }
  await handle.close()
  try {
    if (options.exclusive === true) {
      // link() fails with EEXIST when the target exists: an exclusive create that is still atomic.
      await fs.link(tmp, file)
      await fs.rm(tmp, { force: true })
    } else {
      await fs.rename(tmp, file)
    }
  } catch (err) {
    await fs.rm(tmp, { force: true })
    throw err
  }
  await syncDir(dir)
}

async function syncDir(dir: string): Promise<void> {
  let handle: fs.FileHandle | undefined
  try {
    handle = await fs.open(dir, 'r')
    await handle.sync()
  } catch {
    // Some filesystems refuse fsync on a directory; the rename is still atomic there.
  } finally {
    await handle?.close()
  }
}

/** What a file may be used for, which decides the widest mode it may have. */
export type FileKind = 'secret' | 'trust'

/**
 * Refuses a file whose mode is too wide: a secret (a private key, a cookie) must not be readable
 * by group or others; a trust file (config, authorized_keys) must not be writable by them, the
 * way sshd's StrictModes treats authorized_keys.
 */
export async function checkFileMode(file: string, kind: FileKind): Promise<void> {
  if (process.platform === 'win32') {
    return
  }
  const mode = (await fs.stat(file)).mode & 0o777
  const [forbidden, wanted, what] =
    kind === 'secret' ? [0o077, '600', 'readable'] : [0o022, 'go-w', 'writable']
  if ((mode & forbidden) !== 0) {
    throw new FileModeError(`${file} has mode ${mode.toString(8).padStart(4, '0')}, ${what} by other users`, {
      hint: `run: chmod ${wanted} ${file}`,
    })
  }
}

/** Whether a path exists (any kind of file). */
export async function exists(file: string): Promise<boolean> {
  try {
    await fs.lstat(file)
    return true
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      return false
    }
    throw err
  }
}

const LOCK_WAIT_MS = 10_000
const LOCK_RETRY_MS = 25

/**
 * Runs `fn` while holding an advisory lock beside `file` (`.<name>.lock`), so two commands that
 * read-modify-write the same file cannot lose each other's change. A lock left by a dead process
 * is taken over.
 */
export async function withFileLock<T>(file: string, fn: () => Promise<T>): Promise<T> {
  const lock = path.join(path.dirname(file), `.${path.basename(file)}.lock`)
  const deadline = Date.now() + LOCK_WAIT_MS
  for (;;) {
    try {
      const handle = await fs.open(lock, 'wx', 0o600)
      await handle.writeFile(String(process.pid))
      await handle.close()
      break
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw err
      }
      if (await lockIsStale(lock)) {
        await fs.rm(lock, { force: true })
        continue
      }
      if (Date.now() > deadline) {
        throw new PeerupError(`${file} is locked by another peerup command`, {
          hint: `wait for it to finish, or remove ${lock} if no peerup command is running`,
        })
      }
      await new Promise((resolve) => setTimeout(resolve, LOCK_RETRY_MS))
    }
  }
  try {
    return await fn()
  } finally {
    await fs.rm(lock, { force: true })
  }
}

async function lockIsStale(lock: string): Promise<boolean> {
  let pid: number
  try {
    pid = Number.parseInt(await fs.readFile(lock, 'utf8'), 10)
  } catch {
    return false
  }
  if (!Number.isInteger(pid) || pid <= 0) {
    // Being written right now, or garbage: only stale when it is old.
    try {
      return Date.now() - (await fs.stat(lock)).mtimeMs > LOCK_WAIT_MS
    } catch {
      return false
    }
  }
  try {
    process.kill(pid, 0)
    return false
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH'
  }
}
