/**
 * Native addons inside the single executable. `dlopen()` needs a real file, so the build embeds each
 * `.node` file as a SEA asset and this module unpacks it once into a private, content-addressed cache
 * file and loads it from there. Running from source, nothing here is used: node-datachannel finds its
 * addon in node_modules by itself.
 *
 * @packageDocumentation
 */

import { randomBytes } from 'node:crypto'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import * as sea from 'node:sea'
import { readEnv } from '../env.ts'
import { AddonLoadError, AddonNotEmbeddedError, UnsafeCacheDirError } from './errors.ts'

// Set by build.mjs: asset name → sha256 hex of the embedded bytes, computed at build time so a start
// never hashes 9 MB just to name the cache file.
declare const __PEERUP_NATIVE_ASSETS__: Record<string, string> | undefined

/** Where and how an embedded addon was loaded. */
export type LoadedAddon = Pick<UnpackResult<unknown>, 'path' | 'reused'>

const loaded = new Map<string, UnpackResult<unknown>>()

/** The load record of an embedded addon, or undefined when it was not loaded from the executable. */
export function loadedAddon(name: string): LoadedAddon | undefined {
  return loaded.get(name)
}

/**
 * The unpack directories: `<cacheDir>/native` first, then a per-user directory under the system temp
 * directory for when the cache dir is read-only or unsafe.
 */
export function nativeCacheDirs(vars: NodeJS.ProcessEnv = process.env): string[] {
  const uid = process.getuid?.() ?? 'user'
  const fallback = path.join(os.tmpdir(), `peerup-${uid}`, 'native')
  try {
    return [path.join(readEnv(vars).cacheDir, 'native'), fallback]
  } catch {
    // No HOME and no passwd entry (a bare uid in a container): os.homedir() throws. WebRTC must still
    // load, so go straight to the temp directory.
    return [fallback]
  }
}

/**
 * Returns the exports of the addon embedded as SEA asset `name`, unpacking it on first use. Called
 * at bundle time in place of node-datachannel's own loader, so it must be synchronous.
 */
export function loadEmbeddedAddon(name: string): unknown {
  const cached = loaded.get(name)
  if (cached !== undefined) {
    // Both the ESM and the CJS build of a package may be bundled; load the library only once.
    return cached.loaded
  }
  if (!sea.isSea()) {
    throw new AddonNotEmbeddedError(`native addon ${name} is embedded only in the single executable`, {
      hint: 'running from source, import the package normally so it loads the addon from node_modules',
    })
  }
  const sha256 = typeof __PEERUP_NATIVE_ASSETS__ === 'object' ? __PEERUP_NATIVE_ASSETS__[name] : undefined
  if (sha256 === undefined) {
    throw new AddonNotEmbeddedError(`this executable was built without native addon ${name}`, {
      hint: 'rebuild with npm run build',
    })
  }
  // Zero-copy view of the bytes mapped from the executable itself.
  const bytes = new Uint8Array(sea.getRawAsset(name))
  const unpacked = unpackAddon({
    name,
    bytes,
    sha256,
    dirs: nativeCacheDirs(),
    load: (file) => {
      const module = { exports: {} as unknown }
      process.dlopen(module, file)
      return module.exports
    },
  })
  loaded.set(name, unpacked)
  return unpacked.loaded
}

export interface UnpackOptions<T> {
  /** Asset name, used in the file name and in messages. */
  name: string
  bytes: Uint8Array
  /** Hex sha256 of `bytes`; its first 16 digits name the file, so different builds never collide. */
  sha256: string
  /** Candidate directories, tried in order. */
  dirs: string[]
  /** Loads the unpacked file; when it throws, the next directory is tried (e.g. a noexec mount). */
  load?: (file: string) => T
}

export interface UnpackResult<T> {
  /** The unpacked file given to the loader (`process.dlopen`). */
  path: string
  /** True when a file from an earlier run was reused (after checking its bytes). */
  reused: boolean
  loaded: T | undefined
  /** Why earlier directories were skipped, for diagnostics. */
  skipped: string[]
}

/**
 * Puts `bytes` into the first usable directory of `dirs` as `<sha256-16hex>-<name>` (reusing an
 * identical existing file) and loads it. A directory is usable when it is ours and not writable by
 * anyone else, it is writable (or already holds the file), and the loader accepts the file there.
 */
export function unpackAddon<T>(options: UnpackOptions<T>): UnpackResult<T> {
  const skipped: string[] = []
  for (const dir of options.dirs) {
    try {
      const placed = placeAddonFile(dir, options.name, options.bytes, options.sha256)
      return { ...placed, loaded: options.load?.(placed.path), skipped }
    } catch (err) {
      skipped.push(`${dir}: ${err instanceof Error ? err.message : String(err)}`)
    }
  }
  throw new AddonLoadError(`cannot unpack native addon ${options.name}: ${skipped.join('; ')}`, {
    hint: 'set PEERUP_CACHE_DIR to a private, writable directory on a filesystem that allows executables',
  })
}

/**
 * Writes the addon file into one directory, or reuses it. The file name carries the content hash, so
 * a file of the right name and size is almost surely right; its bytes are still compared with the
 * embedded ones (under 10 ms for 9 MB, cheaper than hashing) so a damaged file is replaced rather than
 * handed to dlopen.
 */
