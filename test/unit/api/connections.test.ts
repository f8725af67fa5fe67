/**
 * How `peerup daemon connections` reads as text: sizes in powers of 1024, the open connections
 * with their path (or that a session waits for its link), then the ones that ended and how.
 */

import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { byteSize, type ConnectionsResponse, connectionsText } from '../../../src/api/index.ts'

const ID = '12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK'

describe('connections as text', () => {
  it('sizes', () => {
    const table: Array<[number, string]> = [
      [0, '0 B'],
      [1023, '1023 B'],
      [1024, '1.0 KiB'],
      [18_350_212, '18 MiB'],
      [5 * 1024 ** 4, '5.0 TiB'],
    ]
    for (const [n, want] of table) {
      assert.equal(byteSize(n), want, String(n))
    }
  })

  it('the open ones, then the ones that ended and how', () => {
    const now = Date.parse('2026-12-06T10:05:11Z')
    const r: ConnectionsResponse = {
      open: [
        {
          id: 8,
          side: 'inbound',
          peerId: ID,
          service: 'ssh',
          local: '127.0.0.1:22',
          resumable: true,
          since: '2026-12-06T10:04:11Z',
          bytesIn: 2048,
          bytesOut: 512,
          bytesInPerSecond: 1024,
          bytesOutPerSecond: 0,
        },
      ],
      closed: [
        {
          id: 6,
          side: 'outbound',
          peerId: ID,
          name: 'home',
          service: 'ssh',
          local: 'stdio',
          resumable: true,
          since: '2026-12-06T10:01:40Z',
          ended: '2026-12-06T10:04:02Z',
          durationMs: 142_308,
          bytesIn: 5120,
          bytesOut: 3072,
          end: 'expired',
          error: 'the connection did not come back within 120 s',
        },
      ],
      peers: [],
      services: [],
    }
    assert.equal(
      connectionsText(r, now),
      [
        'open (1)',
        'ID  PEER             SERVICE  SIDE  PATH                  SINCE  IN       OUT    RATE IN    RATE OUT',
        '8   12D3KooW…rRJsNK  ssh      in    waiting for its link  1m     2.0 KiB  512 B  1.0 KiB/s  0 B/s',
        '',
        'recently closed (1)',
        'ID  PEER  SERVICE  SIDE  ENDED   LASTED  IN       OUT      HOW',
        '6   home  ssh      out   1m ago  2m22s   5.0 KiB  3.0 KiB  expired: the connection did not come back within 120 s',
      ].join('\n'),
    )
    assert.equal(
      connectionsText({ open: [], closed: [], peers: [], services: [] }, now),
      'open (0)\nno open connections\n\nrecently closed (0)\nnone',
    )
  })
})
