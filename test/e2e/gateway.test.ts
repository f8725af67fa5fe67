/**
 * Reaching more than ssh, with the built executable and real tools in the NAT lab
 * (test/e2e/lab.ts): a and b behind their own NATs, b2 a third machine on b's LAN.
 *
 * - `peerup ssh-config --install` on a, into an ssh config the user already wrote: then plain
 *   `ssh home`, `ssh home.peerup`, `scp` and `rsync -e ssh` reach sshd on b (100 MiB byte-exact),
 *   and `git clone home:repo` works;
 *   a second install changes nothing, the user's own blocks stay byte for byte.
 * - a's daemon runs the gateway (`socks:` in config.yaml): `curl --socks5-hostname` reaches a real
 *   HTTP server on b by `web.home.peerup`, one on b2 through b (`nas`, whose local_address is
 *   on b's LAN), a port of a `ports:` range by `home.peerup:<port>`; `curl --proxytunnel -x`
 *   through HTTP CONNECT; an unknown name and a service that does not allow a get the SOCKS reply
 *   codes (4, 2) and curl's messages for them, and an audit line each.
 * - `peerup socks` holds a gateway of its own for as long as it runs.
 */

import * as assert from 'node:assert/strict'
import { on } from 'node:events'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { createLab, type Lab, type LabHost, type LabProcess, labSupport, withLabLogs } from './lab.ts'
import {
  addNames,
  ensureBuilt,
  initLabNode,
  type LabRelay,
  type PeerupHost,
  startLabRelay,
} from './peerup-host.ts'
import { type Sshd, startSshd } from './sshd.ts'

const support = await labSupport()
/** The tools this test runs, and the Debian packages they come in. */
const TOOLS: Record<string, string> = { curl: 'curl', rsync: 'rsync', scp: 'openssh-client', git: 'git' }
const missing = Object.keys(TOOLS).filter(
  (tool) => !['/usr/bin', '/bin'].some((dir) => fs.existsSync(path.join(dir, tool))),
)
const skip = !support.ok
  ? `network lab unavailable: ${support.reason}`
  : missing.length > 0
    ? `missing ${missing.join(', ')} (apt-get install ${missing.map((tool) => TOOLS[tool]).join(' ')})`
    : false

const SOCKS = '127.0.0.1:1080'
const HTTP_CONNECT = '127.0.0.1:1081'

/** A one-line HTTP server answering `text` on every path, in `host`'s namespace. */
async function httpServer(lab: Lab, host: LabHost, port: number, text: string): Promise<LabProcess> {
  const script = `require('node:http').createServer((q, r) => r.end(process.argv[1] + ' ' + q.url + '\\n'))
    .listen(Number(process.argv[2]), '0.0.0.0', () => console.log('listening'))`
  const proc = host.spawn(lab.node, ['-e', script, text, String(port)], {
    label: `http-${host.name}-${port}`,
  })
  await proc.waitForOutput(/listening/, 10_000)
  return proc
}

