/**
 * The relay's side of sponsoring and of member look-ups on `/peerup/relay-admin/1.0.0`, with each
 * `security.sponsoring` policy, against a real relay: the caller is whoever noise says it is.
 */

import assert from 'node:assert/strict'
import * as path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { loadAuthorizedKeys } from '../../../src/auth/authorized-keys.ts'
import { addAuthorizedPeer } from '../../../src/auth/ops.ts'
import { loadRelayConfig } from '../../../src/config/load.ts'
import type { RelayConfig } from '../../../src/config/schema.ts'
import { type PairingNode, startPairingNode } from '../../../src/invite/node.ts'
import { askRelay } from '../../../src/invite/relay-admin.ts'
import { createLogger } from '../../../src/log/index.ts'
import { RelayPairingService } from '../../../src/relay/pairing.ts'
import { tempDir } from '../../helpers/cli.ts'
import { createTestNode, startTestRelay, type TestRelay } from '../../helpers/mesh.ts'

describe('sponsoring at the relay', { timeout: 120_000 }, () => {
  let relay: TestRelay
  let config: RelayConfig
  let caller: PairingNode
  let stranger: PairingNode
  let pairing: RelayPairingService | undefined
  const cleanups: Array<() => Promise<unknown>> = []
  const keys = () => path.join(relay.dir, 'relay_authorized_keys')
  const newPeer = async () => peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()

  async function withPolicy(sponsoring: RelayConfig['security']['sponsoring']): Promise<void> {
    await pairing?.stop()
    pairing = new RelayPairingService({
      relay: relay.handle,
      config: { ...config, security: { ...config.security, sponsoring } },
      dir: relay.dir,
      log: createLogger('pairing'),
    })
    await pairing.start()
  }

  async function connect(pn: PairingNode) {
    return pn.node.dial(multiaddr(relay.address))
  }

  before(async () => {
    const root = await tempDir({ after: (fn) => cleanups.push(fn) })
    relay = await startTestRelay(root)
    cleanups.unshift(() => relay.stop())
    config = (await loadRelayConfig(path.join(relay.dir, 'relay-server.yaml'))).config
    const c = await createTestNode(root, 'caller', relay)
    const s = await createTestNode(root, 'stranger', relay)
    await relay.authorize(c.peerId)
    caller = await startPairingNode({ configFile: c.configFile, log: createLogger('c'), reserve: false })
    stranger = await startPairingNode({ configFile: s.configFile, log: createLogger('s'), reserve: false })
    cleanups.unshift(
      () => caller.stop(),
      () => stranger.stop(),
      async () => pairing?.stop(),
    )
  })

  after(async () => {
    for (const fn of cleanups) {
      await fn().catch(() => {})
    }
  })

  it('any: an authorized peer sponsors, recorded as sponsor=<it>; an unknown one may not', async () => {
    await withPolicy('any')
    const joiner = await newPeer()
    const answer = await askRelay(await connect(caller), { type: 'sponsor', peer: joiner, name: 'laptop' })
    assert.deepEqual(answer, { ok: true })
    const entry = (await loadAuthorizedKeys(keys())).get(joiner)
    assert.equal(entry?.attributes.sponsor, caller.peerId)
    assert.equal(entry?.comment, 'laptop')
    assert.ok(relay.handle.authorized.has(joiner))

    const refused = await askRelay(await connect(stranger), { type: 'sponsor', peer: await newPeer() })
    assert.equal(refused.ok, false)
    assert.match(refused.reason ?? '', /not authorized on this relay/)
  })

  it('paired (the default): only the peer the relay saw join the caller during its open invite, once', async () => {
    assert.equal(config.security.sponsoring, 'paired')
    await withPolicy('paired')
    const joiner = await newPeer()
    const conn = await connect(caller)
    // No invite open, nothing seen: refused, and nothing written.
    const refused = await askRelay(conn, { type: 'sponsor', peer: joiner })
    assert.equal(refused.ok, false)
    assert.match(refused.reason ?? '', /saw no pairing/)
    assert.equal((await loadAuthorizedKeys(keys())).has(joiner), false)
    // An open invite alone is not enough: the relay must have carried the joiner's circuit.
    assert.deepEqual(await askRelay(conn, { type: 'invite-open', ttl_ms: 60_000 }), { ok: true })
    assert.equal(relay.handle.invites.isOpen(caller.peerId), true)
    const other = await newPeer()
    assert.equal((await askRelay(conn, { type: 'sponsor', peer: other })).ok, false)
    // What the gater records when it lets the joiner's circuit through (src/relay/gater.ts).
    assert.equal(relay.handle.invites.admit(caller.peerId, joiner), true)
    assert.deepEqual(await askRelay(conn, { type: 'sponsor', peer: joiner }), { ok: true })
    assert.equal((await loadAuthorizedKeys(keys())).get(joiner)?.attributes.sponsor, caller.peerId)
    // The invite is spent: no second sponsorship on it, and strangers no longer get through.
    assert.equal(relay.handle.invites.isOpen(caller.peerId), false)
    assert.equal(relay.handle.invites.admit(caller.peerId, other), false)
    // A stranger cannot open an invite.
    const strangerOpen = await askRelay(await connect(stranger), { type: 'invite-open', ttl_ms: 60_000 })
    assert.equal(strangerOpen.ok, false)
    assert.equal(relay.handle.invites.isOpen(stranger.peerId), false)
  })

  it('marked: only a peer with sponsor=yes sponsors, and only one it paired with', async () => {
    await withPolicy('marked')
    const joiner = await newPeer()
    relay.handle.invites.open(caller.peerId, 60_000)
    relay.handle.invites.admit(caller.peerId, joiner)
    const refused = await askRelay(await connect(caller), { type: 'sponsor', peer: joiner })
    assert.equal(refused.ok, false)
    assert.match(refused.reason ?? '', /sponsor=yes/)
    assert.equal((await loadAuthorizedKeys(keys())).has(joiner), false)
    relay.handle.invites.close(caller.peerId)

    const marked = await startPairingNode({
      configFile: (await createTestNode(path.dirname(relay.dir), 'marked', relay)).configFile,
      log: createLogger('m'),
      reserve: false,
    })
    cleanups.unshift(() => marked.stop())
    await addAuthorizedPeer(keys(), marked.peerId, { attributes: { sponsor: 'yes' } })
    await relay.handle.reloadAuthorized()
    const markedConn = await connect(marked)
    assert.equal((await askRelay(markedConn, { type: 'sponsor', peer: joiner })).ok, false)
    relay.handle.invites.open(marked.peerId, 60_000)
    relay.handle.invites.admit(marked.peerId, joiner)
    assert.deepEqual(await askRelay(markedConn, { type: 'sponsor', peer: joiner }), { ok: true })
  })

  it('off: nobody sponsors', async () => {
    await withPolicy('off')
    const refused = await askRelay(await connect(caller), { type: 'sponsor', peer: await newPeer() })
    assert.equal(refused.ok, false)
    assert.match(refused.reason ?? '', /sponsoring is off/)
  })

  it('members: an authorized peer in no group learns of none', async () => {
    const answer = await askRelay(await connect(caller), { type: 'members' })
    assert.deepEqual(answer, { ok: true, groups: [] })
  })
})
