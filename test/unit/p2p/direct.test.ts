/**
 * The pure parts of the direct path: which STUN servers a node asks, which of a peer's TCP
 * addresses are worth a LAN dial, and how connections are classified and ranked.
 */

import * as assert from 'node:assert/strict'
import type os from 'node:os'
import { describe, it } from 'node:test'
import type { Connection } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import { iceServersFor, rtcConfigurationFor } from '../../../src/p2p/node.ts'
import { bestConnection, classifyConnection } from '../../../src/p2p/path.ts'
import { tcpAddresses, webrtcAddressVia } from '../../../src/p2p/upgrade.ts'

const RELAY = '12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN'
const PEER = '12D3KooWNDrdH7S8uBZXesopGFvkjS8bDixdZbY8dzgEzzyqWk65'

describe('rtcConfigurationFor', () => {
  it('always sets iceServers, so @libp2p/webrtc adds no public STUN servers, and never shares an object', () => {
    const none = rtcConfigurationFor([])
    assert.ok('iceServers' in none)
    assert.deepEqual(none.iceServers, [])
    assert.deepEqual(rtcConfigurationFor(['stun:198.18.0.1:3478']), {
      iceServers: [{ urls: ['stun:198.18.0.1:3478'] }],
    })
    assert.notEqual(rtcConfigurationFor([]), rtcConfigurationFor([]))
  })
})

describe('iceServersFor', () => {
  it('asks each relay host on the STUN port, never anyone else', () => {
    assert.deepEqual(
      iceServersFor(
        [
          `/ip4/198.18.0.1/tcp/7777/p2p/${RELAY}`,
          `/ip6/2001:db8::1/tcp/7777/p2p/${RELAY}`,
          `/dns4/relay.example.net/tcp/443/ws/p2p/${RELAY}`,
          `/ip4/198.18.0.1/tcp/443/ws/p2p/${RELAY}`,
        ],
        3478,
      ),
      ['stun:198.18.0.1:3478', 'stun:[2001:db8::1]:3478', 'stun:relay.example.net:3478'],
    )
  })

  it('asks nobody without relays or with port 0 (an empty list, so the library adds no public servers)', () => {
    assert.deepEqual(iceServersFor([], 3478), [])
    assert.deepEqual(iceServersFor([`/ip4/198.18.0.1/tcp/7777/p2p/${RELAY}`], 0), [])
  })
})

const lab: NodeJS.Dict<os.NetworkInterfaceInfo[]> = {
  lo: [
    {
      address: '127.0.0.1',
      netmask: '255.0.0.0',
      family: 'IPv4',
      mac: '',
      internal: true,
      cidr: '127.0.0.1/8',
    },
  ],
  eth0: [
    {
      address: '100.64.1.2',
      netmask: '255.255.255.0',
      family: 'IPv4',
      mac: '',
      internal: false,
      cidr: '100.64.1.2/24',
    },
  ],
}

