/**
 * Every check of `peerup doctor` with what it says: the ok line, and each failure or warning with
 * its text and its fix (src/doctor/checks.ts).
 */

import * as assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { PathState, RelayState, UpgradeStatus } from '../../../src/api/index.ts'
import {
  type Check,
  clockCheck,
  configCheck,
  daemonCheck,
  directCheck,
  type FileMode,
  fileModesCheck,
  natCheck,
  nativeAddonCheck,
  pathsCheck,
  relayChecks,
  reservationChecks,
  socketCheck,
} from '../../../src/doctor/checks.ts'
import type { NatMapping, NatReport } from '../../../src/doctor/nat.ts'

const RELAY = '/ip4/198.18.0.1/tcp/7777/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN'
const RELAY_ID = '12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN'
const ME = '12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo'

/** The parts of a check a person reads. */
function said(c: Check): [string, string, string | undefined] {
  return [c.status, c.summary, c.fix]
}

function nat(mapping: NatMapping, ports: number[] = [4000, 4000], extra: Partial<NatReport> = {}): NatReport {
  return {
    mapping,
    behindNat: true,
    localPort: 5000,
    probes: ports.map((port, i) => ({
      endpoint: `198.18.0.${i + 1}:3478`,
      relay: RELAY,
      alternate: false,
      ...(mapping === 'udp-blocked'
        ? {}
        : {
            answer: {
              mapped: { address: '198.18.0.2', port },
              rttMs: 2,
              receivedAtMs: 1_000_000,
              serverTimeMs: 1_000_000,
            },
          }),
    })),
    ...extra,
  }
}

describe('config', () => {
  it('ok when the loader finds nothing', () => {
    assert.deepEqual(said(configCheck('/n/config.yaml', [])), ['ok', '/n/config.yaml is valid', undefined])
  })
  it('fails with every problem, file:line: key', () => {
    const c = configCheck('/n/config.yaml', ['/n/config.yaml:4: relay.addresses.0: not a multiaddr'])
    assert.deepEqual(said(c), [
      'fail',
      'a problem in the config: /n/config.yaml:4: relay.addresses.0: not a multiaddr',
      'do what each problem says (edit /n/config.yaml for a key), then run `peerup config validate`',
    ])
  })
})

describe('file-modes', () => {
  const files: FileMode[] = [
    { file: '/n/config.yaml', kind: 'trust', mode: 0o664 },
    { file: '/n/identity.key', kind: 'secret', mode: 0o640 },
    { file: '/n/authorized_keys', kind: 'trust', mode: 0o644 },
    { file: '/n/.daemon-cookie', kind: 'secret', mode: undefined },
  ]
  it('fails on a key readable by the group and a config writable by it, with the chmod', () => {
    assert.deepEqual(said(fileModesCheck(files)), [
      'fail',
      '/n/config.yaml has mode 0664, writable by other users; /n/identity.key has mode 0640, readable by other users',
      'run `peerup doctor --fix`, or: chmod go-w /n/config.yaml; chmod 600 /n/identity.key',
    ])
  })
  it('ok once --fix narrowed them, saying what it did', () => {
    const wide = files.slice(0, 2)
    const c = fileModesCheck(files, wide)
    assert.equal(c.status, 'ok')
    assert.equal(c.fixed, 'chmod 0644 /n/config.yaml; chmod 0600 /n/identity.key')
  })
})

describe('socket', () => {
  const cases: Array<[Parameters<typeof socketCheck>[1], boolean, [string, string, string | undefined]]> = [
    ['answers', false, ['ok', '/n/peerup.sock answers', undefined]],
    [
      'missing',
      false,
      [
        'warn',
        'no socket at /n/peerup.sock: the daemon is not running',
        'start it with `peerup daemon` (or `systemctl --user start peerup`)',
      ],
    ],
    [
      'stale',
      false,
      [
        'warn',
        '/n/peerup.sock is stale: nobody listens on it (a daemon that died)',
        'run `peerup doctor --fix` (or rm /n/peerup.sock); `peerup daemon` also removes it when it starts',
      ],
    ],
    ['stale', true, ['ok', '/n/peerup.sock was left by a daemon that is gone; removed', undefined]],
    [
      'not-a-socket',
      false,
      [
        'fail',
        '/n/peerup.sock exists and is not a socket: the daemon cannot start here',
        'move /n/peerup.sock away; peerup keeps its socket there',
      ],
    ],
  ]
  for (const [state, removed, want] of cases) {
    it(`${state}${removed ? ', removed by --fix' : ''}: ${want[0]}`, () => {
      assert.deepEqual(said(socketCheck('/n/peerup.sock', state, removed)), want)
    })
  }
})

