/**
 * The bearer cookie of a local API (inherited, docs/decisions/0000-inherited.md): 32 random bytes in hex, in a 0600 file beside the
 * socket, rotated at every start and removed at stop. Whoever can read the file may use the API;
 * the file mode is what makes that "the same user".
 *
 * @packageDocumentation
 */

import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import * as fs from 'node:fs/promises'
import { PeerupError } from '../errors.ts'
import { atomicWriteFile, checkFileMode } from '../util/fs.ts'

/** Bytes of randomness in a cookie. */
export const COOKIE_BYTES = 32

const COOKIE_PATTERN = /^[0-9a-f]{64}$/

/** The cookie file is missing or unreadable: no daemon has finished starting. */
export class CookieMissingError extends PeerupError {
  override name = 'CookieMissingError'
}

/** Writes a fresh cookie (0600, atomically) and returns it. */
export async function writeCookie(file: string): Promise<string> {
  const cookie = randomBytes(COOKIE_BYTES).toString('hex')
  await atomicWriteFile(file, `${cookie}\n`, { mode: 0o600 })
  return cookie
}

/** Reads a cookie file, refusing one other users can read. */
export async function readCookie(file: string): Promise<string> {
  let text: string
  try {
    text = await fs.readFile(file, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EACCES') {
      throw new CookieMissingError(`cannot read ${file}: permission denied`, {
        hint: 'run the command as the user the daemon runs as',
        cause: err,
      })
    }
    throw new CookieMissingError(`no cookie at ${file}`, {
      hint: 'is the daemon running? start it with `peerup daemon`',
      cause: err,
    })
  }
  await checkFileMode(file, 'secret')
  const cookie = text.trim()
  if (!COOKIE_PATTERN.test(cookie)) {
    throw new CookieMissingError(`${file} does not hold a daemon cookie`, {
      hint: 'restart the daemon to write a new one',
    })
  }
  return cookie
}

/** Removes a cookie file; a missing one is fine. */
export async function removeCookie(file: string): Promise<void> {
  await fs.rm(file, { force: true })
}

/**
 * Whether an `Authorization` header carries `cookie` as a bearer token, compared in constant time
 * (both sides are hashed first, so neither the length nor a prefix leaks through timing).
 */
export function bearerMatches(header: string | undefined, cookie: string): boolean {
  if (header === undefined) {
    return false
  }
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header)
  const given = createHash('sha256')
    .update(m?.[1] ?? '')
    .digest()
  const want = createHash('sha256').update(cookie).digest()
  return timingSafeEqual(given, want) && m !== null
}