describe('tcpAddresses', () => {
  const addrs = (...list: string[]) => list.map((a) => multiaddr(a))
  const dialled = (list: string[]) => tcpAddresses(addrs(...list), PEER, lab).lan.map(String)
  const publicOnes = (list: string[]) => tcpAddresses(addrs(...list), PEER, lab).public.map(String)

  const cases: Array<[string, string[], string[]]> = [
    [
      'a LAN neighbour: its address on our subnet, not its loopback',
      ['/ip4/100.64.1.3/tcp/4001', '/ip4/127.0.0.1/tcp/4001', '/ip6/::1/tcp/4002'],
      [`/ip4/100.64.1.3/tcp/4001/p2p/${PEER}`],
    ],
    [
      'a peer behind another NAT: nothing (its private address is another site’s)',
      ['/ip4/100.64.2.2/tcp/4001', '/ip4/127.0.0.1/tcp/4001'],
      [],
    ],
    [
      'a peer on this machine (loopback only): its loopback address',
      ['/ip4/127.0.0.1/tcp/4001'],
      [`/ip4/127.0.0.1/tcp/4001/p2p/${PEER}`],
    ],
    [
      'a peer on this machine (it listens on our own address too)',
      ['/ip4/100.64.1.2/tcp/4001', '/ip4/127.0.0.1/tcp/4001'],
      [`/ip4/100.64.1.2/tcp/4001/p2p/${PEER}`, `/ip4/127.0.0.1/tcp/4001/p2p/${PEER}`],
    ],
    [
      'not circuit, WebRTC or websocket addresses',
      [
        `/ip4/198.18.0.1/tcp/7777/p2p/${RELAY}/p2p-circuit`,
        `/ip4/198.18.0.1/tcp/7777/p2p/${RELAY}/p2p-circuit/webrtc`,
        '/ip4/100.64.1.3/tcp/443/ws',
      ],
      [],
    ],
  ]
  for (const [what, input, want] of cases) {
    it(what, () => assert.deepEqual(dialled(input), want))
  }

  it('public: the peer’s addresses on the internet, never private, shared (CGNAT), loopback or link-local ones', () => {
    assert.deepEqual(
      publicOnes([
        '/ip4/198.18.0.9/tcp/4001',
        '/ip6/2001:db8::1/tcp/4001',
        '/ip4/100.64.2.2/tcp/4001',
        '/ip4/192.168.1.10/tcp/4001',
        '/ip4/10.1.2.3/tcp/4001',
        '/ip4/172.20.0.1/tcp/4001',
        '/ip4/169.254.1.1/tcp/4001',
        '/ip4/127.0.0.1/tcp/4001',
        '/ip6/fd00::1/tcp/4001',
        '/ip6/fe80::1/tcp/4001',
        `/ip4/198.18.0.1/tcp/7777/p2p/${RELAY}/p2p-circuit`,
      ]),
      [`/ip4/198.18.0.9/tcp/4001/p2p/${PEER}`, `/ip6/2001:db8::1/tcp/4001/p2p/${PEER}`],
    )
  })

  it('an address on our own network is LAN, not public', () => {
    const onLab = tcpAddresses(addrs('/ip4/100.64.1.3/tcp/4001'), PEER, lab)
    assert.equal(onLab.lan.length, 1)
    assert.deepEqual(onLab.public, [])
  })
})

/** Just what classifyConnection and bestConnection read. */
function fakeConnection(addr: string, open: number, limited = false): Connection {
  return {
    remoteAddr: multiaddr(addr),
    status: 'open',
    limits: limited ? { bytes: 1n } : undefined,
    timeline: { open },
  } as unknown as Connection
}

describe('classifyConnection and bestConnection', () => {
  const relayed = fakeConnection(`/ip4/198.18.0.1/tcp/7777/p2p/${RELAY}/p2p-circuit/p2p/${PEER}`, 1)
  const limited = fakeConnection(`/ip4/198.18.0.1/tcp/7777/p2p/${RELAY}/p2p-circuit/p2p/${PEER}`, 1, true)
  const webrtc = fakeConnection(`/ip4/198.18.0.1/tcp/7777/p2p/${RELAY}/p2p-circuit/webrtc/p2p/${PEER}`, 2)
  const inboundWebrtc = fakeConnection(`/webrtc/p2p/${PEER}`, 2)
  const tcp = fakeConnection(`/ip4/100.64.1.3/tcp/4001/p2p/${PEER}`, 3)

  it('a WebRTC connection is DIRECT although its address names the relay that signalled it', () => {
    for (const conn of [webrtc, inboundWebrtc]) {
      const p = classifyConnection(conn)
      assert.equal(p.type, 'DIRECT')
      assert.equal(p.transport, 'webrtc')
      assert.equal(p.relay, undefined)
    }
    assert.equal(classifyConnection(relayed).type, 'RELAYED')
    assert.equal(classifyConnection(relayed).relay, RELAY)
  })

  it('prefers TCP to WebRTC to an unlimited relay to a limited one', () => {
    assert.equal(bestConnection([limited, relayed, webrtc, tcp]), tcp)
    assert.equal(bestConnection([limited, relayed, webrtc]), webrtc)
    assert.equal(bestConnection([limited, relayed]), relayed)
  })
})

describe('webrtcAddressVia', () => {
  it('puts /webrtc after the circuit of the relayed connection', () => {
    const conn = fakeConnection(`/ip4/198.18.0.1/tcp/7777/p2p/${RELAY}/p2p-circuit/p2p/${PEER}`, 1)
    assert.equal(
      webrtcAddressVia(conn, PEER)?.toString(),
      `/ip4/198.18.0.1/tcp/7777/p2p/${RELAY}/p2p-circuit/webrtc/p2p/${PEER}`,
    )
    assert.equal(webrtcAddressVia(fakeConnection(`/ip4/1.2.3.4/tcp/1/p2p/${PEER}`, 1), PEER), undefined)
  })
})
