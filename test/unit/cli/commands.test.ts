import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import { describe, it } from 'node:test'
import { promisify } from 'node:util'
import { privateKeyFromProtobuf } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { VERSION } from '../../../src/version.ts'
import { initNodeDir, RELAY_ADDR, runCli, tempDir } from '../../helpers/cli.ts'

const PEER = '12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN'

describe('peerup init', () => {
  it('creates identity, config and authorized_keys with private modes', async (t) => {
    const root = await tempDir(t)
    const dir = path.join(root, 'n')
    const r = await runCli(
      ['init', '--non-interactive', '--dir', dir, '--relay', RELAY_ADDR, '--network', 'lab', '--json'],
      root,
    )
    assert.equal(r.code, 0, r.stderr)
    const out = JSON.parse(r.stdout)
    assert.equal(out.createdIdentity, true)
    assert.equal((await fs.stat(dir)).mode & 0o777, 0o700)
    for (const f of ['identity.key', 'config.yaml', 'authorized_keys']) {
      assert.equal((await fs.stat(path.join(dir, f))).mode & 0o777, 0o600, f)
    }
    // libp2p protobuf form: KeyType Ed25519 (field 1 = 1), Data = 64 bytes (field 2), as go-libp2p writes it.
    const key = await fs.readFile(path.join(dir, 'identity.key'))
    assert.deepEqual([...key.subarray(0, 4)], [0x08, 0x01, 0x12, 0x40])
    assert.equal(key.length, 68)
    assert.equal(peerIdFromPrivateKey(privateKeyFromProtobuf(key)).toString(), out.peerId)
    const who = await runCli(['whoami', '--config', path.join(dir, 'config.yaml')], root)
    assert.equal(who.stdout, `${out.peerId}\n`)
  })

  it('refuses to overwrite, and leaves everything as it was', async (t) => {
    const root = await tempDir(t)
    const config = await initNodeDir(root)
    const before = await Promise.all(
      ['config.yaml', 'identity.key', 'authorized_keys'].map((f) =>
        fs.readFile(path.join(path.dirname(config), f)),
      ),
    )
    const r = await runCli(['init', '--non-interactive', '--dir', path.dirname(config)], root)
    assert.equal(r.code, 1)
    assert.match(r.stderr, /already exists — peerup init never overwrites/)
    const after = await Promise.all(
      ['config.yaml', 'identity.key', 'authorized_keys'].map((f) =>
        fs.readFile(path.join(path.dirname(config), f)),
      ),
    )
    assert.deepEqual(after, before)
  })

  it('keeps an identity that is already there', async (t) => {
    const root = await tempDir(t)
    const config = await initNodeDir(root)
    const dir = path.dirname(config)
    const id = (await runCli(['whoami', '--config', config], root)).stdout
    await fs.rm(config)
    const r = await runCli(['init', '--non-interactive', '--dir', dir, '--json'], root)
    assert.equal(r.code, 0, r.stderr)
    assert.equal(JSON.parse(r.stdout).createdIdentity, false)
    assert.equal(`${JSON.parse(r.stdout).peerId}\n`, id)
    assert.match(r.stderr, /no relay configured/)
  })

  it('rejects a bad relay address as a usage error, writing nothing', async (t) => {
    const root = await tempDir(t)
    for (const bad of [
      '/ip4/198.18.0.1/tcp/7777',
      'relay.example.com:7777',
      `/ip4/198.18.0.1/tcp/7777/p2p/${PEER.slice(0, 20)}`,
    ]) {
      const r = await runCli(
        ['init', '--non-interactive', '--dir', path.join(root, 'n'), '--relay', bad],
        root,
      )
      assert.equal(r.code, 2, bad)
      assert.match(
        r.stderr,
        /^peerup: invalid relay address: .* — copy the address `peerup relay info` prints/,
      )
    }
    await assert.rejects(fs.stat(path.join(root, 'n', 'config.yaml')))
  })

  it('asks for relays and the network on a terminal, re-asking after a bad address', async (t) => {
    const root = await tempDir(t)
    const dir = path.join(root, 'n')
    const answers = ['/ip4/198.18.0.1/tcp/7777', RELAY_ADDR, '', 'lab', ''].join('\n')
    const r = await runCli(['init', '--dir', dir, '--json'], root, { stdin: answers, tty: true })
    assert.equal(r.code, 0, r.stderr)
    assert.match(r.stderr, /Relay address/)
    assert.match(r.stderr, /does not end in \/p2p\/<peer id>/)
    const status = JSON.parse(
      (await runCli(['status', '--json', '--config', path.join(dir, 'config.yaml')], root)).stdout,
    )
    assert.deepEqual(
      status.relays.map((x: { address: string }) => x.address),
      [RELAY_ADDR],
    )
    assert.equal(status.network, 'lab')
  })

  it('uses $PEERUP_HOME when no --dir is given', async (t) => {
    const root = await tempDir(t)
    const home = path.join(root, 'ph')
    const r = await runCli(['init', '--non-interactive'], root, { env: { PEERUP_HOME: home } })
    assert.equal(r.code, 0, r.stderr)
    await fs.stat(path.join(home, 'config.yaml'))
    const s = await runCli(['status', '--json'], root, { env: { PEERUP_HOME: home } })
    assert.equal(JSON.parse(s.stdout).files.config, path.join(home, 'config.yaml'))
  })
})

