import * as assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { pathToFileURL } from 'node:url'
import {
  ensurePrivateDir,
  loadEmbeddedAddon,
  nativeCacheDirs,
  placeAddonFile,
  unpackAddon,
} from '../../../src/native/addon.ts'
import { AddonLoadError, AddonNotEmbeddedError, UnsafeCacheDirError } from '../../../src/native/errors.ts'

const addonModule = pathToFileURL(path.resolve(import.meta.dirname, '../../../src/native/addon.ts')).href
const isRoot = process.getuid?.() === 0

function fakeAddon(size = 256 * 1024): { bytes: Uint8Array; sha256: string } {
  const bytes = new Uint8Array(randomBytes(size))
  return { bytes, sha256: createHash('sha256').update(bytes).digest('hex') }
}

describe('native addon cache', () => {
  let base: string

  before(() => {
    base = fs.mkdtempSync(path.join(os.tmpdir(), 'peerup-addon-test-'))
    fs.chmodSync(base, 0o700)
  })

  after(() => {
    fs.rmSync(base, { recursive: true, force: true })
  })

  it('writes a content-addressed, owner-only file in a 0700 directory', () => {
    const { bytes, sha256 } = fakeAddon()
    const dir = path.join(base, 'fresh', 'native')
    const placed = placeAddonFile(dir, 'x.node', bytes, sha256)
    assert.equal(placed.reused, false)
    assert.equal(placed.path, path.join(dir, `${sha256.slice(0, 16)}-x.node`))
    assert.deepEqual(new Uint8Array(fs.readFileSync(placed.path)), bytes)
    assert.equal(fs.statSync(placed.path).mode & 0o777, 0o500)
    assert.equal(fs.statSync(dir).mode & 0o777, 0o700)
    assert.deepEqual(
      fs.readdirSync(dir).filter((f) => f.endsWith('.tmp')),
      [],
    )
  })

  it('reuses an identical file and replaces a damaged one', () => {
    const { bytes, sha256 } = fakeAddon()
    const dir = path.join(base, 'reuse')
    const first = placeAddonFile(dir, 'x.node', bytes, sha256)
    const inode = fs.statSync(first.path).ino
    const again = placeAddonFile(dir, 'x.node', bytes, sha256)
    assert.equal(again.reused, true)
    assert.equal(fs.statSync(again.path).ino, inode)

    // Same size, different bytes: must not be handed to dlopen.
    fs.chmodSync(first.path, 0o600)
    fs.writeFileSync(first.path, new Uint8Array(bytes.byteLength))
    const repaired = placeAddonFile(dir, 'x.node', bytes, sha256)
    assert.equal(repaired.reused, false)
    assert.deepEqual(new Uint8Array(fs.readFileSync(repaired.path)), bytes)
  })

  it('lets concurrent processes race to the same file and all succeed', async () => {
    const { bytes, sha256 } = fakeAddon(8 * 1024 * 1024)
    const dir = path.join(base, 'race')
    const source = path.join(base, 'race-source.bin')
    fs.writeFileSync(source, bytes)
    const script = `
      import { readFileSync } from 'node:fs'
      import { placeAddonFile } from ${JSON.stringify(addonModule)}
      const bytes = new Uint8Array(readFileSync(${JSON.stringify(source)}))
      const placed = placeAddonFile(${JSON.stringify(dir)}, 'x.node', bytes, ${JSON.stringify(sha256)})
      process.stdout.write(placed.path)
    `
    const runs = Array.from(
      { length: 4 },
      () =>
        new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
          const child = spawn(process.execPath, ['--input-type=module', '-e', script])
          let out = ''
          let err = ''
          child.stdout.on('data', (d) => {
            out += d
          })
          child.stderr.on('data', (d) => {
            err += d
          })
          child.on('close', (code) => resolve({ code, out, err }))
        }),
    )
    const results = await Promise.all(runs)
    for (const r of results) {
      assert.equal(r.code, 0, r.err)
      assert.equal(r.out, path.join(dir, `${sha256.slice(0, 16)}-x.node`))
    }
    assert.deepEqual(fs.readdirSync(dir), [`${sha256.slice(0, 16)}-x.node`])
    assert.ok(Buffer.from(bytes).equals(fs.readFileSync(results[0]!.out)))
  })

  it('refuses a directory, or a parent, writable by group or others', () => {
    const { bytes, sha256 } = fakeAddon()
    const dir = path.join(base, 'groupw')
    fs.mkdirSync(dir, { mode: 0o700 })
    fs.chmodSync(dir, 0o770)
    assert.throws(() => placeAddonFile(dir, 'x.node', bytes, sha256), UnsafeCacheDirError)
    assert.equal(fs.readdirSync(dir).length, 0)

    const parent = path.join(base, 'worldw')
    fs.mkdirSync(parent, { mode: 0o700 })
    fs.chmodSync(parent, 0o777)
    assert.throws(() => ensurePrivateDir(path.join(parent, 'native')), UnsafeCacheDirError)
  })

  it('refuses a directory owned by another user', { skip: !isRoot && 'needs root to chown' }, () => {
    const dir = path.join(base, 'foreign')
    fs.mkdirSync(dir, { mode: 0o700 })
    fs.chownSync(dir, 12345, 12345)
    assert.throws(() => ensurePrivateDir(dir), /owned by uid 12345/)
  })

  it('refuses a symlink owned by another user', { skip: !isRoot && 'needs root to chown' }, () => {
    const target = path.join(base, 'target')
    fs.mkdirSync(target, { mode: 0o700 })
    const link = path.join(base, 'planted')
    fs.symlinkSync(target, link)
    fs.lchownSync(link, 12345, 12345)
    assert.throws(() => ensurePrivateDir(link), UnsafeCacheDirError)
  })

  it('falls back to the next directory when one is unusable or the loader rejects the file', () => {
    const { bytes, sha256 } = fakeAddon()
    // A regular file where a directory should be: mkdir fails, like a read-only cache location.
    const blocked = path.join(base, 'blocked')
    fs.writeFileSync(blocked, '')
    const noexec = path.join(base, 'noexec')
    const good = path.join(base, 'good')
    const result = unpackAddon({
      name: 'x.node',
      bytes,
      sha256,
      dirs: [path.join(blocked, 'native'), noexec, good],
      load: (file) => {
        if (file.startsWith(noexec)) {
          throw new Error('failed to map segment from shared object')
        }
        return { loadedFrom: file }
      },
    })
    assert.equal(path.dirname(result.path), good)
    assert.deepEqual(result.loaded, { loadedFrom: result.path })
    assert.equal(result.skipped.length, 2)
    assert.match(result.skipped[1]!, /failed to map segment/)
  })

  it('reports every directory when none works', () => {
    const { bytes, sha256 } = fakeAddon()
    const blocked = path.join(base, 'blocked2')
    fs.writeFileSync(blocked, '')
    assert.throws(
      () =>
        unpackAddon({
          name: 'x.node',
          bytes,
          sha256,
          dirs: [path.join(blocked, 'a'), path.join(blocked, 'b')],
        }),
      (err: unknown) =>
        err instanceof AddonLoadError && err.message.includes('blocked2/a') && err.hint !== undefined,
    )
  })

  it('rejects names that could escape the directory', () => {
    const { bytes, sha256 } = fakeAddon(16)
    assert.throws(() => placeAddonFile(path.join(base, 'names'), '../x.node', bytes, sha256), AddonLoadError)
    assert.throws(
      () => placeAddonFile(path.join(base, 'names'), 'x.node', bytes, 'not-a-hash'),
      AddonLoadError,
    )
  })

  it('prefers PEERUP_CACHE_DIR, then a per-user temp directory', () => {
    const dirs = nativeCacheDirs({ PEERUP_CACHE_DIR: '/somewhere/cache', HOME: '/home/x' })
    assert.equal(dirs[0], '/somewhere/cache/native')
    assert.equal(dirs[1], path.join(os.tmpdir(), `peerup-${process.getuid?.()}`, 'native'))
    assert.equal(nativeCacheDirs({ HOME: '/home/x' })[0], '/home/x/.cache/peerup/native')
  })

  it('says so when asked for an embedded addon outside a single executable', () => {
    assert.throws(() => loadEmbeddedAddon('node_datachannel.node'), AddonNotEmbeddedError)
  })
})
