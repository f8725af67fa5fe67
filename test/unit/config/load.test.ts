import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import { describe, it } from 'node:test'
import { ConfigError, ConfigVersionError } from '../../../src/config/errors.ts'
import { loadNodeConfig, parseConfigText } from '../../../src/config/load.ts'
import { nodeConfigSchema, relayConfigSchema } from '../../../src/config/schema.ts'
import { FileModeError } from '../../../src/util/fs.ts'
import { initNodeDir, runCli, tempDir } from '../../helpers/cli.ts'

/** The CLI's entry, as `peerup` runs it from a checkout. */
const CLI = path.join(import.meta.dirname, '../../../bin/peerup.js')

const PEER = '12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN'

interface Case {
  name: string
  yaml: string
  line: number
  /** The key path the message must name ('' when it is about the document). */
  key: string
  /** A fragment the message must contain. */
  says: string
}

// Every case is a config a person could plausibly write; each must be refused with its line and key.
const invalid: Case[] = [
  {
    name: 'unclosed flow list',
    yaml: 'version: 1\nnetwork:\n  listen_addresses: [/ip4/0.0.0.0/tcp/0\n',
    line: 4,
    key: '',
    says: 'invalid YAML',
  },
  {
    name: 'tab indentation',
    yaml: 'version: 1\nrelay:\n\taddresses: []\n',
    line: 3,
    key: '',
    says: 'invalid YAML',
  },
  {
    name: 'duplicate key',
    yaml: 'version: 1\nnames: {}\nnames: {}\n',
    line: 3,
    key: '',
    says: 'invalid YAML',
  },
  {
    name: 'wrong type (string for boolean)',
    yaml: 'version: 1\nsecurity:\n  enable_connection_gating: "yes"\n',
    line: 3,
    key: 'security.enable_connection_gating',
    says: 'expected a boolean',
  },
  {
    name: 'unknown top-level key',
    yaml: 'version: 1\nrelays: []\n',
    line: 2,
    key: 'relays',
    says: 'unknown key',
  },
  {
    name: 'unknown nested key',
    yaml: `version: 1\nservices:\n  ssh:\n    local_address: localhost:22\n    allowed: []\n`,
    line: 5,
    key: 'services.ssh.allowed',
    says: 'unknown key',
  },
  {
    name: 'missing required key',
    yaml: 'version: 1\nservices:\n  ssh:\n    enabled: true\n',
    line: 3,
    key: 'services.ssh.local_address',
    says: 'missing',
  },
  {
    name: 'bad multiaddr',
    yaml: `version: 1\nrelay:\n  addresses:\n    - /ip4/198.18.0/tcp/7777/p2p/${PEER}\n`,
    line: 4,
    key: 'relay.addresses[0]',
    says: 'not a valid multiaddr',
  },
  {
    name: 'relay address without /p2p',
    yaml: 'version: 1\nrelay:\n  addresses: [/ip4/198.18.0.1/tcp/7777]\n',
    line: 3,
    key: 'relay.addresses[0]',
    says: '/p2p/<peer id>',
  },
  {
    name: 'bad duration',
    yaml: 'version: 1\nrelay:\n  reservation_interval: 2 minutes\n',
    line: 3,
    key: 'relay.reservation_interval',
    says: 'not a duration',
  },
  {
    name: 'duration too short',
    yaml: 'version: 1\nrelay:\n  reservation_interval: 1s\n',
    line: 3,
    key: 'relay.reservation_interval',
    says: 'too short',
  },
  {
    name: 'bad peer id in names',
    yaml: 'version: 1\nnames:\n  home: 12D3KooWnope\n',
    line: 3,
    key: 'names.home',
    says: 'not a valid peer id',
  },
  {
    name: 'bad name in names',
    yaml: `version: 1\nnames:\n  "my home": ${PEER}\n`,
    line: 3,
    key: 'names.my home',
    says: 'a name is',
  },
  {
    name: 'port out of range',
    yaml: 'version: 1\nservices:\n  ssh: { local_address: "localhost:70000" }\n',
    line: 3,
    key: 'services.ssh.local_address',
    says: 'host:port',
  },
  {
    name: 'allowed_peers names an unknown peer',
    yaml: 'version: 1\nservices:\n  ssh:\n    local_address: localhost:22\n    allowed_peers: [laptop]\n',
    line: 5,
    key: 'services.ssh.allowed_peers[0]',
    says: 'neither a peer id nor a name',
  },
  {
    name: 'bad service name',
    yaml: 'version: 1\nservices:\n  SSH Server: { local_address: "localhost:22" }\n',
    line: 3,
    key: 'services.SSH Server',
    says: 'service name',
  },
  {
    name: 'network name with capitals',
    yaml: 'version: 1\ndiscovery:\n  network: Home\n',
    line: 3,
    key: 'discovery.network',
    says: 'lowercase',
  },
  {
    name: 'unknown log level',
    yaml: 'version: 1\nlog:\n  level: verbose\n',
    line: 3,
    key: 'log.level',
    says: '"debug" or "info"',
  },
  {
    name: 'list instead of mapping',
    yaml: 'version: 1\nnetwork:\n  - /ip4/0.0.0.0/tcp/0\n',
    line: 2,
    key: 'network',
    says: 'got a list',
  },
  {
    name: 'ports: a range backwards',
    yaml: 'version: 1\nservices:\n  dev:\n    local_address: localhost:8000\n    ports: 8010-8000\n',
    line: 5,
    key: 'services.dev.ports',
    says: '"8010-8000" is not a port or a range of ports (write it like 8080, 8000-8010',
  },
  {
    name: 'ports: 0 in a list',
    yaml: 'version: 1\nservices:\n  dev:\n    local_address: localhost:8000\n    ports: [8001, 0]\n',
    line: 5,
    key: 'services.dev.ports',
    says: '"0" is not a port',
  },
  {
    name: 'socks beyond loopback without a login',
    yaml: 'version: 1\nsocks:\n  enabled: true\n  listen_address: 0.0.0.0:1080\n',
    line: 4,
    key: 'socks.listen_address',
    says: '0.0.0.0:1080 is not loopback: set socks.username and socks.password_file',
  },
  {
    name: 'socks username without password_file',
    yaml: 'version: 1\nsocks:\n  username: me\n',
    line: 3,
    key: 'socks.username',
    says: 'needs socks.password_file too: set both, or neither',
  },
  {
    name: 'the dashboard beyond loopback',
    yaml: 'version: 1\nui:\n  listen_address: 0.0.0.0:7780\n',
    line: 3,
    key: 'ui.listen_address',
    says: '0.0.0.0:7780 is not loopback: the dashboard serves only this machine (use 127.0.0.1:7780)',
  },
  {
    name: 'the dashboard on no address',
    yaml: 'version: 1\nui:\n  listen_address: 7780\n',
    line: 3,
    key: 'ui.listen_address',
    says: 'expected a string, got number 7780',
  },
  {
    name: 'the dashboard on a bare host',
    yaml: 'version: 1\nui:\n  listen_address: localhost\n',
    line: 3,
    key: 'ui.listen_address',
    says: 'must be host:port on loopback, like 127.0.0.1:7780, or "" for off',
  },
  { name: 'version as text', yaml: 'version: "1"\n', line: 1, key: 'version', says: 'expected a number' },
  { name: 'version 2', yaml: 'version: 2\n', line: 1, key: 'version', says: 'newer than this peerup' },
  {
    name: 'version missing',
    yaml: 'identity:\n  key_file: identity.key\n',
    line: 1,
    key: 'version',
    says: 'missing',
  },
  { name: 'not a mapping', yaml: '- version: 1\n', line: 1, key: '', says: 'must be a mapping' },
]