describe('peerup auth add --name', () => {
  it('authorizes the peer and records its name, which commands then take', async (t) => {
    const root = await tempDir(t)
    const config = await initNodeDir(root)
    const r = await runCli(['auth', 'add', PEER, '--name', 'home', '--config', config, '--json'], root)
    assert.equal(r.code, 0, r.stderr)
    assert.equal(JSON.parse(r.stdout).name, 'home')
    const resolved = await runCli(['resolve', 'home', '--config', config], root)
    assert.equal(resolved.stdout.trim().split(/\s+/).includes(PEER), true, resolved.stdout)
    const listed = await runCli(['auth', 'list', '--config', config, '--json'], root)
    assert.equal(JSON.parse(listed.stdout)[0].peerId, PEER)
  })

  it('refuses a name taken by another peer, writing nothing', async (t) => {
    const root = await tempDir(t)
    const config = await initNodeDir(root)
    assert.equal((await runCli(['auth', 'add', PEER, '--name', 'home', '--config', config], root)).code, 0)
    const keys = path.join(path.dirname(config), 'authorized_keys')
    const before = await Promise.all([fs.readFile(config, 'utf8'), fs.readFile(keys, 'utf8')])
    const other = '12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK'
    const r = await runCli(['auth', 'add', other, '--name', 'home', '--config', config], root)
    assert.equal(r.code, 1)
    assert.match(r.stderr, /already used for/)
    assert.equal(r.stderr.trim().split('\n').length, 1)
    assert.deepEqual(await Promise.all([fs.readFile(config, 'utf8'), fs.readFile(keys, 'utf8')]), before)
  })

  it('refuses a malformed name as a usage error', async (t) => {
    const root = await tempDir(t)
    const config = await initNodeDir(root)
    const r = await runCli(['auth', 'add', PEER, '--name', 'no spaces', '--config', config], root)
    assert.equal(r.code, 2)
    assert.match(r.stderr, /invalid name/)
  })
})

describe('config search order', () => {
  it('PEERUP_HOME, then ./peerup.yaml, then ~/.config/peerup', async (t) => {
    const root = await tempDir(t)
    const ids: Record<string, string> = {}
    for (const where of ['ph', 'cwd', 'xdg']) {
      const r = await runCli(['init', '--non-interactive', '--dir', path.join(root, where), '--json'], root)
      ids[where] = JSON.parse(r.stdout).peerId
    }
    const cwd = path.join(root, 'work')
    await fs.mkdir(cwd)
    await fs.mkdir(path.join(root, '.config'))
    await fs.rename(path.join(root, 'xdg'), path.join(root, '.config', 'peerup'))
    // ./peerup.yaml names its files relative to its own directory.
    await fs.copyFile(path.join(root, 'cwd', 'config.yaml'), path.join(cwd, 'peerup.yaml'))
    await fs.copyFile(path.join(root, 'cwd', 'identity.key'), path.join(cwd, 'identity.key'))
    const who = async (env: Record<string, string> = {}) =>
      (await runCli(['whoami'], root, { cwd, env })).stdout.trim()
    assert.equal(await who({ PEERUP_HOME: path.join(root, 'ph') }), ids.ph)
    assert.equal(await who(), ids.cwd)
    await fs.rm(path.join(cwd, 'peerup.yaml'))
    assert.equal(await who(), ids.xdg)
    await fs.rm(path.join(root, '.config'), { recursive: true })
    const r = await runCli(['whoami'], root, { cwd })
    assert.equal(r.code, 1)
    assert.match(r.stderr, /no node config found .* — run `peerup init` first/)
  })
})

