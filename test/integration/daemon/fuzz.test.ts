/**
 * Random input at every API route of a real daemon and at every key of both configs, from a fixed
 * seed and in bounded numbers: random bytes and random JSON as bodies, random path and query
 * parameters, random YAML values under each key. Every answer must be a clean refusal (a 4xx, or
 * a 502 for a peer that cannot be reached, with `{"error": …}`) or a success, never a 500 or a
 * hang, and the daemon must still answer afterwards; every config must load or fail with a
 * ConfigError, never another exception.
 */

import assert from 'node:assert/strict'
import * as http from 'node:http'
import { after, before, describe, it } from 'node:test'
import { stringify } from 'yaml'
import { ConfigError } from '../../../src/config/errors.ts'
import { parseConfigText } from '../../../src/config/load.ts'
import { nodeConfigSchema, relayConfigSchema } from '../../../src/config/schema.ts'
import { tempDir } from '../../helpers/cli.ts'
import { startTestDaemon, type TestDaemon } from '../../helpers/daemon.ts'
import { startRelayAndPair, type TestRelay } from '../../helpers/mesh.ts'

/** mulberry32: a small PRNG, so every run throws the same input. */
function prng(seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (s + 0x6d2b79f5) >>> 0
    let t = s
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** The field names the API's bodies use: random JSON hits them often, not only by chance. */
const FIELDS = [
  'peer',
  'service',
  'listen',
  'name',
  'localAddress',
  'allowedPeers',
  'ttlMs',
  'count',
  'intervalMs',
  'untilDirect',
  'deadlineMs',
  'comment',
  '__proto__',
  'constructor',
]

/** Strings a careless or hostile client sends. */
const NASTY = [
  '',
  ' ',
  '../../x',
  'a\nb',
  '__proto__',
  'constructor',
  'toString',
  '%00',
  '\u0000',
  '😀',
  'x'.repeat(5_000),
  '12D3KooW',
  '127.0.0.1:0',
  'localhost:99999',
  '/ip4/127.0.0.1/tcp/1',
  '-1',
  'true',
  'null',
]

function generator(random: () => number) {
  const int = (n: number): number => Math.floor(random() * n)
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)] as T
  const text = (): string =>
    random() < 0.5
      ? pick(NASTY)
      : Array.from({ length: int(40) }, () => String.fromCodePoint(int(0x2fff))).join('')
  const number = (): number =>
    pick([0, -1, 1, 999, 1000, 86_400_001, 2 ** 53, -(2 ** 31), 0.5, 1e308, int(100_000)])
  const json = (depth: number): unknown => {
    const kind = int(depth > 3 ? 4 : 6)
    switch (kind) {
      case 0:
        return text()
      case 1:
        return number()
      case 2:
        return pick([true, false, null])
      case 3:
        return random() < 0.5 ? text() : number()
      case 4:
        return Array.from({ length: int(5) }, () => json(depth + 1))
      default: {
        const o: Record<string, unknown> = {}
        for (let i = int(6); i > 0; i--) {
          Object.defineProperty(o, random() < 0.7 ? pick(FIELDS) : text(), {
            value: json(depth + 1),
            enumerable: true,
            configurable: true,
            writable: true,
          })
        }
        return o
      }
    }
  }
  const bytes = (): Buffer => Buffer.from(Array.from({ length: int(300) }, () => int(256)))
  return { int, pick, text, json, bytes }
}

