/**
 * Relay group codes with a real relay: the admin socket (cookie-guarded) makes three codes, three
 * nodes unknown to everyone join at once, and each ends up authorized on the relay and with the
 * two others. State survives a relay restart: a used code stays used, an open one still works,
 * and a revoked group's codes stop working.
 */

import assert from 'node:assert/strict'
import * as fs from 'node:fs/promises'
import * as http from 'node:http'
import * as path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { multiaddr } from '@multiformats/multiaddr'
import { loadAuthorizedKeys } from '../../../src/auth/authorized-keys.ts'
import { LocalClient } from '../../../src/client/local.ts'
import { loadNodeConfig, loadRelayConfig } from '../../../src/config/load.ts'
import { decodeInviteCode } from '../../../src/invite/code.ts'
import { CodeUsedError } from '../../../src/invite/errors.ts'
import { runJoin } from '../../../src/invite/join.ts'
import { startPairingNode } from '../../../src/invite/node.ts'
import { askRelay } from '../../../src/invite/relay-admin.ts'
import { createLogger } from '../../../src/log/index.ts'
import { RELAY_ADMIN_FILES, RelayAdminClient, RelayAdminServer } from '../../../src/relay/admin.ts'
import { GROUPS_FILE, RelayPairingService } from '../../../src/relay/pairing.ts'
import { tempDir } from '../../helpers/cli.ts'
import { startTestDaemon } from '../../helpers/daemon.ts'
import { createTestNode, startTestRelay, type TestNode, type TestRelay } from '../../helpers/mesh.ts'