describe('daemon', () => {
  it('ok: running, same version', () => {
    assert.deepEqual(
      said(daemonCheck({ running: true, version: '0.1.0', pid: 42, uptimeSeconds: 7 }, '0.1.0')),
      ['ok', 'running, peerup 0.1.0 (pid 42, up 7 s)', undefined],
    )
  })
  it('warns when not running, and when it runs another version', () => {
    assert.deepEqual(said(daemonCheck({ running: false }, '0.1.0')), [
      'warn',
      'the daemon is not running: no reservation is held and peers cannot reach this node',
      'start it with `peerup daemon` (or `systemctl --user start peerup`)',
    ])
    assert.deepEqual(
      said(daemonCheck({ running: true, version: '0.0.9', pid: 42, uptimeSeconds: 7 }, '0.1.0')),
      [
        'warn',
        'the daemon runs peerup 0.0.9, this command is 0.1.0',
        'restart the daemon after upgrading (`peerup daemon stop`, then start it again)',
      ],
    )
  })
  it('fails when it answers wrongly', () => {
    assert.deepEqual(said(daemonCheck({ running: 'error', error: 'cannot read the cookie' }, '0.1.0')), [
      'fail',
      'the daemon does not answer properly: cannot read the cookie',
      'look at its log (`journalctl --user -u peerup`), then restart it',
    ])
  })
})

describe('relay', () => {
  it('ok with the latency; fails naming the relay that does not answer', () => {
    const checks = relayChecks([
      { relay: RELAY, target: '198.18.0.1:7777', latencyMs: 1.25 },
      { relay: RELAY, target: '198.18.0.4:7777', error: 'ECONNREFUSED' },
    ])
    assert.deepEqual(checks.map(said), [
      ['ok', 'relay 198.18.0.1:7777 reachable over TCP in 1.3 ms', undefined],
      [
        'fail',
        'relay 198.18.0.4:7777 unreachable: ECONNREFUSED',
        'check that the relay runs (`peerup relay serve`) and that tcp 198.18.0.4:7777 is open in its firewall; or add another relay',
      ],
    ])
  })
  it('fails when none is configured', () => {
    assert.deepEqual(relayChecks([]).map(said), [
      [
        'fail',
        'no relay configured: peers behind NAT cannot reach this node',
        'add one with `peerup relay add <multiaddr>` (`peerup relay info` on the relay prints it)',
      ],
    ])
  })
})

describe('reservation', () => {
  const relay = (r: Partial<RelayState>): RelayState => ({
    peerId: RELAY_ID,
    addrs: [RELAY],
    connected: true,
    reserved: false,
    since: new Date().toISOString(),
    ...r,
  })
  it('ok when held', () => {
    assert.deepEqual(reservationChecks([relay({ reserved: true })], ME).map(said), [
      ['ok', 'reservation held on relay 12D3KooW…x6nXTN', undefined],
    ])
  })
  it('a refusal for want of authorization prints the command to run on the relay', () => {
    const c = reservationChecks([relay({ reason: 'refused by the relay: not in relay_authorized_keys' })], ME)
    assert.deepEqual(c.map(said), [
      [
        'fail',
        'no reservation on relay 12D3KooW…x6nXTN: refused by the relay: not in relay_authorized_keys',
        `on the relay, run: peerup relay authorize ${ME}`,
      ],
    ])
  })
  it('an unreachable relay points at the relay check; no daemon is a warning', () => {
    assert.equal(
      reservationChecks([relay({ connected: false, lastError: 'ECONNREFUSED' })], ME)[0]?.fix,
      'the relay is not reachable: see the relay check above',
    )
    assert.deepEqual(reservationChecks(undefined, ME).map(said), [
      [
        'warn',
        'not checked: reservations are held by the daemon, which is not running',
        'start it with `peerup daemon`',
      ],
    ])
  })
})

