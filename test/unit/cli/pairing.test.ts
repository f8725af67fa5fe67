/**
 * The pairing commands without a network: how `join` takes and checks its code, `verify`'s
 * numbers and what it records, and `relay pair` with no relay running.
 */

import assert from 'node:assert/strict'
import * as fs from 'node:fs/promises'
import * as net from 'node:net'
import * as path from 'node:path'
import { describe, it } from 'node:test'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { createInviteCode, encodeInviteCode } from '../../../src/invite/code.ts'
import { shortAuthString } from '../../../src/invite/sas.ts'
import { listenOnSocket } from '../../../src/util/socket.ts'
import { initNodeDir, RELAY_ADDR, runCli, tempDir } from '../../helpers/cli.ts'

const relayId = RELAY_ADDR.split('/p2p/')[1] as string
const someId = async () => peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()

function code(overrides: { expires?: Date; relayAddress?: string } = {}): Promise<string> {
  return someId().then((inviter) =>
    encodeInviteCode(
      createInviteCode({
        kind: 'peer',
        expires: overrides.expires ?? new Date(Date.now() + 600_000),
        relayAddress: overrides.relayAddress ?? '/ip4/198.18.0.1/tcp/7777',
        relayPeerId: relayId,
        inviterPeerId: inviter,
        network: '',
      }),
    ),
  )
}

describe('join: taking the code', () => {
  it('reports a typo as a usage error and creates nothing', async (t) => {
    const root = await tempDir(t)
    const good = await code()
    const typo = `${good.slice(0, 10)}${good[10] === 'A' ? 'B' : 'A'}${good.slice(11)}`
    for (const args of [
      ['join', typo],
      ['join', '--non-interactive'],
    ]) {
      const r = await runCli(args, root, { env: { PEERUP_HOME: path.join(root, 'n') } })
      assert.equal(r.code, 2, r.stderr)
      assert.equal(r.stdout, '')
    }
    await assert.rejects(fs.stat(path.join(root, 'n')), 'nothing was created')
    const r = await runCli(['join', typo], root)
    assert.match(r.stderr, /typo, probably in group 3/)
    assert.ok(!r.stderr.includes(good.slice(0, 9)), 'the code is not echoed back')
  })

  it('takes the code from PEERUP_INVITE_CODE or stdin, and refuses an expired one before dialling', async (t) => {
    const root = await tempDir(t)
    const expired = await code({ expires: new Date(Date.now() - 60_000) })
    for (const how of [{ env: { PEERUP_INVITE_CODE: expired } }, { stdin: `${expired}\n` }]) {
      const r = await runCli(['join', '--non-interactive'], root, {
        ...how,
        env: { ...how.env, PEERUP_HOME: path.join(root, 'n') },
      })
      assert.equal(r.code, 1)
      assert.match(r.stderr, /expired at .* — ask for a new one/)
    }
    await assert.rejects(fs.stat(path.join(root, 'n', 'config.yaml')))
  })

  it('says "upgrade peerup" for a code from a newer version', async (t) => {
    const root = await tempDir(t)
    // Version 2 with a valid checksum: made by hand here, as a newer peerup would.
    const { crc32 } = await import('node:zlib')
    const body = Uint8Array.from([2, 0, 1, 2, 3])
    const all = new Uint8Array(body.length + 4)
    all.set(body)
    new DataView(all.buffer).setUint32(body.length, crc32(body) >>> 0)
    const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ'
    let bits = ''
    for (const byte of all) bits += byte.toString(2).padStart(8, '0')
    bits = bits.padEnd(Math.ceil(bits.length / 5) * 5, '0')
    const text = bits
      .match(/.{5}/g)!
      .map((b) => ALPHABET[Number.parseInt(b, 2)])
      .join('')
    const r = await runCli(['join', text], root)
    assert.equal(r.code, 1)
    assert.match(r.stderr, /newer peerup .* upgrade peerup/)
  })
})