/** One request with a bound: the answer's status and body, or 'streaming' for a 200 that goes on. */
function request(
  socketPath: string,
  cookie: string,
  options: { method: string; path: string; body?: Buffer; upgrade?: string },
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({
      socketPath,
      method: options.method,
      path: options.path,
      headers: {
        Authorization: `Bearer ${cookie}`,
        ...(options.body === undefined
          ? {}
          : { 'Content-Type': 'application/json', 'Content-Length': String(options.body.length) }),
        ...(options.upgrade === undefined ? {} : { Connection: 'Upgrade', Upgrade: options.upgrade }),
      },
      signal: AbortSignal.timeout(15_000),
    })
    req.once('response', (res) => {
      const type = String(res.headers['content-type'] ?? '')
      if (res.statusCode === 200 && type.includes('ndjson')) {
        // A stream (events, an invite that began): it answered; that is all this test asks.
        res.destroy()
        resolve({ status: 200, body: '' })
        return
      }
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.once('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }))
      res.once('error', reject)
    })
    req.once('upgrade', (_res, socket) => {
      socket.destroy()
      resolve({ status: 101, body: '' })
    })
    req.once('error', reject)
    req.end(options.body)
  })
}

describe('random input', { timeout: 180_000 }, () => {
  const cleanups: Array<() => Promise<unknown>> = []
  let relay: TestRelay
  let daemon: TestDaemon
  let cookie: string

  before(async () => {
    const root = await tempDir({ after: (fn) => cleanups.push(fn) })
    const mesh = await startRelayAndPair(root)
    relay = mesh.relay
    cleanups.unshift(() => relay.stop())
    daemon = await startTestDaemon(mesh.a.configFile)
    cleanups.unshift(() => daemon.stop())
    cookie = (
      await import('node:fs/promises').then((fs) => fs.readFile(daemon.ready.cookieFile, 'utf8'))
    ).trim()
  })

  after(async () => {
    for (const fn of cleanups) {
      await fn().catch(() => {})
    }
  })

  it('every API route answers random bodies and parameters with a clean refusal, and the daemon still answers', async () => {
    const g = generator(prng(0x5eed))
    // POST /v1/shutdown does what it says whatever the body: it is the one route left out.
    const routes = daemon.ready.routes.filter((r) => !r.path.endsWith('/shutdown'))
    assert.ok(routes.length >= 15, `${routes.length} routes`)
    const seen = new Map<string, Set<number>>()
    const check = (what: string, answer: { status: number; body: string }): void => {
      const statuses = seen.get(what) ?? new Set()
      statuses.add(answer.status)
      seen.set(what, statuses)
      assert.ok(answer.status !== 500 && answer.status < 503, `${what}: ${answer.status} ${answer.body}`)
      if (answer.status >= 400) {
        const parsed = JSON.parse(answer.body) as { error?: unknown }
        assert.equal(typeof parsed.error, 'string', `${what}: ${answer.body}`)
        assert.ok(!(parsed.error as string).includes('\n    at '), `${what}: a stack trace`)
      }
    }
    for (const route of routes) {
      for (let i = 0; i < 40; i++) {
        const path = route.path
          .split('/')
          .map((segment) => (segment.startsWith(':') ? encodeURIComponent(g.text()) : segment))
          .join('/')
        const body =
          route.method === 'GET' && i % 4 !== 0
            ? undefined
            : i % 3 === 0
              ? g.bytes()
              : Buffer.from(JSON.stringify(g.json(0)) ?? 'null')
        const what = `${route.method} ${route.path}`
        check(
          what,
          await request(daemon.ready.socketPath, cookie, {
            method: route.method,
            path,
            ...(body === undefined ? {} : { body }),
          }),
        )
      }
    }
    for (const upgrade of daemon.ready.upgrades) {
      for (let i = 0; i < 40; i++) {
        const query = `?peer=${encodeURIComponent(g.text())}&service=${encodeURIComponent(g.text())}`
        const answer = await request(daemon.ready.socketPath, cookie, {
          method: 'POST',
          path: `${upgrade.path}${i % 5 === 0 ? '' : query}`,
          upgrade: upgrade.protocol,
        })
        check(`upgrade ${upgrade.path}`, answer)
        assert.notEqual(answer.status, 101, 'a random peer and service were dialled')
      }
    }
    // Any `?network=` on any route: a clean refusal (400 or 404), never a failure of the daemon.
    for (const route of routes.filter((r) => r.method === 'GET')) {
      for (let i = 0; i < 10; i++) {
        const path = route.path.replace(/:\w+/g, 'x')
        const answer = await request(daemon.ready.socketPath, cookie, {
          method: 'GET',
          path: `${path}?network=${encodeURIComponent(g.text())}`,
        })
        check(`GET ${route.path}?network=…`, answer)
        assert.ok(
          answer.status === 400 || answer.status === 404,
          `${route.path}: ${answer.status} ${answer.body}`,
        )
      }
    }
    const status = await request(daemon.ready.socketPath, cookie, { method: 'GET', path: '/v1/status' })
    assert.equal(status.status, 200)
    // The input reached the routes' own checks, not only the JSON parser.
    assert.ok([...seen.values()].some((s) => s.has(400)))
  })

  it('names that are object internals, and service names config.yaml refuses, are refused', async () => {
    for (const name of ['__proto__', 'constructor', 'toString']) {
      const r = await request(daemon.ready.socketPath, cookie, { method: 'GET', path: `/v1/resolve/${name}` })
      assert.ok(r.status === 400 || r.status === 404, `resolve ${name}: ${r.status} ${r.body}`)
    }
    for (const name of ['../../x', 'a\nb', 'a/b', '']) {
      const body = Buffer.from(JSON.stringify({ name, localAddress: '127.0.0.1:22' }))
      const r = await request(daemon.ready.socketPath, cookie, { method: 'POST', path: '/v1/expose', body })
      assert.equal(r.status, 400, `expose ${JSON.stringify(name)}: ${r.body}`)
      assert.match(JSON.parse(r.body).error, /^name: /)
    }
  })

  it('every config key takes random YAML values without anything but a ConfigError', () => {
    const g = generator(prng(0xc0ff1e))
    for (const [name, schema] of [
      ['config.yaml', nodeConfigSchema],
      ['relay-server.yaml', relayConfigSchema],
    ] as const) {
      const defaults = schema.parse({ version: 1 }) as Record<string, unknown>
      const keys = leafPaths(defaults)
      assert.ok(keys.length >= 15, `${name}: ${keys.length} keys`)
      let loaded = 0
      let refused = 0
      for (const key of keys) {
        for (let i = 0; i < 25; i++) {
          const doc: Record<string, unknown> = { version: 1 }
          setPath(doc, key, g.json(1))
          let text: string
          try {
            text = stringify(doc)
          } catch {
            continue
          }
          try {
            parseConfigText(text, name, schema)
            loaded++
          } catch (err) {
            assert.ok(err instanceof ConfigError, `${name} ${key.join('.')}: ${(err as Error).stack}`)
            refused++
          }
        }
      }
      // And whole files of random bytes.
      for (let i = 0; i < 100; i++) {
        try {
          parseConfigText(g.bytes().toString('latin1'), name, schema)
        } catch (err) {
          assert.ok(err instanceof ConfigError, `${name} random bytes: ${(err as Error).stack}`)
        }
      }
      assert.ok(
        refused > 0 && refused + loaded > keys.length * 20,
        `${name}: ${loaded} loaded, ${refused} refused`,
      )
    }
  })
})

/** Every key path of `obj` that holds a value rather than a section (`['relay', 'addresses']`). */
function leafPaths(obj: Record<string, unknown>, prefix: string[] = []): string[][] {
  return Object.entries(obj).flatMap(([k, v]) =>
    k !== 'version' && v !== null && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length > 0
      ? leafPaths(v as Record<string, unknown>, [...prefix, k])
      : k === 'version'
        ? []
        : [[...prefix, k]],
  )
}

function setPath(doc: Record<string, unknown>, key: string[], value: unknown): void {
  let at = doc
  for (const part of key.slice(0, -1)) {
    at[part] ??= {}
    at = at[part] as Record<string, unknown>
  }
  at[key.at(-1) as string] = value
}