describe('config validate FILE and config apply FILE', () => {
  it('follow one rule: FILE from the current directory, checked where it will be used', async (t) => {
    const root = await tempDir(t)
    const config = await initNodeDir(root)
    const node = path.dirname(config)
    const work = path.join(root, 'work')
    await fs.mkdir(work)
    // A scratch directory anyone may write to, and a copy with loose modes: neither matters, since
    // the text is what is swapped in, beside the config in use.
    await fs.chmod(work, 0o777)
    const text = await fs.readFile(config, 'utf8')
    const good = text.replace(/key_file: identity\.key/, 'key_file: ./identity.key')
    assert.notEqual(good, text)
    await fs.writeFile(path.join(work, 'good.yaml'), good)
    await fs.chmod(path.join(work, 'good.yaml'), 0o666)
    await fs.writeFile(
      path.join(work, 'bad.yaml'),
      text.replace(/key_file: identity\.key/, 'key_file: other.key'),
    )
    const peerId = (await runCli(['whoami', '--config', config], root)).stdout.trim()
    const run = (args: string[]) => runCli([...args, '--config', config], root, { cwd: work })

    const valid = await run(['config', 'validate', 'good.yaml', '--json'])
    assert.equal(valid.code, 0, valid.stderr)
    assert.deepEqual(JSON.parse(valid.stdout), { file: path.join(work, 'good.yaml'), valid: true, peerId })

    // What the bad one names is looked for in the config's directory, by both, in the same words.
    const refused = await run(['config', 'validate', 'bad.yaml'])
    const problems = (r: { stderr: string }) => r.stderr.split('\n').filter((l) => !l.startsWith('peerup:'))
    assert.equal(refused.code, 1)
    assert.match(refused.stderr, new RegExp(`${path.join(node, 'other.key')} does not exist`))
    const notApplied = await run(['config', 'apply', 'bad.yaml'])
    assert.equal(notApplied.code, 1)
    assert.deepEqual(problems(notApplied), problems(refused))
    assert.equal(await fs.readFile(config, 'utf8'), text)

    const applied = await run(['config', 'apply', 'good.yaml'])
    assert.equal(applied.code, 0, applied.stderr)
  })
})