describe('join: a short code', () => {
  it('checks the words, and that it knows the relay, before creating or dialling anything', async (t) => {
    const root = await tempDir(t)
    const env = { PEERUP_HOME: path.join(root, 'n') }
    const cases: Array<{ args: string[]; code: number; message: RegExp; inEnv?: string }> = [
      {
        args: ['join', '7-acorm-zebra'],
        code: 2,
        message: /word 1 of the short code is not in the word list: a typo\? .*did you mean that one\?/,
      },
      {
        args: ['join', RELAY_ADDR, '7-acorn-qqqqqq'],
        code: 2,
        message: /word 2 of the short code is not a word of the list/,
      },
      { args: ['join', '7-acorn'], code: 2, message: /has 2 words after its number, this one has 1/ },
      {
        args: ['join', '7-acorn-zebra'],
        code: 2,
        message: /a short code does not say which relay the inviter waits on — give the relay/,
      },
      { args: ['join', relayId, '7-acorn-zebra'], code: 2, message: /this node has no relay 12D3/ },
      {
        args: ['join', '/ip4/198.18.0.1/tcp/7777', '7-acorn-zebra'],
        code: 2,
        message: /invalid relay address/,
      },
      {
        args: ['join', RELAY_ADDR, await code()],
        code: 2,
        message: /a long pairing code carries its relay: give the code alone/,
      },
      // A relay alone: the code comes from the environment.
      {
        args: ['join', RELAY_ADDR, '--non-interactive'],
        inEnv: '7-acorm-zebra',
        code: 2,
        message: /word 1 of the short code is not in the word list/,
      },
    ]
    for (const c of cases) {
      const r = await runCli(c.args, root, {
        env: c.inEnv === undefined ? env : { ...env, PEERUP_INVITE_CODE: c.inEnv },
      })
      assert.equal(r.code, c.code, `${c.args.join(' ')}: ${r.stderr}`)
      assert.match(r.stderr, c.message, c.args.join(' '))
      assert.equal(r.stderr.trim().split('\n').length, 1, 'one line')
      assert.doesNotMatch(r.stderr, /acorn|zebra|acorm/, 'the words are not echoed back')
    }
    await assert.rejects(fs.stat(path.join(root, 'n')), 'nothing was created')
  })

  it('with a config of two relays, wants to be told which', async (t) => {
    const root = await tempDir(t)
    const config = await initNodeDir(root)
    const other = `/ip4/198.18.0.2/tcp/7777/p2p/${await someId()}`
    assert.equal((await runCli(['relay', 'add', other, '--config', config], root)).code, 0)
    const r = await runCli(['join', '7-acorn-zebra', '--config', config], root)
    assert.equal(r.code, 2)
    assert.match(r.stderr, /this node uses 2 relays, and a short code does not say which one/)
  })
})

describe('join: a pairing that fails', () => {
  /** A code whose relay refuses the connection at once (nothing listens on its port). */
  async function unreachableCode(): Promise<string> {
    const server = net.createServer()
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const { port } = server.address() as net.AddressInfo
    await new Promise((resolve) => server.close(resolve))
    return code({ relayAddress: `/ip4/127.0.0.1/tcp/${port}` })
  }

  /** Every file under `dir` with its bytes, or undefined when `dir` is not there. */
  async function snapshot(dir: string): Promise<Record<string, string> | undefined> {
    const names = await fs.readdir(dir, { recursive: true }).catch(() => undefined)
    if (names === undefined) return undefined
    const out: Record<string, string> = {}
    for (const name of names.sort()) {
      const file = path.join(dir, name)
      out[name] = (await fs.stat(file)).isFile() ? await fs.readFile(file, 'base64') : '(dir)'
    }
    return out
  }

  it('removes the node it created, keeps what was there before, and leaves an existing config as it was', {
    timeout: 60_000,
  }, async (t) => {
    const root = await tempDir(t)
    const text = await unreachableCode()
    const join = (args: string[], env: Record<string, string> = {}) =>
      runCli(['join', text, '--non-interactive', ...args], root, { env })

    // No node: join makes one in $PEERUP_HOME (directories included), and takes it all back.
    const home = path.join(root, 'home', 'peerup')
    const made = await join([], { PEERUP_HOME: home })
    assert.equal(made.code, 1, made.stderr)
    assert.match(made.stderr, /removed the identity and config this join had created in /)
    assert.equal(await snapshot(path.join(root, 'home')), undefined)

    // A directory with a key of its own already: the key stays, what join added goes.
    const keyed = path.join(root, 'keyed')
    assert.equal((await runCli(['init', '--non-interactive', '--dir', keyed], root)).code, 0)
    await fs.rm(path.join(keyed, 'config.yaml'))
    await fs.rm(path.join(keyed, 'authorized_keys'))
    const before = await snapshot(keyed)
    assert.deepEqual(Object.keys(before ?? {}), ['identity.key'])
    assert.equal((await join(['--config', path.join(keyed, 'config.yaml')])).code, 1)
    assert.deepEqual(await snapshot(keyed), before)

    // An existing node (without the code's relay): not a byte of it changes.
    const config = await initNodeDir(root)
    const node = await snapshot(path.dirname(config))
    const failed = await join(['--config', config])
    assert.equal(failed.code, 1, failed.stderr)
    assert.doesNotMatch(failed.stderr, /removed/)
    assert.deepEqual(await snapshot(path.dirname(config)), node)
  })
})