describe('relay group codes', { timeout: 180_000 }, () => {
  let root: string
  let relay: TestRelay
  let pairing: RelayPairingService
  let admin: RelayAdminServer
  const cleanups: Array<() => Promise<unknown>> = []

  async function startPairing(): Promise<void> {
    const { config } = await loadRelayConfig(path.join(relay.dir, 'relay-server.yaml'))
    pairing = new RelayPairingService({
      relay: relay.handle,
      config,
      dir: relay.dir,
      log: createLogger('pairing'),
    })
    await pairing.start()
    admin = new RelayAdminServer({ pairing, log: createLogger('admin') }, { dir: relay.dir })
    await admin.start()
  }

  async function stopPairing(): Promise<void> {
    await admin.stop()
    await pairing.stop()
  }

  before(async () => {
    root = await tempDir({ after: (fn) => cleanups.push(fn) })
    relay = await startTestRelay(root)
    await startPairing()
    cleanups.unshift(async () => {
      await stopPairing().catch(() => {})
      await relay.stop()
    })
  })

  after(async () => {
    for (const fn of cleanups) {
      await fn().catch(() => {})
    }
  })

  const join = (node: TestNode, code: string) =>
    runJoin({
      code: decodeInviteCode(code),
      target: { configFile: node.configFile },
      name: node.name,
      log: createLogger(`join-${node.name}`),
      signal: AbortSignal.timeout(60_000),
    })

  it('keeps the admin socket to its owner: 0600, and a cookie is required', async () => {
    const socket = path.join(relay.dir, RELAY_ADMIN_FILES.socket)
    assert.equal((await fs.stat(socket)).mode & 0o777, 0o600)
    assert.equal((await fs.stat(path.join(relay.dir, RELAY_ADMIN_FILES.cookie))).mode & 0o777, 0o600)
    const status = await new Promise<number>((resolve, reject) => {
      const req = http.request({ socketPath: socket, path: '/v1/pair', method: 'GET' }, (res) => {
        res.resume()
        resolve(res.statusCode ?? 0)
      })
      req.on('error', reject)
      req.end()
    })
    assert.equal(status, 401)
  })

  it('three machines join with group codes and all trust each other', async () => {
    const client = new RelayAdminClient(relay.dir)
    const created = await client.createGroup(3, 3_600_000)
    assert.equal(created.codes.length, 3)
    assert.equal(new Set(created.codes).size, 3)
    const nodes = await Promise.all(['m1', 'm2', 'm3'].map((n) => createTestNode(root, n, relay)))
    // Joined at once, in no particular order: each waits until the group is full.
    const results = await Promise.all(nodes.map((n, i) => join(n, created.codes[i] as string)))
    for (const [i, node] of nodes.entries()) {
      assert.equal(results[i]?.group?.complete, true)
      const keys = await loadAuthorizedKeys(path.join(node.dir, 'authorized_keys'))
      const { config } = await loadNodeConfig(node.configFile)
      for (const other of nodes.filter((o) => o !== node)) {
        assert.equal(
          keys.get(other.peerId)?.attributes.group,
          created.group.id,
          `${node.name} trusts ${other.name}`,
        )
        assert.equal(config.names[other.name], other.peerId)
      }
      assert.ok(relay.handle.authorized.has(node.peerId), `${node.name} is authorized on the relay`)
    }
    const relayKeys = await loadAuthorizedKeys(path.join(relay.dir, 'relay_authorized_keys'))
    assert.equal(relayKeys.get(nodes[0]!.peerId)?.attributes.group, created.group.id)
    const [listed] = (await client.listGroups()).filter((g) => g.id === created.group.id)
    assert.equal(listed?.used, 3)
    assert.equal(listed?.members.length, 3)
    // A member that missed introductions can ask the relay for the group.
    const pn = await startPairingNode({
      configFile: nodes[0]!.configFile,
      log: createLogger('m1'),
      reserve: false,
    })
    try {
      const answer = await askRelay(await pn.node.dial(multiaddr(relay.address)), { type: 'members' })
      const group = answer.groups?.find((g) => g.id === created.group.id)
      assert.deepEqual(group?.members.map((m) => m.peerId).sort(), nodes.map((n) => n.peerId).sort())
    } finally {
      await pn.stop()
    }
    // The state file holds no code and no token, only derived keys.
    const state = await fs.readFile(path.join(relay.dir, GROUPS_FILE), 'utf8')
    assert.equal((await fs.stat(path.join(relay.dir, GROUPS_FILE))).mode & 0o777, 0o600)
    for (const code of created.codes) {
      assert.ok(!state.includes(Buffer.from(decodeInviteCode(code).token).toString('hex')))
      assert.ok(!state.includes(code.slice(0, 14)))
    }
  })

  it('survives a relay restart; revoking stops the unused codes', async () => {
    const client = new RelayAdminClient(relay.dir)
    const created = await client.createGroup(3, 3_600_000)
    const [n1, n2, n3] = await Promise.all(['r1', 'r2', 'r3'].map((n) => createTestNode(root, n, relay)))
    const first = await runJoin({
      code: decodeInviteCode(created.codes[0] as string),
      target: { configFile: n1!.configFile },
      name: 'r1',
      log: createLogger('join-r1'),
      signal: AbortSignal.timeout(60_000),
      waitForGroup: false,
    })
    assert.equal(first.group?.complete, false)

    await stopPairing()
    await relay.restart()
    await startPairing()

    const fresh = new RelayAdminClient(relay.dir)
    const [listed] = (await fresh.listGroups()).filter((g) => g.id === created.group.id)
    assert.equal(listed?.used, 1)
    assert.deepEqual(
      listed?.members.map((m) => m.peerId),
      [n1!.peerId],
    )
    // A used code stays used.
    await assert.rejects(
      join(n2!, created.codes[0] as string),
      (err: unknown) => err instanceof CodeUsedError,
    )
    // An open one still works after the restart, and introduces the member from before.
    const second = await runJoin({
      code: decodeInviteCode(created.codes[1] as string),
      target: { configFile: n2!.configFile },
      name: 'r2',
      log: createLogger('join-r2'),
      signal: AbortSignal.timeout(60_000),
      waitForGroup: false,
    })
    assert.deepEqual(
      second.group?.members.map((m) => m.peerId),
      [n1!.peerId],
    )
    await fresh.revokeGroup(created.group.id)
    await assert.rejects(
      join(n3!, created.codes[2] as string),
      (err: unknown) => err instanceof CodeUsedError && /revoked/.test(err.message),
    )
  })
  it('a member that stopped waiting learns later members from the relay when its daemon starts', async () => {
    const client = new RelayAdminClient(relay.dir)
    const created = await client.createGroup(2, 3_600_000)
    const [early, late] = await Promise.all(['c1', 'c2'].map((n) => createTestNode(root, n, relay)))
    await runJoin({
      code: decodeInviteCode(created.codes[0] as string),
      target: { configFile: early!.configFile },
      name: 'c1',
      log: createLogger('join-c1'),
      signal: AbortSignal.timeout(60_000),
      waitForGroup: false,
    })
    await join(late!, created.codes[1] as string)
    const before = await loadAuthorizedKeys(path.join(early!.dir, 'authorized_keys'))
    assert.equal(before.get(late!.peerId), undefined, 'c1 stopped waiting before c2 joined')
    // c1's daemon asks the relay for its groups' members once it holds a reservation.
    const daemon = await startTestDaemon(early!.configFile)
    cleanups.unshift(() => daemon.stop())
    const events = new LocalClient({ configFile: early!.configFile }).lines(
      'events',
      {},
      AbortSignal.timeout(30_000),
    )

    await events.next() // hello: subscribed from here on
    if (
      (await loadAuthorizedKeys(path.join(early!.dir, 'authorized_keys'))).get(late!.peerId) === undefined
    ) {
      for await (const e of events) {
        if (e.type === 'auth-changed' && e.added.includes(late!.peerId)) {
          break
        }
      }
    }
    await events.return(undefined)
    const after = await loadAuthorizedKeys(path.join(early!.dir, 'authorized_keys'))
    assert.equal(after.get(late!.peerId)?.attributes.group, created.group.id)
  })
})