describe('output and exit codes', () => {
  it('every reporting command prints JSON with --json, and nothing else on stdout', async (t) => {
    const root = await tempDir(t)
    const config = await initNodeDir(root)
    await runCli(['service', 'add', 'ssh', '22', '--config', config], root)
    const commands = [
      ['whoami'],
      ['version'],
      ['status'],
      ['config', 'validate'],
      ['config', 'show'],
      ['auth', 'add', PEER, '--comment', 'vps'],
      ['auth', 'list'],
      ['auth', 'validate'],
      ['auth', 'remove', PEER],
      ['service', 'list'],
      ['service', 'disable', 'ssh'],
      ['service', 'enable', 'ssh'],
      ['relay', 'list'],
      ['relay', 'add', RELAY_ADDR.replace('198.18.0.1', '198.18.0.2')],
      ['relay', 'remove', RELAY_ADDR],
      ['resolve', PEER],
      ['proxy', 'add', 'p', PEER, 'ssh'],
      ['proxy', 'list'],
      ['proxy', 'disable', 'p'],
      ['proxy', 'enable', 'p'],
      ['proxy', 'remove', 'p'],
    ]
    for (const args of commands) {
      const r = await runCli([...args, '--json', '--config', config], root)
      assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`)
      assert.doesNotThrow(() => JSON.parse(r.stdout), `${args.join(' ')} printed ${r.stdout}`)
      // The global flags work before the command too.
      if (args[0] === 'whoami') {
        const before = await runCli(['--json', '--config', config, ...args], root)
        assert.deepEqual(JSON.parse(before.stdout), JSON.parse(r.stdout))
      }
    }
  })

  it('usage errors exit 2, other errors 1, always one line', async (t) => {
    const root = await tempDir(t)
    const config = await initNodeDir(root)
    const cases: Array<[string[], number, RegExp]> = [
      [['frobnicate'], 2, /unknown command 'frobnicate'/],
      [['service', 'add', 'ssh'], 2, /missing required argument 'address'/],
      [['status', '--bogus'], 2, /unknown option '--bogus'/],
      [['service', 'add', 'ssh', 'localhost:99999', '--config', config], 2, /invalid address/],
      [['auth', 'add', 'not-a-peer', '--config', config], 2, /"not-a-peer" is not a valid peer id/],
      [['resolve', 'nobody', '--config', config], 1, /unknown peer "nobody"/],
      [['service', 'remove', 'nope', '--config', config], 1, /no service named nope/],
      [['proxy', 'add', 'p'], 2, /missing required argument 'peer'/],
      [['proxy', 'add', 'p', PEER, 'ssh', 'nope:nope', '--config', config], 2, /invalid bind address/],
      [['proxy', 'remove', 'nope', '--config', config], 1, /no proxy named nope/],
      [['proxy', 'nobody', 'ssh', '2222', '--config', config], 1, /unknown peer "nobody"/],
      [['auth', 'remove', PEER, '--config', config], 1, /not in/],
      [
        ['whoami', '--config', path.join(root, 'missing.yaml')],
        1,
        /does not exist — create it with `peerup init/,
      ],
    ]
    for (const [args, code, message] of cases) {
      const r = await runCli(args, root)
      assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`)
      assert.match(r.stderr, message)
      assert.equal(r.stderr.trimEnd().split('\n').length, 1, `one line: ${r.stderr}`)
      assert.doesNotMatch(r.stderr, /\n\s+at /)
      assert.equal(r.stdout, '')
    }
  })

  it('PEERUP_DEBUG=1 adds the stack', async (t) => {
    const root = await tempDir(t)
    const r = await runCli(['whoami', '--config', path.join(root, 'missing.yaml')], root, {
      env: { PEERUP_DEBUG: '1' },
    })
    assert.equal(r.code, 1)
    assert.match(r.stderr, /\n\s+at /)
  })

  it('refuses an identity key other users can read', async (t) => {
    const root = await tempDir(t)
    const config = await initNodeDir(root)
    await fs.chmod(path.join(path.dirname(config), 'identity.key'), 0o644)
    const r = await runCli(['whoami', '--config', config], root)
    assert.equal(r.code, 1)
    assert.match(r.stderr, /identity\.key has mode 0644, readable by other users — run: chmod 600 /)
  })

  it('--version and version report the same build', async (t) => {
    const root = await tempDir(t)
    const pkg = JSON.parse(await fs.readFile(new URL('../../../package.json', import.meta.url), 'utf8'))
    assert.equal(VERSION, pkg.version)
    const v = await runCli(['--version'], root)
    assert.equal(v.code, 0)
    assert.match(v.stdout, new RegExp(`^peerup ${VERSION} \\(commit `))
    const j = JSON.parse((await runCli(['version', '--json'], root)).stdout)
    assert.equal(j.version, VERSION)
    assert.equal(j.program, 'peerup')
  })
})

describe('invoked as relay-server', () => {
  it('answers version and maps commands onto `peerup relay`', async (t) => {
    const root = await tempDir(t)
    const v = JSON.parse((await runCli(['version', '--json'], root, { programName: 'relay-server' })).stdout)
    assert.equal(v.program, 'relay-server')
    const s = await runCli(['setup', '--dir', path.join(root, 'relay'), '--json'], root, {
      programName: 'relay-server',
    })
    assert.equal(s.code, 0, s.stderr)
    for (const f of ['relay-server.yaml', 'relay_node.key', 'relay_authorized_keys']) {
      assert.equal((await fs.stat(path.join(root, 'relay', f))).mode & 0o777, 0o600, f)
    }
    const ok = await runCli(
      ['config', 'validate', '--config', path.join(root, 'relay', 'relay-server.yaml')],
      root,
      {
        programName: 'relay-server',
      },
    )
    assert.equal(ok.code, 0, ok.stderr)
    const again = await runCli(['setup', '--dir', path.join(root, 'relay')], root, {
      programName: 'relay-server',
    })
    assert.equal(again.code, 1)
    assert.match(again.stderr, /^relay-server: .*already exists/)
  })
})

describe('the real process', () => {
  it('bin/peerup.js exits with the right codes and keeps stdout for results', async (t) => {
    const root = await tempDir(t)
    const exec = promisify(execFile)
    const bin = new URL('../../../bin/peerup.js', import.meta.url).pathname
    const env = { PATH: process.env.PATH ?? '', HOME: root }
    const ok = await exec(
      process.execPath,
      [bin, 'init', '--non-interactive', '--dir', path.join(root, 'n'), '--json'],
      { env },
    )
    assert.ok(JSON.parse(ok.stdout).peerId)
    await assert.rejects(
      exec(process.execPath, [bin, 'nope'], { env }),
      (err: { code: number; stderr: string }) => {
        assert.equal(err.code, 2)
        assert.match(err.stderr, /^peerup: unknown command 'nope'/)
        return true
      },
    )
  })
})