describe('verify', () => {
  it('shows the same numbers on both sides, and records verified= only when confirmed', async (t) => {
    const root = await tempDir(t)
    const config = await initNodeDir(root)
    const self = (await runCli(['whoami', '--config', config], root)).stdout.trim()
    const peer = await someId()
    assert.equal(shortAuthString(self, peer), shortAuthString(peer, self))
    assert.match(shortAuthString(self, peer), /^\d{3} \d{3}$/)
    assert.notEqual(shortAuthString(self, peer), shortAuthString(self, await someId()))

    const missing = await runCli(['verify', peer, '--config', config], root)
    assert.equal(missing.code, 1)
    assert.match(missing.stderr, /not in authorized_keys/)

    await runCli(['auth', 'add', peer, '--name', 'home', '--config', config], root)
    const shown = JSON.parse((await runCli(['verify', 'home', '--json', '--config', config], root)).stdout)
    assert.equal(shown.sas, shortAuthString(self, peer))
    assert.equal(shown.recorded, false)
    const listed = JSON.parse((await runCli(['auth', 'list', '--json', '--config', config], root)).stdout)
    assert.equal(listed[0].verified, undefined)
    const status = JSON.parse((await runCli(['status', '--json', '--config', config], root)).stdout)
    assert.equal(status.unverifiedPeers, 1)

    // Interactive: "n" records nothing, "y" records the date.
    const no = await runCli(['verify', 'home', '--config', config], root, { tty: true, stdin: 'n\n' })
    assert.equal(no.code, 1)
    assert.match(no.stderr, /not verified/)
    const yes = await runCli(['verify', 'home', '--config', config], root, { tty: true, stdin: 'y\n' })
    assert.equal(yes.code, 0, yes.stderr)
    assert.match(yes.stderr, new RegExp(shortAuthString(self, peer)))
    const keys = await fs.readFile(path.join(path.dirname(config), 'authorized_keys'), 'utf8')
    assert.match(keys, new RegExp(`^${peer} verified=\\d{4}-\\d{2}-\\d{2}`, 'm'))
    const after = JSON.parse((await runCli(['status', '--json', '--config', config], root)).stdout)
    assert.equal(after.unverifiedPeers, 0)
  })
})

describe('relay setup', () => {
  it('makes a directory made beforehand (mkdir -p: 0755) 0700, so the relay can open its admin socket there', async (t) => {
    const root = await tempDir(t)
    const dir = path.join(root, 'etc', 'peerup')
    await fs.mkdir(dir, { recursive: true, mode: 0o755 })
    await fs.chmod(dir, 0o755)
    const r = await runCli(['relay', 'setup', '--dir', dir, '--json'], root)
    assert.equal(r.code, 0, r.stderr)
    assert.equal(JSON.parse(r.stdout).previousDirMode, '0755')
    assert.equal((await fs.stat(dir)).mode & 0o777, 0o700)
    // What `relay serve` does for `relay pair`: its admin socket, refused in a directory others can enter.
    const close = await listenOnSocket(net.createServer(), path.join(dir, 'relay.sock'), {
      what: 'the relay',
    })
    await close()
    // A new directory is made 0700 from the start, and nothing is said about it.
    const fresh = await runCli(['relay', 'setup', '--dir', path.join(root, 'fresh')], root)
    assert.equal(fresh.code, 0, fresh.stderr)
    assert.doesNotMatch(fresh.stdout, /made 0700/)
    assert.equal((await fs.stat(path.join(root, 'fresh'))).mode & 0o777, 0o700)
  })
})

describe('relay pair', () => {
  it('says the relay is not running, and checks its flags', async (t) => {
    const root = await tempDir(t)
    const setup = await runCli(['relay', 'setup', '--dir', path.join(root, 'r')], root)
    assert.equal(setup.code, 0, setup.stderr)
    const config = path.join(root, 'r', 'relay-server.yaml')
    const r = await runCli(['relay', 'pair', '--count', '3', '--config', config], root)
    assert.equal(r.code, 1)
    assert.match(r.stderr, /the relay is not running .*`peerup relay serve`/)
    const bad = await runCli(['relay', 'pair', '--count', '0', '--config', config], root)
    assert.equal(bad.code, 2)
  })
})
