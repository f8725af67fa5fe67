/**
 * Waiting for a peer (src/p2p/wait.ts): tried again until it answers, at once when a connection to
 * it opens, ended at once by a refusal, and bounded — the error then says how long it waited and
 * why the last try failed.
 */

import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { NotFoundError } from '../../../src/errors.ts'
import { PeerRefusedError, PeerUnreachableError, ServiceRefusedError } from '../../../src/p2p/errors.ts'
import type { PeerupLibp2p } from '../../../src/p2p/node.ts'
import { untilReachable, WAIT_RETRY_BASE_MS } from '../../../src/p2p/wait.ts'

const PEER = '12D3KooWPeer'

/** A stand-in for the node: only its `peer:connect` events matter here. */
function fakeNode(): EventTarget & { connect(peer: string): void } {
  const target = new EventTarget()
  return Object.assign(target, {
    connect: (peer: string) =>
      target.dispatchEvent(new CustomEvent('peer:connect', { detail: { toString: () => peer } })),
  })
}

const options = (node: EventTarget, waitMs: number, signal?: AbortSignal) => ({
  node: node as unknown as PeerupLibp2p,
  peer: 'home',
  peerId: () => PEER,
  waitMs,
  signal,
})

describe('untilReachable', () => {
  it('tries again until the peer answers', async () => {
    let tries = 0
    const result = await untilReachable(
      async () => {
        tries++
        if (tries < 3) {
          throw new PeerUnreachableError('peer home is not connected to any of your relays')
        }
        return 'opened'
      },
      options(fakeNode(), 30_000),
    )
    assert.equal(result, 'opened')
    assert.equal(tries, 3)
  })

  it('tries again at once when a connection to the peer opens, not after the delay', async () => {
    const node = fakeNode()
    let tries = 0
    const started = performance.now()
    const result = untilReachable(
      async () => {
        tries++
        if (tries === 1) {
          // The peer comes back while this try fails: another peer first, which must not wake it.
          setImmediate(() => {
            node.connect('12D3KooWSomeoneElse')
            node.connect(PEER)
          })
          throw new PeerUnreachableError('not yet')
        }
        return 'opened'
      },
      options(node, 30_000),
    )
    assert.equal(await result, 'opened')
    assert.ok(performance.now() - started < WAIT_RETRY_BASE_MS, 'woken by the connection')
  })

  for (const refusal of [
    new ServiceRefusedError('home does not offer a service named web'),
    new PeerRefusedError('peer home refused the connection (not authorized by the peer)'),
    new NotFoundError('unknown peer "home": not a name in names: nor a peer id'),
  ]) {
    it(`ends at once on a refusal: ${refusal.name}`, async () => {
      let tries = 0
      await assert.rejects(
        untilReachable(
          async () => {
            tries++
            throw refusal
          },
          options(fakeNode(), 30_000),
        ),
        (err: unknown) => err === refusal,
      )
      assert.equal(tries, 1)
    })
  }

  it('gives up when the bound passes, saying how long it waited and why the last try failed', async () => {
    const started = performance.now()
    await assert.rejects(
      untilReachable(
        async () => {
          throw new PeerUnreachableError('peer home is not connected to any of your relays')
        },
        options(fakeNode(), 1_200),
      ),
      (err: unknown) => {
        assert.ok(err instanceof PeerUnreachableError)
        assert.equal(
          err.message,
          'home did not become reachable within 1.2 s: peer home is not connected to any of your relays',
        )
        assert.match(err.hint ?? '', /proxy\.connect_timeout/)
        return true
      },
    )
    const took = performance.now() - started
    assert.ok(took >= 1_150 && took < 3_000, `${took} ms`)
  })

  it('aborts a try in flight when the bound passes', async () => {
    await assert.rejects(
      untilReachable(
        (signal) =>
          new Promise((_resolve, reject) => signal.addEventListener('abort', () => reject(signal.reason))),
        options(fakeNode(), 300),
      ),
      /home did not become reachable within 0\.3 s$/,
    )
  })

  it('stops at once, with its reason, when its own signal aborts', async () => {
    const controller = new AbortController()
    const reason = new Error('the client went away')
    const waiting = untilReachable(
      async () => {
        setImmediate(() => controller.abort(reason))
        throw new PeerUnreachableError('not yet')
      },
      options(fakeNode(), 30_000, controller.signal),
    )
    await assert.rejects(waiting, (err: unknown) => err === reason)
  })
})