describe('nat and direct', () => {
  it('cone: ok, and direct is possible', () => {
    assert.deepEqual(said(natCheck(nat('endpoint-independent'))), [
      'ok',
      'endpoint-independent mapping (cone NAT): 198.18.0.1:3478 saw 198.18.0.2:4000, 198.18.0.2:3478 saw 198.18.0.2:4000',
      undefined,
    ])
    assert.deepEqual(said(directCheck(nat('endpoint-independent'), true)), [
      'ok',
      "direct is possible from here: a TCP punch and WebRTC can work (if the peer's side allows it too)",
      undefined,
    ])
  })
  it('symmetric: warns, and says the path stays RELAYED', () => {
    assert.deepEqual(said(natCheck(nat('endpoint-dependent', [4000, 51234]))), [
      'warn',
      'endpoint-dependent mapping (symmetric NAT): a new public port for every destination (198.18.0.1:3478 saw 198.18.0.2:4000, 198.18.0.2:3478 saw 198.18.0.2:51234)',
      'a direct path needs a cone NAT on at least one side: enable endpoint-independent mapping on the router if it can, or rely on the relay',
    ])
    assert.deepEqual(said(directCheck(nat('endpoint-dependent'), true)), [
      'warn',
      'direct path unlikely: symmetric NAT on this side; connections stay RELAYED unless the peer is reachable directly',
      'nothing breaks: traffic goes through the relay; for direct paths, a router with endpoint-independent mapping',
    ])
  })
  it('UDP blocked: warns; but not when the relays are down altogether', () => {
    assert.deepEqual(said(natCheck(nat('udp-blocked'))), [
      'warn',
      'UDP blocked (no STUN answer) from 198.18.0.1:3478, 198.18.0.2:3478',
      'let UDP out to the relays’ STUN port (3478), or check that the relays run their STUN responder (stun.enabled)',
    ])
    assert.deepEqual(said(directCheck(nat('udp-blocked'), true)), [
      'warn',
      'WebRTC cannot work from here (UDP blocked); only a TCP punch or a LAN path can be direct',
      'let UDP out (at least to the relays), or rely on the relay',
    ])
    assert.deepEqual(said(natCheck(nat('udp-blocked'), true)), [
      'warn',
      'not measured: no relay answers, on TCP or on STUN',
      'see the relay checks: once a relay is back, run `peerup doctor` again',
    ])
  })
  it('one endpoint only, or none to ask: warns with what would measure it', () => {
    assert.deepEqual(said(natCheck(nat('unknown', [4000]))), [
      'warn',
      'mapping unknown (one STUN endpoint only): 198.18.0.1:3478 saw 198.18.0.2:4000; a second endpoint is needed to compare',
      'add a second relay, or set stun.alternate_listen_address in the relay’s relay-server.yaml',
    ])
    assert.equal(natCheck(undefined).status, 'warn')
    assert.match(natCheck(undefined).summary, /^not measured: no relay with an IPv4 address and a STUN port/)
    assert.deepEqual(said(directCheck(undefined, false)), [
      'warn',
      'cannot tell whether a direct path can work from here: the NAT was not measured (WebRTC is off: no /webrtc in network.listen_addresses)',
      'see the nat check',
    ])
  })
})