describe('reaching more than ssh: ssh-config, the SOCKS and HTTP CONNECT gateway', {
  skip,
  timeout: 600_000,
}, () => {
  let lab: Lab
  let relay: LabRelay
  let a: PeerupHost
  let b: PeerupHost
  let daemonA: LabProcess
  let daemonB: LabProcess
  let sshd: Sshd
  let sshConfig: string
  let userPart: string

  before(async () => {
    ensureBuilt()
    lab = await createLab({ nat: 'symmetric', name: 'gateway', lanPeers: { b: 1 } })
    relay = await startLabRelay(lab, { stun: false })
    const na = await initLabNode(lab, 'a', relay)
    const nb = await initLabNode(lab, 'b', relay)
    a = na.node
    b = nb.node
    await b.peerup(['auth', 'add', na.peerId, '--comment', 'a', '--config', b.config])
    addNames(a, { home: nb.peerId })
    sshd = await startSshd(b.host, { port: 22 })
    await httpServer(lab, b.host, 8080, 'web on b')
    await httpServer(lab, b.host, 9001, 'dev 9001 on b')
    await httpServer(lab, lab.host('b2'), 80, 'nas on b2')
    // Services of b: its own web server, one on another machine of its LAN, a range of ports, and
    // one that a may not use.
    fs.writeFileSync(
      b.config,
      fs
        .readFileSync(b.config, 'utf8')
        .replace(
          'services: {}',
          [
            'services:',
            '  ssh: { local_address: 127.0.0.1:22 }',
            '  web: { local_address: 127.0.0.1:8080 }',
            `  nas: { local_address: ${lab.host('b2').ip}:80 }`,
            '  dev: { local_address: 127.0.0.1:9000, ports: 9001-9002 }',
            `  secret: { local_address: 127.0.0.1:8080, allowed_peers: [${nb.peerId}] }`,
          ].join('\n'),
        ),
    )
    fs.appendFileSync(
      a.config,
      [
        'socks:',
        '  enabled: true',
        `  listen_address: ${SOCKS}`,
        `  http_listen_address: ${HTTP_CONNECT}`,
        'telemetry:',
        '  audit:',
        '    enabled: true',
        '',
      ].join('\n'),
    )
    daemonB = b.spawn(['daemon', '--config', b.config, '--log-level', 'info'], 'daemon-b')
    await daemonB.waitForOutput(/"msg":"reservation held"/, 30_000)
    daemonA = a.spawn(['daemon', '--config', a.config, '--log-level', 'info'], 'daemon-a')
    await daemonA.waitForOutput(/"msg":"gateway listening"/, 30_000)

    // The user's own ssh config, which the install must keep byte for byte.
    sshConfig = path.join(a.dir, '.ssh', 'config')
    fs.mkdirSync(path.dirname(sshConfig), { recursive: true, mode: 0o700 })
    userPart = [
      '# my own settings, written by hand',
      'Host home home.peerup',
      '  User root',
      `  IdentityFile ${sshd.clientKey}`,
      '  IdentitiesOnly yes',
      `  UserKnownHostsFile ${sshd.knownHosts}`,
      '  GlobalKnownHostsFile /dev/null',
      '  StrictHostKeyChecking yes',
      '  BatchMode yes',
      '  LogLevel ERROR',
      '',
      'Host elsewhere',
      '  HostName 192.0.2.1',
      '  Port 2222',
    ].join('\n')
    fs.writeFileSync(sshConfig, userPart, { mode: 0o600 })
  })

  after(async () => {
    await lab?.close()
  })

  /** curl on a, whatever its exit code. */
  const curl = (args: string[]) =>
    a.host.run('curl', ['-sS', '--max-time', '60', ...args], { timeoutMs: 70_000 })

  it('ssh-config --install: a second run changes nothing, the hand-written blocks stay', async (t) => {
    await withLabLogs(t, lab, async () => {
      const first = await a.peerup(['ssh-config', '--install', '--config', a.config])
      assert.match(first, /installed the peerup section into/)
      const installed = fs.readFileSync(sshConfig, 'utf8')
      assert.ok(installed.startsWith(`${userPart}\n\n# >>> peerup ssh-config >>>`), installed)
      assert.match(installed, /^Host home\n {2}ProxyCommand \S+ --config \S+ proxy --stdio home ssh$/m)
      assert.match(installed, /^Host \*\.peerup\n {2}ProxyCommand \S+ --config \S+ proxy --stdio %n ssh$/m)
      const second = await a.peerup(['ssh-config', '--install', '--config', a.config])
      assert.match(second, /is up to date/)
      assert.equal(fs.readFileSync(sshConfig, 'utf8'), installed)
    })
  })

  it('plain ssh home and ssh home.peerup; scp and rsync -e ssh copy 100 MiB byte-exact', async (t) => {
    await withLabLogs(t, lab, async () => {
      for (const host of ['home', 'home.peerup']) {
        const r = await a.host.run('ssh', ['-F', sshConfig, host, 'echo', `hello-${host}`], {
          env: a.env,
          timeoutMs: 60_000,
        })
        assert.equal(r.code, 0, r.stderr)
        assert.equal(r.stdout.trim(), `hello-${host}`)
      }
      const payload = path.join(a.dir, 'payload')
      await a.host.mustRun('sh', ['-c', `head -c ${100 * 1024 * 1024} /dev/urandom > ${payload}`])
      const want = (await a.host.mustRun('sha256sum', [payload])).stdout.split(' ')[0]
      const viaScp = path.join(b.dir, 'via-scp')
      const scp = await a.host.run('scp', ['-q', '-F', sshConfig, payload, `home:${viaScp}`], {
        env: a.env,
        timeoutMs: 300_000,
      })
      assert.equal(scp.code, 0, scp.stderr)
      const viaRsync = path.join(b.dir, 'via-rsync')
      const rsync = await a.host.run(
        'rsync',
        ['-e', `ssh -F ${sshConfig}`, payload, `home.peerup:${viaRsync}`],
        {
          env: a.env,
          timeoutMs: 300_000,
        },
      )
      assert.equal(rsync.code, 0, rsync.stderr)
      t.diagnostic(`100 MiB sha256 ${want}`)
      for (const copy of [viaScp, viaRsync]) {
        // Summed on b, the machine the bytes went to.
        const got = (await b.host.mustRun('sha256sum', [copy])).stdout.split(' ')[0]
        assert.equal(got, want, copy)
      }
    })
  })

  it('git clone home:repo', async (t) => {
    await withLabLogs(t, lab, async () => {
      const repo = path.join(b.dir, 'repo')
      await b.host.mustRun('sh', [
        '-c',
        `git init -q ${repo} && git -C ${repo} -c user.name=b -c user.email=b@lab commit -q --allow-empty -m 'made on b'`,
      ])
      const clone = path.join(a.dir, 'clone')
      const r = await a.host.run('git', ['clone', '-q', `home:${repo}`, clone], {
        env: { ...a.env, GIT_SSH_COMMAND: `ssh -F ${sshConfig}` },
        timeoutMs: 60_000,
      })
      assert.equal(r.code, 0, r.stderr)
      const log = await a.host.mustRun('git', ['-C', clone, 'log', '--format=%s'])
      assert.equal(log.stdout.trim(), 'made on b')
    })
  })

  it('curl through SOCKS5: a service by name, a machine on b’s LAN, a port of a range', async (t) => {
    await withLabLogs(t, lab, async () => {
      const cases: Array<[string, string]> = [
        ['http://web.home.peerup/', 'web on b /\n'],
        ['http://web.home.peerup:8443/x', 'web on b /x\n'],
        ['http://nas.home.peerup/', 'nas on b2 /\n'],
        ['http://home.peerup:8080/', 'web on b /\n'],
        ['http://home.peerup:9001/y', 'dev 9001 on b /y\n'],
      ]
      for (const [url, body] of cases) {
        const r = await curl(['--socks5-hostname', SOCKS, url])
        assert.equal(r.code, 0, `${url}: ${r.stderr}`)
        assert.equal(r.stdout, body, url)
      }
    })
  })

  it('curl through HTTP CONNECT (curl -p -x)', async (t) => {
    await withLabLogs(t, lab, async () => {
      const r = await curl(['-p', '-x', `http://${HTTP_CONNECT}`, 'http://web.home.peerup/'])
      assert.equal(r.code, 0, r.stderr)
      assert.equal(r.stdout, 'web on b /\n')
      const unknown = await curl(['-p', '-x', `http://${HTTP_CONNECT}`, 'http://nope.peerup/'])
      t.diagnostic(
        `curl -p -x http://${HTTP_CONNECT} http://nope.peerup/: exit ${unknown.code}, ${unknown.stderr.trim()}`,
      )
      assert.notEqual(unknown.code, 0)
      assert.match(unknown.stderr, /CONNECT tunnel failed, response 404/)
    })
  })

  it('refusals: the SOCKS reply code curl reports, and an audit line', async (t) => {
    await withLabLogs(t, lab, async () => {
      const cases: Array<[string, string, number]> = [
        // No peer of that name: "host unreachable".
        ['http://nope.peerup/', 'nope.peerup', 4],
        // Not a name under .peerup at all.
        ['http://example.com/', 'example.com', 4],
        // allowed_peers of b's service does not list a: "connection not allowed by ruleset".
        ['http://secret.home.peerup/', 'secret.home.peerup', 2],
        // b offers nothing on that port: "connection refused".
        ['http://home.peerup:7000/', 'home.peerup', 5],
      ]
      for (const [url, host, code] of cases) {
        const r = await curl(['--socks5-hostname', SOCKS, url])
        t.diagnostic(`curl --socks5-hostname ${SOCKS} ${url}: exit ${r.code}, ${r.stderr.trim()}`)
        assert.equal(r.code, 97, `${url}: ${r.stderr}`)
        assert.match(
          r.stderr,
          new RegExp(`Can't complete SOCKS5 connection to ${host.replaceAll('.', '\\.')}\\. \\(${code}\\)`),
        )
      }
      // The daemon answers the client first and appends its audit line after: wait for the file.
      const file = path.join(a.dir, 'node', 'audit.log')
      const read = () =>
        fs
          .readFileSync(file, 'utf8')
          .split('\n')
          .filter((l) => l.includes('"role":"gateway"'))
          .map((l) => JSON.parse(l) as { target: string; reply: number; what: string })
      const missing = () =>
        cases.filter(
          ([, host, code]) =>
            !read().some((e) => e.what === 'socks' && e.target.startsWith(`${host}:`) && e.reply === code),
        )
      await untilFileSays(file, () => missing().length === 0, 10_000)
      assert.deepEqual(missing(), [], `audit lines: ${JSON.stringify(read())}`)
    })
  })

  it('peerup socks holds a gateway of its own until it stops', async (t) => {
    await withLabLogs(t, lab, async () => {
      const proc = a.spawn(['socks', '127.0.0.1:1090', '--config', a.config], 'peerup-socks')
      await proc.waitForOutput(/SOCKS5 on 127\.0\.0\.1:1090/, 30_000)
      const r = await curl(['--socks5-hostname', '127.0.0.1:1090', 'http://web.home.peerup/'])
      assert.equal(r.code, 0, r.stderr)
      assert.equal(r.stdout, 'web on b /\n')
      await proc.stop()
      // The daemon closes the gateway once it sees the request end, a moment after the command.
      for (let i = 0; await a.host.canConnect('127.0.0.1', 1090, 500); i++) {
        assert.ok(i < 100, 'the gateway still listens after peerup socks stopped')
      }
    })
  })
})

/**
 * Resolves once `holds()` is true, checking whenever `file` changes; after `timeoutMs` it resolves
 * all the same, and the caller's assertion says what is missing.
 */
async function untilFileSays(file: string, holds: () => boolean, timeoutMs: number): Promise<void> {
  const watcher = fs.watch(file)
  const deadline = setTimeout(() => watcher.close(), timeoutMs)
  try {
    if (holds()) {
      return
    }
    for await (const _ of on(watcher, 'change', { close: ['close'] })) {
      if (holds()) {
        return
      }
    }
  } finally {
    clearTimeout(deadline)
    watcher.close()
  }
}