describe('invalid node configs', () => {
  for (const c of invalid) {
    it(`${c.name}: names line ${c.line}${c.key === '' ? '' : ` and ${c.key}`}`, () => {
      assert.throws(
        () => parseConfigText(c.yaml, '/etc/peerup/config.yaml', nodeConfigSchema),
        (err: unknown) => {
          assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`)
          const prefix =
            c.key === ''
              ? `/etc/peerup/config.yaml:${c.line}: `
              : `/etc/peerup/config.yaml:${c.line}: ${c.key}: `
          assert.ok(
            err.message.startsWith(prefix),
            `message ${JSON.stringify(err.message)} should start with ${JSON.stringify(prefix)}`,
          )
          assert.ok(
            err.message.includes(c.says),
            `message ${JSON.stringify(err.message)} should say ${JSON.stringify(c.says)}`,
          )
          assert.ok(!err.message.includes('\n'), 'one line')
          return true
        },
      )
    })
  }

  it('reports a newer version with an upgrade hint', () => {
    assert.throws(
      () => parseConfigText('version: 2\n', 'c.yaml', nodeConfigSchema),
      (err: unknown) => err instanceof ConfigVersionError && /upgrade peerup/.test(err.hint ?? ''),
    )
  })

  it('collects every problem, in line order', () => {
    const yaml = 'version: 1\nbogus: 1\nlog:\n  level: loud\nnames:\n  x: nope\n'
    assert.throws(
      () => parseConfigText(yaml, 'c.yaml', nodeConfigSchema),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError)
        assert.deepEqual(
          err.problems.map((p) => [p.line, p.key]),
          [
            [2, 'bogus'],
            [4, 'log.level'],
            [6, 'names.x'],
          ],
        )
        return true
      },
    )
  })
})

describe('valid node configs', () => {
  it('fills every default from `version: 1` alone', () => {
    const config = parseConfigText('version: 1\n', 'c.yaml', nodeConfigSchema)
    assert.equal(config.identity.key_file, 'identity.key')
    assert.equal(config.relay.reservation_interval, 120_000)
    assert.deepEqual(config.network.listen_addresses, ['/ip4/0.0.0.0/tcp/0', '/ip6/::/tcp/0', '/webrtc'])
    assert.equal(config.security.enable_connection_gating, true)
    assert.deepEqual(Object.keys(config.services), [])
  })

  it('looks names up without Object.prototype: constructor, __proto__ and toString are no names', () => {
    const config = parseConfigText('version: 1\n', 'c.yaml', nodeConfigSchema)
    for (const key of ['constructor', '__proto__', 'toString', 'hasOwnProperty']) {
      assert.equal(config.names[key], undefined, key)
      assert.equal(config.services[key], undefined, key)
    }
  })

  it('treats empty sections as absent', () => {
    const config = parseConfigText('version: 1\nrelay:\nservices:\nnames:\n', 'c.yaml', nodeConfigSchema)
    assert.deepEqual(config.relay.addresses, [])
    assert.deepEqual(Object.keys(config.services), [])
  })

  it('accepts names in allowed_peers and canonical forms of peer ids', () => {
    const yaml = `version: 1\nnames:\n  laptop: ${PEER}\nservices:\n  ssh:\n    local_address: "[::1]:22"\n    allowed_peers: [laptop, ${PEER}]\n`
    const config = parseConfigText(yaml, 'c.yaml', nodeConfigSchema)
    assert.deepEqual(config.services.ssh?.allowed_peers, ['laptop', PEER])
  })
})

describe('relay config', () => {
  it('reads ports: as sorted, merged ranges, and the gateway with its defaults', () => {
    const config = parseConfigText(
      'version: 1\nservices:\n  dev:\n    local_address: localhost:8000\n    ports: [9000-9010, "8001,8002", 9005-9020, 7000]\n  web: { local_address: localhost:80 }\nsocks:\n  enabled: true\n',
      'c.yaml',
      nodeConfigSchema,
    )
    assert.deepEqual(config.services.dev?.ports, [
      [7000, 7000],
      [8001, 8002],
      [9000, 9020],
    ])
    assert.deepEqual(config.services.web?.ports, [])
    assert.deepEqual(config.socks, {
      enabled: true,
      listen_address: '127.0.0.1:1080',
      http_listen_address: '127.0.0.1:1081',
      username: '',
      password_file: '',
    })
    const open = parseConfigText(
      'version: 1\nsocks:\n  enabled: true\n  listen_address: 0.0.0.0:1080\n  http_listen_address: ""\n  username: me\n  password_file: socks.pw\n',
      'c.yaml',
      nodeConfigSchema,
    )
    assert.equal(open.socks.http_listen_address, '')
  })

  it('parses sizes and durations', () => {
    const config = parseConfigText(
      'version: 1\nresources:\n  unknown_peer_data_limit: 1MiB\n  session_duration: 12h\n',
      'relay.yaml',
      relayConfigSchema,
    )
    assert.equal(config.resources.unknown_peer_data_limit, 1_048_576)
    assert.equal(config.resources.session_duration, 43_200_000)
    assert.equal(config.resources.session_data_limit, 0)
  })

  it('stun.alternate_listen_address: off by default, a host:port when set, refused otherwise', () => {
    assert.equal(
      parseConfigText('version: 1\n', 'relay.yaml', relayConfigSchema).stun.alternate_listen_address,
      '',
    )
    const set = parseConfigText(
      'version: 1\nstun:\n  alternate_listen_address: 0.0.0.0:3479\n',
      'relay.yaml',
      relayConfigSchema,
    )
    assert.equal(set.stun.alternate_listen_address, '0.0.0.0:3479')
    assert.throws(
      () =>
        parseConfigText(
          'version: 1\nstun:\n  alternate_listen_address: nowhere\n',
          'relay.yaml',
          relayConfigSchema,
        ),
      (err: unknown) =>
        (err as Error).message.startsWith('relay.yaml:3: stun.alternate_listen_address: must be host:port'),
    )
  })

  it('refuses a bad size with its line', () => {
    assert.throws(
      () =>
        parseConfigText(
          'version: 1\nresources:\n  session_data_limit: lots\n',
          'relay.yaml',
          relayConfigSchema,
        ),
      (err: unknown) =>
        (err as Error).message.startsWith('relay.yaml:3: resources.session_data_limit: "lots" is not a size'),
    )
  })
})

describe('config files', () => {
  it('refuses a config other users can write, with a chmod hint', async (t) => {
    const dir = await tempDir(t)
    const file = path.join(dir, 'config.yaml')
    await fs.writeFile(file, 'version: 1\n', { mode: 0o666 })
    await fs.chmod(file, 0o666)
    await assert.rejects(
      loadNodeConfig(file),
      (err: unknown) => err instanceof FileModeError && /chmod go-w/.test(err.hint ?? ''),
    )
  })

  it('`config validate` exits 1 with file:line and key for each invalid config', async (t) => {
    const root = await tempDir(t)
    const configFile = await initNodeDir(root)
    for (const c of invalid) {
      await fs.writeFile(configFile, c.yaml)
      const r = await runCli(['config', 'validate', '--config', configFile], root)
      assert.equal(r.code, 1, c.name)
      const lines = r.stderr.trimEnd().split('\n')
      assert.ok(lines[0]?.startsWith(`${configFile}:${c.line}: `), `${c.name}: ${r.stderr}`)
      assert.equal(r.stdout, '')
    }
  })

  it('every command refuses an invalid config in one line and exit 1', async (t) => {
    const root = await tempDir(t)
    const configFile = await initNodeDir(root)
    await fs.writeFile(configFile, 'version: 1\nrelay:\n  reservation_interval: soon\n')
    for (const args of [['status'], ['whoami'], ['service', 'list'], ['relay', 'list'], ['auth', 'list']]) {
      const r = await runCli([...args, '--config', configFile], root)
      assert.equal(r.code, 1, args.join(' '))
      assert.match(
        r.stderr,
        new RegExp(
          `^peerup: ${configFile.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}:3: relay\\.reservation_interval: "soon" is not a duration`,
        ),
      )
      assert.equal(r.stderr.trimEnd().split('\n').length, 1)
    }
  })

  it('refuses a config in a directory other users can write, with a chmod hint', async (t) => {
    const root = await tempDir(t)
    const configFile = await initNodeDir(root)
    const dir = path.dirname(configFile)
    await fs.chmod(dir, 0o777)
    t.after(() => fs.chmod(dir, 0o700).catch(() => {}))
    const r = await runCli(['config', 'validate', '--config', configFile], root)
    assert.equal(r.code, 1)
    assert.equal(r.stderr, `peerup: ${dir} has mode 0777, writable by other users — run: chmod go-w ${dir}\n`)
    // Group-writable is as bad; read and search by others is fine (as sshd's StrictModes).
    await fs.chmod(dir, 0o770)
    assert.equal((await runCli(['config', 'validate', '--config', configFile], root)).code, 1)
    await fs.chmod(dir, 0o755)
    assert.equal((await runCli(['config', 'validate', '--config', configFile], root)).code, 0)
  })

  it('refuses a config larger than 1 MiB at once, without parsing it (100,000 services)', async (t) => {
    const root = await tempDir(t)
    const configFile = await initNodeDir(root)
    const services = Array.from(
      { length: 100_000 },
      (_, i) => `  s${i}: { local_address: "localhost:${1000 + (i % 60_000)}" }\n`,
    )
    await fs.writeFile(configFile, `version: 1\nservices:\n${services.join('')}`)
    const r = await runCli(['config', 'validate', '--config', configFile], root)
    assert.equal(r.code, 1)
    assert.match(r.stderr, /^.*config\.yaml: \d+ bytes: larger than any peerup config \(at most 1 MiB\)$/m)
  })

  it('refuses nesting deeper than 32 levels, flow or block, with a line', async (t) => {
    const root = await tempDir(t)
    const configFile = await initNodeDir(root)
    const flow = `version: 1\nnames: ${'['.repeat(50_000)}${']'.repeat(50_000)}\n`
    const block = `version: 1\nnames:\n${Array.from({ length: 40 }, (_, i) => `${' '.repeat(2 * (i + 1))}k${i}:\n`).join('')}`
    // Quoted brackets and apostrophes in plain text are not nesting.
    const fine = `version: 1\nnames: {}\n# it's [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\n`
    for (const [text, line] of [
      [flow, 2],
      [block, 34],
    ] as const) {
      await fs.writeFile(configFile, text)
      const r = await runCli(['config', 'validate', '--config', configFile], root)
      assert.equal(r.code, 1)
      assert.match(r.stderr, new RegExp(`config\\.yaml:${line}: nested more than 32 levels deep`))
    }
    assert.deepEqual(Object.keys(parseConfigText(fine, 'c.yaml', nodeConfigSchema).names), [])
  })

  it('a command validating the largest config it accepts still stops on SIGTERM', {
    timeout: 60_000,
  }, async (t) => {
    const root = await tempDir(t)
    const configFile = await initNodeDir(root)
    // Just under 1 MiB: the most work a config can make (a few seconds on a loaded 2-core box).
    const services = Array.from(
      { length: 15_000 },
      (_, i) => `  s${i}: { local_address: "localhost:${1000 + i}" }\n`,
    )
    await fs.writeFile(configFile, `version: 1\nservices:\n${services.join('')}`)
    assert.ok((await fs.stat(configFile)).size < 1024 * 1024)
    const child = spawn(process.execPath, [CLI, 'config', 'validate', '--config', configFile], {
      stdio: ['ignore', 'ignore', 'pipe'],
    })
    const exited = once(child, 'exit')
    // Once it has started (Node is up and reading the file), ask it to stop as `timeout` would.
    await once(child, 'spawn')
    child.kill('SIGTERM')
    const [code, signal] = (await exited) as [number | null, string | null]
    assert.ok(code === 143 || code === 1 || code === 0 || signal === 'SIGTERM', `exit ${code} ${signal}`)
  })

  it('a file with mode 0666 is refused by `config validate` with exit 1', async (t) => {
    const root = await tempDir(t)
    const configFile = await initNodeDir(root)
    await fs.chmod(configFile, 0o666)
    const r = await runCli(['config', 'validate', '--config', configFile], root)
    assert.equal(r.code, 1)
    assert.match(r.stderr, /mode 0666, writable by other users — run: chmod go-w/)
  })
})
