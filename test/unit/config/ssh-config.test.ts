/**
 * The ssh config peerup writes (src/config/ssh-config.ts): what each block says, that installing
 * keeps every byte of the user's own config, that a second install changes nothing, and — with the
 * real OpenSSH client where it is installed — that `ssh -G` reads the blocks as meant.
 */

import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import { describe, it } from 'node:test'
import {
  installSshConfig,
  renderSshConfig,
  SSH_CONFIG_BEGIN,
  SSH_CONFIG_END,
  withSshConfigSection,
} from '../../../src/config/ssh-config.ts'
import { PeerupError, UsageError } from '../../../src/errors.ts'
import { tempDir } from '../../helpers/cli.ts'

/** A user's config: global options first, hand-written hosts, CRLF on one line, no final newline. */
const USER_CONFIG = [
  '# my ssh config',
  'ServerAliveInterval 30',
  'IdentityFile ~/.ssh/id_work',
  '',
  'Host work',
  '  HostName 198.18.0.99',
  '  User me\r',
  '',
  'Host *',
  '  AddKeysToAgent yes',
].join('\n')

const EXE = '/usr/local/bin/peerup'

describe('renderSshConfig', () => {
  it('writes a Host block per name with peerup as ProxyCommand, then *.peerup, between the markers', () => {
    const text = renderSshConfig({ names: ['nas', 'home', 'home'], exe: EXE })
    assert.equal(
      text,
      [
        SSH_CONFIG_BEGIN,
        'Host home',
        `  ProxyCommand ${EXE} proxy --stdio home ssh`,
        'Host nas',
        `  ProxyCommand ${EXE} proxy --stdio nas ssh`,
        'Host *.peerup',
        `  ProxyCommand ${EXE} proxy --stdio %n ssh`,
        SSH_CONFIG_END,
        '',
      ].join('\n'),
    )
  })

  it('bakes in a config file that is not the default, quoted for the shell and for ssh', () => {
    const text = renderSshConfig({
      names: ['home'],
      exe: '/opt/my tools/peerup',
      configFile: '/srv/100%/config.yaml',
    })
    assert.match(
      text,
      /^ {2}ProxyCommand '\/opt\/my tools\/peerup' --config \/srv\/100%%\/config\.yaml proxy --stdio home ssh$/m,
    )
  })

  it('refuses a name ssh would read as a pattern or a shell as two words', () => {
    for (const name of ['a b', '*', 'x,y', '!home']) {
      assert.throws(() => renderSshConfig({ names: [name], exe: EXE }), UsageError)
    }
  })
})

describe('withSshConfigSection', () => {
  const section = renderSshConfig({ names: ['home'], exe: EXE })

  it('appends after the user config, leaving every byte of it as it was', () => {
    const out = withSshConfigSection(USER_CONFIG, section)
    assert.equal(out, `${USER_CONFIG}\n\n${section}`)
    assert.equal(withSshConfigSection('', section), section)
    assert.equal(withSshConfigSection('Host x\n', section), `Host x\n\n${section}`)
  })

  it('replaces only its own section, and a second run changes nothing', () => {
    const once = withSshConfigSection(USER_CONFIG, section)
    const after = `${once}Host later\n  User you\n`
    const other = renderSshConfig({ names: ['home', 'nas'], exe: EXE })
    const twice = withSshConfigSection(after, other)
    assert.equal(twice, `${USER_CONFIG}\n\n${other}Host later\n  User you\n`)
    assert.equal(withSshConfigSection(twice, other), twice)
  })

  it('refuses broken markers and says how to mend them', () => {
    for (const broken of [
      `${SSH_CONFIG_BEGIN}\nHost a\n`,
      `${SSH_CONFIG_END}\n${SSH_CONFIG_BEGIN}\n`,
      `${section}${section}`,
    ]) {
      assert.throws(
        () => withSshConfigSection(broken, section),
        (err: Error) => err instanceof PeerupError && /marker lines/.test(err.message),
      )
    }
  })
})

describe('installSshConfig', () => {
  it('makes ~/.ssh/config (0600, in a 0700 folder) when there is none, and writes nothing the second time', async (t) => {
    const home = await tempDir(t)
    const file = path.join(home, '.ssh', 'config')
    const section = renderSshConfig({ names: ['home'], exe: EXE })
    assert.deepEqual(await installSshConfig(file, section), { changed: true, file })
    assert.equal((await fs.stat(file)).mode & 0o777, 0o600)
    assert.equal((await fs.stat(path.dirname(file))).mode & 0o777, 0o700)
    const before = await fs.stat(file)
    assert.deepEqual(await installSshConfig(file, section), { changed: false, file })
    const after = await fs.stat(file)
    assert.equal(after.ino, before.ino)
    assert.equal(after.mtimeMs, before.mtimeMs)
  })

  it('keeps a user config byte for byte and its mode, and writes through a symlink', async (t) => {
    const home = await tempDir(t)
    const real = path.join(home, 'dotfiles', 'ssh_config')
    await fs.mkdir(path.dirname(real))
    await fs.writeFile(real, USER_CONFIG, { mode: 0o644 })
    await fs.mkdir(path.join(home, '.ssh'))
    const link = path.join(home, '.ssh', 'config')
    await fs.symlink(real, link)
    const section = renderSshConfig({ names: ['home'], exe: EXE })
    assert.deepEqual(await installSshConfig(link, section), { changed: true, file: real })
    assert.ok((await fs.lstat(link)).isSymbolicLink(), 'the symlink is still one')
    assert.equal(await fs.readFile(real, 'utf8'), `${USER_CONFIG}\n\n${section}`)
    assert.equal((await fs.stat(real)).mode & 0o777, 0o644)
  })
})

const ssh = spawnSync('ssh', ['-V'], { encoding: 'utf8' })
describe('what OpenSSH reads from it (ssh -G)', {
  skip: ssh.error === undefined ? false : 'no ssh client',
}, () => {
  const resolved = (file: string, host: string): Map<string, string> => {
    const r = spawnSync('ssh', ['-F', file, '-G', host], { encoding: 'utf8', timeout: 10_000 })
    assert.equal(r.status, 0, r.stderr)
    return new Map(r.stdout.split('\n').map((l) => [l.split(' ')[0] ?? '', l.slice(l.indexOf(' ') + 1)]))
  }

  it('peer names and *.peerup go through peerup; the user hosts and global options are as before', async (t) => {
    const dir = await tempDir(t)
    const file = path.join(dir, 'config')
    await fs.writeFile(file, USER_CONFIG.replace('\r', ''), { mode: 0o600 })
    await installSshConfig(file, renderSshConfig({ names: ['home'], exe: EXE }))
    const home = resolved(file, 'home')
    assert.equal(home.get('proxycommand'), `${EXE} proxy --stdio home ssh`)
    assert.equal(home.get('serveraliveinterval'), '30')
    // ssh -G prints ProxyCommand before its % tokens are expanded (%n: the name as typed).
    assert.equal(resolved(file, 'nas.peerup').get('proxycommand'), `${EXE} proxy --stdio %n ssh`)
    const work = resolved(file, 'work')
    assert.equal(work.get('hostname'), '198.18.0.99')
    assert.equal(work.get('proxycommand'), undefined)
    assert.equal(work.get('addkeystoagent'), 'true')
  })
})
