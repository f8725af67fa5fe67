/**
 * config.yaml's `proxies:` and `proxy.connect_timeout`: what the schema takes and refuses (with
 * the key it names), how a new proxy is checked before anything is written, and the edits
 * `peerup proxy add|remove|enable|disable` make, comments kept.
 */

import assert from 'node:assert/strict'
import * as fs from 'node:fs/promises'
import * as net from 'node:net'
import * as path from 'node:path'
import { describe, it } from 'node:test'
import { ConfigError } from '../../../src/config/errors.ts'
import { parseConfigText } from '../../../src/config/load.ts'
import {
  addProxyToFile,
  checkNewProxy,
  listProxies,
  parseBind,
  removeProxyFromFile,
  setProxyEnabledInFile,
} from '../../../src/config/proxies.ts'
import { nodeConfigSchema } from '../../../src/config/schema.ts'
import { ConflictError, NotFoundError, UsageError } from '../../../src/errors.ts'
import { probeListen } from '../../../src/util/port.ts'
import { tempDir } from '../../helpers/cli.ts'

const PEER = '12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN'

const parse = (yaml: string) => parseConfigText(`version: 1\n${yaml}`, 'config.yaml', nodeConfigSchema)

/** The ConfigError `yaml` is refused with. */
function refusal(yaml: string): ConfigError {
  try {
    parse(yaml)
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err))
    return err
  }
  assert.fail(`accepted: ${yaml}`)
}

