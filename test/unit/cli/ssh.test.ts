import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { shellQuote, sshArgv, sshNetworkTarget, takePeerupOptions } from '../../../src/cli/ssh.ts'

describe('takePeerupOptions', () => {
  const cases: Array<{ args: string[]; config: string | undefined; rest: string[] }> = [
    { args: [], config: undefined, rest: [] },
    { args: ['--config', 'x.yaml', '-p', '22', 'ls'], config: 'x.yaml', rest: ['-p', '22', 'ls'] },
    { args: ['-p', '22', '--config=x.yaml', 'ls'], config: 'x.yaml', rest: ['-p', '22', 'ls'] },
    // `-l --config` is ssh's -l with a (strange) user name, not peerup's option.
    { args: ['-l', '--config', 'ls'], config: undefined, rest: ['-l', '--config', 'ls'] },
    // Once the remote command starts, every word is the command's.
    { args: ['ls', '--config', 'x.yaml'], config: undefined, rest: ['ls', '--config', 'x.yaml'] },
    { args: ['--', '--config', 'x'], config: undefined, rest: ['--', '--config', 'x'] },
  ]
  for (const c of cases) {
    it(`${JSON.stringify(c.args)} → config ${c.config}, ssh ${JSON.stringify(c.rest)}`, () => {
      const r = takePeerupOptions(c.args)
      assert.equal(r.config, c.config)
      assert.deepEqual(r.args, c.rest)
    })
  }
})

describe('takePeerupOptions --network', () => {
  it('takes --network and --network= among the leading options, and leaves the command’s', () => {
    assert.deepEqual(takePeerupOptions(['--network', 'work', '-p', '22', 'ls']), {
      config: undefined,
      network: 'work',
      args: ['-p', '22', 'ls'],
    })
    assert.deepEqual(takePeerupOptions(['--network=work', '--config=x.yaml']), {
      config: 'x.yaml',
      network: 'work',
      args: [],
    })
    assert.equal(takePeerupOptions(['ls', '--network', 'work']).network, undefined)
  })
})

describe('sshNetworkTarget', () => {
  const known = {
    isNetwork: (n: string) => ['work', 'home'].includes(n),
    // A peer named like a network, in the network commands use.
    isPeer: (n: string) => n === 'home',
  }
  const cases: Array<[string, { user: string | undefined; peer: string; network: string | undefined }]> = [
    ['box', { user: undefined, peer: 'box', network: undefined }],
    ['box@work', { user: undefined, peer: 'box', network: 'work' }],
    ['me@box@work', { user: 'me', peer: 'box', network: 'work' }],
    // Not a network: ssh's user@host.
    ['me@box', { user: 'me', peer: 'box', network: undefined }],
    // A peer of that name in the network in use wins over the network of that name…
    ['me@home', { user: 'me', peer: 'home', network: undefined }],
    // …unless a user is written before the peer.
    ['me@box@home', { user: 'me', peer: 'box', network: 'home' }],
    ['a@b@box', { user: 'a@b', peer: 'box', network: undefined }],
  ]
  for (const [target, want] of cases) {
    it(`${target} → ${JSON.stringify(want)}`, () => {
      assert.deepEqual(sshNetworkTarget(target, known), want)
    })
  }
})

describe('sshArgv', () => {
  const base = { configFile: '/home/me/.config/peerup/config.yaml', self: ['/usr/local/bin/peerup'] }

  it('puts peerup in as ProxyCommand and the peer name as HostKeyAlias', () => {
    const argv = sshArgv({ ...base, target: 'me@home', args: [] })
    assert.deepEqual(argv, [
      '-o',
      'ProxyCommand=/usr/local/bin/peerup --config /home/me/.config/peerup/config.yaml proxy --stdio home ssh',
      '-o',
      'HostKeyAlias=home',
      'me@home',
    ])
  })

  it('keeps ssh options before the destination and the command after it', () => {
    const argv = sshArgv({ ...base, target: 'home', args: ['-p', '2200', '-v', 'uname', '-a'] })
    assert.deepEqual(argv.slice(4), ['-p', '2200', '-v', 'home', 'uname', '-a'])
  })

  it('quotes paths with spaces for the shell that runs the ProxyCommand', () => {
    const argv = sshArgv({ ...base, configFile: "/tmp/my dir/it's.yaml", target: 'home', args: [] })
    assert.match(argv[1] as string, / --config '\/tmp\/my dir\/it'\\''s\.yaml' /)
  })

  it('shellQuote leaves plain words alone', () => {
    assert.equal(shellQuote('/usr/bin/peerup'), '/usr/bin/peerup')
    assert.equal(shellQuote('a b'), "'a b'")
  })
})
