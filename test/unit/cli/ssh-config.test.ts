/**
 * `peerup ssh-config` as a user runs it (src/cli/commands/ssh-config.ts): against the hand-written
 * ssh config of test/fixtures/ssh_config, `--install` keeps every byte of it, a second run changes
 * nothing, and (with the real OpenSSH client) the user's own `Host home` still sets what it sets
 * while peerup's block adds the ProxyCommand. Names with `.peerup` resolve to the peer.
 */

import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import { describe, it } from 'node:test'
import { resolvePeer } from '../../../src/config/ops.ts'
import { nodeConfigSchema } from '../../../src/config/schema.ts'
import { NotFoundError } from '../../../src/errors.ts'
import { initNodeDir, runCli, tempDir } from '../../helpers/cli.ts'

const FIXTURE = path.resolve(import.meta.dirname, '../../fixtures/ssh_config')
const HOME_ID = '12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN'

/** A node config with `names: {home: …}`, and the user's ssh config copied from the fixture. */
async function setUp(t: { after: (fn: () => Promise<void>) => void }) {
  const root = await tempDir(t)
  const configFile = await initNodeDir(root)
  await fs.writeFile(
    configFile,
    (await fs.readFile(configFile, 'utf8')).replace('names: {}', `names:\n  home: ${HOME_ID}`),
  )
  const sshConfig = path.join(root, '.ssh', 'config')
  await fs.mkdir(path.dirname(sshConfig), { mode: 0o700 })
  await fs.copyFile(FIXTURE, sshConfig)
  return { root, configFile, sshConfig }
}

describe('peerup ssh-config', () => {
  it('prints the section without --install, naming the config that is not the default', async (t) => {
    const { root, configFile } = await setUp(t)
    const r = await runCli(['ssh-config', '--config', configFile], root)
    assert.equal(r.code, 0, r.stderr)
    assert.match(r.stdout, /^# >>> peerup ssh-config >>>/)
    assert.match(
      r.stdout,
      new RegExp(`^  ProxyCommand .+ --config ${configFile} proxy --stdio home ssh$`, 'm'),
    )
    assert.match(r.stdout, /^Host \*\.peerup$/m)
  })

  it('--install keeps the fixture byte for byte; a second run changes nothing', async (t) => {
    const { root, configFile, sshConfig } = await setUp(t)
    const fixture = await fs.readFile(FIXTURE, 'utf8')
    const first = await runCli(['ssh-config', '--install', '--config', configFile], root)
    assert.equal(first.code, 0, first.stderr)
    assert.equal(first.stdout.trim(), `installed the peerup section into ${sshConfig}`)
    const installed = await fs.readFile(sshConfig, 'utf8')
    assert.ok(installed.startsWith(`${fixture}\n\n# >>> peerup ssh-config >>>`))
    const before = await fs.stat(sshConfig)
    const second = await runCli(['ssh-config', '--install', '--json', '--config', configFile], root)
    assert.equal(second.code, 0, second.stderr)
    assert.deepEqual(JSON.parse(second.stdout), { changed: false, file: sshConfig })
    assert.equal(await fs.readFile(sshConfig, 'utf8'), installed)
    assert.equal((await fs.stat(sshConfig)).mtimeMs, before.mtimeMs)
  })

  it('a name paired later is added in place of the old section; the rest stays', async (t) => {
    const { root, configFile, sshConfig } = await setUp(t)
    await runCli(['ssh-config', '--install', '--config', configFile], root)
    await fs.writeFile(
      configFile,
      (await fs.readFile(configFile, 'utf8')).replace(
        `home: ${HOME_ID}`,
        `home: ${HOME_ID}\n  nas: ${HOME_ID}`,
      ),
    )
    const r = await runCli(['ssh-config', '--install', '--config', configFile], root)
    assert.equal(r.code, 0, r.stderr)
    const text = await fs.readFile(sshConfig, 'utf8')
    assert.ok(text.startsWith(await fs.readFile(FIXTURE, 'utf8')))
    assert.equal(text.match(/# >>> peerup ssh-config >>>/g)?.length, 1)
    assert.match(text, /^Host nas$/m)
  })

  const ssh = spawnSync('ssh', ['-V'], { encoding: 'utf8' })
  it('what ssh reads: the user’s Host home options, and peerup as its ProxyCommand', {
    skip: ssh.error === undefined ? false : 'no ssh client',
  }, async (t) => {
    const { root, configFile, sshConfig } = await setUp(t)
    await runCli(['ssh-config', '--install', '--config', configFile], root)
    const g = spawnSync('ssh', ['-F', sshConfig, '-G', 'home'], {
      encoding: 'utf8',
      timeout: 10_000,
      env: { HOME: root },
    })
    assert.equal(g.status, 0, g.stderr)
    const options = new Map(
      g.stdout.split('\n').map((l) => [l.split(' ')[0] ?? '', l.slice(l.indexOf(' ') + 1)]),
    )
    assert.equal(options.get('user'), 'me')
    assert.equal(options.get('forwardagent'), 'no')
    assert.match(options.get('proxycommand') ?? '', / proxy --stdio home ssh$/)
  })
})

describe('a peer name with .peerup', () => {
  const config = nodeConfigSchema.parse({ version: 1, names: { home: HOME_ID, 'my.box': HOME_ID } })
  it('resolves to the peer, in any case of the suffix; an unknown one is still unknown', () => {
    assert.deepEqual(resolvePeer(config, 'home.peerup'), { name: 'home', peerId: HOME_ID })
    assert.deepEqual(resolvePeer(config, 'home.PEERUP'), { name: 'home', peerId: HOME_ID })
    assert.deepEqual(resolvePeer(config, 'my.box.peerup'), { name: 'my.box', peerId: HOME_ID })
    assert.throws(() => resolvePeer(config, 'nope.peerup'), NotFoundError)
    assert.throws(() => resolvePeer(config, '.peerup'), NotFoundError)
  })
})