describe('proxies: in config.yaml', () => {
  it('takes a proxy and writes its bind as host:port (a bare port, even a YAML number, is 127.0.0.1)', () => {
    const config = parse(
      [
        `names: { home: ${PEER} }`,
        'proxies:',
        '  home-ssh: { peer: home, service: ssh, bind: 2222 }',
        "  web: { peer: home, service: web, bind: '8080', enabled: false }",
        `  v6: { peer: ${PEER}, service: ssh, bind: '[::1]:2223' }`,
        '  any: { peer: home, service: ssh, bind: 0.0.0.0:2224 }',
      ].join('\n'),
    )
    assert.deepEqual(listProxies(config), [
      { name: 'home-ssh', peer: 'home', service: 'ssh', bind: '127.0.0.1:2222', enabled: true },
      { name: 'web', peer: 'home', service: 'web', bind: '127.0.0.1:8080', enabled: false },
      { name: 'v6', peer: PEER, service: 'ssh', bind: '[::1]:2223', enabled: true },
      { name: 'any', peer: 'home', service: 'ssh', bind: '0.0.0.0:2224', enabled: true },
    ])
    assert.equal(config.proxy.connect_timeout, 30_000)
  })

  it('takes a peer name that is not under names: (it is resolved when used)', () => {
    assert.equal(parse('proxies:\n  p: { peer: gone, service: ssh, bind: 2222 }').proxies.p?.peer, 'gone')
  })

  const cases: Array<[string, string, RegExp]> = [
    [
      'proxies:\n  p: { peer: home, service: ssh }',
      'proxies.p.bind',
      /missing \(\[host:\]port to listen on is required/,
    ],
    ['proxies:\n  p: { peer: home, service: ssh, bind: [22] }', 'proxies.p.bind', /is not \[host:\]port/],
    ['proxies:\n  p: { peer: home, service: ssh, bind: 0 }', 'proxies.p.bind', /port from 1 to 65535/],
    ['proxies:\n  p: { peer: home, service: ssh, bind: 70000 }', 'proxies.p.bind', /port from 1 to 65535/],
    ['proxies:\n  p: { peer: home, service: ssh, bind: "a b:22" }', 'proxies.p.bind', /\[host:\]port/],
    ['proxies:\n  p: { peer: home, service: SSH, bind: 2222 }', 'proxies.p.service', /service name/],
    [
      'proxies:\n  p: { peer: "../x", service: ssh, bind: 2222 }',
      'proxies.p.peer',
      /name from names: or a peer id/,
    ],
    ['proxies:\n  p: { peer: home, service: ssh, bind: 2222, port: 1 }', 'proxies.p', /port/],
    ['proxies:\n  "-p": { peer: home, service: ssh, bind: 2222 }', 'proxies', /proxy name/],
    [
      'proxies:\n  a: { peer: home, service: ssh, bind: 2222 }\n  b: { peer: home, service: web, bind: "127.0.0.1:2222" }',
      'proxies.b.bind',
      /127\.0\.0\.1:2222 is already the bind of proxy a/,
    ],
    ['proxy:\n  connect_timeout: 500ms', 'proxy.connect_timeout', /too short \(at least 1s\)/],
    ['proxy:\n  connect_timeout: soon', 'proxy.connect_timeout', /not a duration/],
  ]
  for (const [yaml, key, says] of cases) {
    it(`refuses ${JSON.stringify(yaml.split('\n').pop())}, naming ${key}`, () => {
      const err = refusal(yaml)
      assert.match(err.message, new RegExp(`${key.replaceAll('.', '\\.')}`), err.message)
      assert.match(err.message, says)
    })
  }
})

describe('a new proxy is checked before anything is written', () => {
  const config = parse(
    `names: { home: ${PEER} }\nproxies:\n  taken: { peer: home, service: ssh, bind: 2222 }`,
  )

  it('normalises it: the bind defaults to a free port of 127.0.0.1, enabled to true', () => {
    assert.deepEqual(checkNewProxy(config, { name: 'p', peer: 'home', service: 'ssh' }), {
      name: 'p',
      peer: 'home',
      service: 'ssh',
      enabled: true,
      listen: { host: '127.0.0.1', port: 0 },
    })
    assert.deepEqual(
      checkNewProxy(config, { name: 'p', peer: PEER, service: 'ssh', bind: '[::1]:7000' }).listen,
      {
        host: '::1',
        port: 7000,
      },
    )
  })

  const refused: Array<[string, Parameters<typeof checkNewProxy>[1], new (...a: never[]) => Error, RegExp]> =
    [
      ['a bad name', { name: 'a/b', peer: 'home', service: 'ssh' }, UsageError, /invalid proxy name "a\/b"/],
      [
        'a taken name',
        { name: 'taken', peer: 'home', service: 'ssh' },
        ConflictError,
        /a proxy named taken already exists/,
      ],
      ['an unknown peer', { name: 'p', peer: 'away', service: 'ssh' }, NotFoundError, /unknown peer "away"/],
      [
        'a bad service',
        { name: 'p', peer: 'home', service: 'a b' },
        UsageError,
        /invalid service name "a b"/,
      ],
      [
        'a bad bind',
        { name: 'p', peer: 'home', service: 'ssh', bind: 'localhost:' },
        UsageError,
        /invalid bind address/,
      ],
      [
        'a taken bind',
        { name: 'p', peer: 'home', service: 'ssh', bind: '2222' },
        ConflictError,
        /proxy taken already listens on 127\.0\.0\.1:2222/,
      ],
    ]
  for (const [what, input, kind, says] of refused) {
    it(`refuses ${what}`, () => {
      assert.throws(
        () => checkNewProxy(config, input),
        (err: unknown) => {
          assert.ok(err instanceof kind, String(err))
          assert.match((err as Error).message, says)
          assert.ok((err as UsageError).hint !== undefined, 'it says what to do')
          return true
        },
      )
    })
  }

  it('parseBind reads [host:]port', () => {
    assert.deepEqual(parseBind('2222'), { host: '127.0.0.1', port: 2222 })
    assert.deepEqual(parseBind('0.0.0.0:2222'), { host: '0.0.0.0', port: 2222 })
    assert.deepEqual(parseBind(undefined), { host: '127.0.0.1', port: 0 })
    assert.throws(() => parseBind('22 22'), UsageError)
    assert.throws(() => parseBind('65536'), UsageError)
  })
})

describe('editing proxies: in the file', () => {
  it('adds, switches off and on, and removes a proxy, keeping the comments', async (t) => {
    const dir = await tempDir(t)
    const file = path.join(dir, 'config.yaml')
    const original = `# my node\nversion: 1\nnames:\n  home: ${PEER} # the house\n`
    await fs.writeFile(file, original, { mode: 0o600 })
    const checked = checkNewProxy(parse(`names: { home: ${PEER} }`), {
      name: 'p',
      peer: 'home',
      service: 'ssh',
    })
    const added = await addProxyToFile(file, checked, { host: '127.0.0.1', port: 2222 })
    assert.deepEqual(added, {
      name: 'p',
      peer: 'home',
      service: 'ssh',
      bind: '127.0.0.1:2222',
      enabled: true,
    })
    const text = await fs.readFile(file, 'utf8')
    assert.match(text, /^# my node\n/)
    assert.match(text, /# the house/)
    assert.match(text, /proxies:\n {2}p:\n {4}peer: home\n {4}service: ssh\n {4}bind: 127\.0\.0\.1:2222\n/)
    // Checked again against the file, under its lock: a second add of the same name is refused.
    await assert.rejects(addProxyToFile(file, checked, { host: '127.0.0.1', port: 2223 }), ConflictError)
    assert.equal((await setProxyEnabledInFile(file, 'p', false)).enabled, false)
    assert.match(await fs.readFile(file, 'utf8'), / {4}enabled: false\n/)
    assert.equal((await setProxyEnabledInFile(file, 'p', true)).enabled, true)
    await assert.rejects(setProxyEnabledInFile(file, 'q', true), (err: unknown) => {
      assert.ok(err instanceof NotFoundError)
      assert.equal(`${err.message} — ${err.hint}`, 'no proxy named q — proxies: p')
      return true
    })
    assert.equal((await removeProxyFromFile(file, 'p')).bind, '127.0.0.1:2222')
    await assert.rejects(removeProxyFromFile(file, 'p'), NotFoundError)
    assert.match(await fs.readFile(file, 'utf8'), /# the house/)
  })
})

describe('probeListen', () => {
  it('picks a free port for port 0, and says a port in use is in use', async () => {
    const picked = await probeListen({ host: '127.0.0.1', port: 0 })
    assert.ok(picked.port > 0)
    const server = net.createServer()
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const { port } = server.address() as net.AddressInfo
    try {
      await assert.rejects(probeListen({ host: '127.0.0.1', port }), (err: unknown) => {
        assert.ok(err instanceof ConflictError)
        assert.equal(err.message, `cannot listen on 127.0.0.1:${port}: the port is in use`)
        return true
      })
    } finally {
      await new Promise((resolve) => server.close(resolve))
    }
    await assert.rejects(
      probeListen({ host: '198.18.0.77', port: 0 }),
      /198\.18\.0\.77 is not an address of this machine/,
    )
  })
})