describe('clock', () => {
  const timed = (offsetMs: number): NatReport => {
    const n = nat('endpoint-independent', [4000])
    const answer = n.probes[0]?.answer
    assert.ok(answer !== undefined)
    // Our clock at the middle of the exchange is receivedAt − rtt/2.
    answer.serverTimeMs = answer.receivedAtMs - answer.rttMs / 2 + offsetMs
    return n
  }
  it('ok within 10 s', () => {
    assert.deepEqual(said(clockCheck(timed(1200))), [
      'ok',
      'this clock is 1.2 s behind relay 198.18.0.1:3478 (± 0.0 s)',
      undefined,
    ])
  })
  it('warns past 10 s and fails past 5 minutes', () => {
    assert.deepEqual(said(clockCheck(timed(-30_000))), [
      'warn',
      'this clock is 30.0 s ahead of relay 198.18.0.1:3478 (± 0.0 s): invite codes and authorized_keys expiries are off by as much',
      'synchronise the clock (e.g. `timedatectl set-ntp true`) here or on the relay',
    ])
    assert.equal(clockCheck(timed(600_000)).status, 'fail')
  })
  it('warns when no relay told its time', () => {
    assert.deepEqual(said(clockCheck(nat('udp-blocked'))), [
      'warn',
      'not measured: no relay told its time (it answers no STUN here, or runs an older peerup)',
      'see the nat check; upgrade the relay to tell its clock',
    ])
  })
})

describe('paths', () => {
  const path = (type: 'DIRECT' | 'RELAYED', upgrade: UpgradeStatus, name?: string): PathState => ({
    peerId: ME,
    ...(name === undefined ? {} : { name }),
    path: {
      type,
      transport: 'tcp',
      remoteAddr: '/ip4/198.18.0.1/tcp/7777',
      limited: false,
      ...(type === 'RELAYED' ? { relay: RELAY_ID } : {}),
    },
    since: new Date().toISOString(),
    connections: 1,
    upgrade,
  })
  it('says why each RELAYED peer is relayed: this side’s NAT, then the upgrade’s failure', () => {
    const failed: UpgradeStatus = {
      state: 'failed',
      attempts: 2,
      failures: 2,
      lastError: 'tcp punch: timed out; webrtc: ICE failed',
    }
    assert.deepEqual(said(pathsCheck([path('RELAYED', failed, 'b')], nat('endpoint-dependent'))), [
      'warn',
      'b is RELAYED because: symmetric NAT on this side; the direct attempt failed: tcp punch: timed out; webrtc: ICE failed',
      'traffic still flows, through the relay; see the nat and direct checks for this side',
    ])
  })
  it('ok when every path is DIRECT or none is open; a warning without a daemon', () => {
    const direct: UpgradeStatus = { state: 'direct', attempts: 1, failures: 0 }
    assert.deepEqual(said(pathsCheck([path('DIRECT', direct)], undefined)), [
      'ok',
      '1 peer on a DIRECT path',
      undefined,
    ])
    assert.deepEqual(said(pathsCheck([], undefined)), ['ok', 'no peer connected', undefined])
    assert.equal(pathsCheck(undefined, undefined).status, 'warn')
  })
})

describe('native-addon', () => {
  it('ok from source, and when the cache holds this build’s copy', () => {
    assert.equal(
      nativeAddonCheck(undefined).summary,
      'running from source: node-datachannel loads from node_modules',
    )
    assert.deepEqual(
      said(
        nativeAddonCheck([
          { name: 'node_datachannel.node', file: '/c/native/ab-node_datachannel.node', problems: [] },
        ]),
      ),
      ['ok', 'node_datachannel.node cached at /c/native/ab-node_datachannel.node', undefined],
    )
  })
  it('warns when not unpacked yet, fails when the directory is not private', () => {
    assert.deepEqual(
      said(
        nativeAddonCheck([
          { name: 'nd.node', problems: ['/c/native: not created yet', '/tmp/p/native: not created yet'] },
        ]),
      ),
      [
        'warn',
        'nd.node not cached: /c/native: not created yet',
        'nothing to do: it is unpacked the first time it is used',
      ],
    )
    assert.deepEqual(
      said(
        nativeAddonCheck([
          { name: 'nd.node', problems: ['/c/native: /c/native has mode 0777, writable by other users'] },
        ]),
      ),
      [
        'fail',
        'nd.node not cached: /c/native: /c/native has mode 0777, writable by other users',
        'make the cache directory private (`chmod 700` it, owned by you) or set PEERUP_CACHE_DIR to one',
      ],
    )
  })
})