export function placeAddonFile(
  dir: string,
  name: string,
  bytes: Uint8Array,
  sha256: string,
): { path: string; reused: boolean } {
  if (!/^[0-9a-f]{16,}$/.test(sha256) || name.includes('/') || name.startsWith('.')) {
    throw new AddonLoadError(`invalid addon name or hash: ${name} ${sha256}`)
  }
  ensurePrivateDir(dir)
  const file = path.join(dir, `${sha256.slice(0, 16)}-${name}`)
  if (isSameFile(file, bytes)) {
    return { path: file, reused: true }
  }
  // Concurrent starts each write a temp file of their own and rename it into place; rename is atomic,
  // so every process ends up loading a complete file, whichever rename wins.
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`)
  try {
    // 'wx' with an explicit mode: never follows a planted file, never wider than owner read+exec.
    const fd = fs.openSync(tmp, 'wx', 0o500)
    try {
      let offset = 0
      while (offset < bytes.byteLength) {
        offset += fs.writeSync(fd, bytes, offset, bytes.byteLength - offset)
      }
      // A crash must not leave a renamed but empty file behind (delayed allocation).
      fs.fsyncSync(fd)
    } finally {
      fs.closeSync(fd)
    }
    fs.renameSync(tmp, file)
  } catch (err) {
    fs.rmSync(tmp, { force: true })
    throw err
  }
  return { path: file, reused: false }
}

function isSameFile(file: string, bytes: Uint8Array): boolean {
  let st: fs.Stats
  try {
    st = fs.lstatSync(file)
  } catch {
    return false
  }
  const uid = process.getuid?.()
  if (!st.isFile() || st.size !== bytes.byteLength || (uid !== undefined && st.uid !== uid)) {
    return false
  }
  const onDisk = fs.readFileSync(file)
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).equals(onDisk)
}

/**
 * Creates `dir` (0700) when missing, then refuses it unless it and its parent are owned by the current
 * user and writable by nobody else: whoever can write there could swap the library we are about to
 * load. The parent matters because its owner can rename `dir` away between our check and dlopen.
 */
export function ensurePrivateDir(dir: string): void {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 })
  checkPrivateDir(path.dirname(dir))
  checkPrivateDir(dir)
}

function checkPrivateDir(dir: string): void {
  const uid = process.getuid?.()
  if (uid === undefined) {
    // No POSIX ownership to check (Windows); the per-user profile directory is private already.
    return
  }
  // lstat first: a symlink planted by another user in a shared directory like /tmp is owned by them.
  const link = fs.lstatSync(dir)
  if (link.uid !== uid) {
    throw new UnsafeCacheDirError(`${dir} is owned by uid ${link.uid}, not ${uid}`)
  }
  const st = link.isSymbolicLink() ? fs.statSync(dir) : link
  if (!st.isDirectory()) {
    throw new UnsafeCacheDirError(`${dir} is not a directory`)
  }
  if (st.uid !== uid) {
    throw new UnsafeCacheDirError(`${dir} is owned by uid ${st.uid}, not ${uid}`)
  }
  if ((st.mode & 0o022) !== 0) {
    throw new UnsafeCacheDirError(
      `${dir} has mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}, writable by other users`,
      { hint: `run: chmod go-w ${dir}` },
    )
  }
}

/** Where one embedded addon's cache file stands, as `peerup doctor` reports it. */
export interface AddonCacheEntry {
  name: string
  /** The unpacked file, when a directory holds the right bytes already. */
  file?: string
  /** Why each candidate directory holds no usable copy (missing, unsafe, stale bytes). */
  problems: string[]
}

/**
 * Inspects the cache of the addons this executable embeds without writing or loading anything:
 * `undefined` when running from source (the addon then loads from node_modules). `assets` and
 * `bytesOf` are the executable's (injectable for tests).
 */
export function addonCacheState(
  dirs: string[] = nativeCacheDirs(),
  assets: Record<string, string> | undefined = sea.isSea() && typeof __PEERUP_NATIVE_ASSETS__ === 'object'
    ? __PEERUP_NATIVE_ASSETS__
    : undefined,
  bytesOf: (name: string) => Uint8Array = (name) => new Uint8Array(sea.getRawAsset(name)),
): AddonCacheEntry[] | undefined {
  if (assets === undefined) {
    return undefined
  }
  return Object.entries(assets).map(([name, sha256]) => {
    const problems: string[] = []
    for (const dir of dirs) {
      const file = path.join(dir, `${sha256.slice(0, 16)}-${name}`)
      try {
        if (!fs.existsSync(dir)) {
          problems.push(`${dir}: not created yet`)
          continue
        }
        checkPrivateDir(path.dirname(dir))
        checkPrivateDir(dir)
        if (isSameFile(file, bytesOf(name))) {
          return { name, file, problems }
        }
        problems.push(`${dir}: no copy of this build's ${name} yet`)
      } catch (err) {
        problems.push(`${dir}: ${err instanceof Error ? err.message : String(err)}`)
      }
    }
    return { name, problems }
  })
}
