/**
 * Metrics, the audit log and the logs, with a real relay (`runRelay`, telemetry on) and real
 * daemons: a scrape after a proxied transfer shows the bytes and connections moved; the relay
 * counts a refused reservation and the bytes it relayed; every audit event is emitted; no cookie,
 * key or invite code reaches a log line.
 */

import assert from 'node:assert/strict'
import { writeSync } from 'node:fs'
import * as fs from 'node:fs/promises'
import * as net from 'node:net'
import * as path from 'node:path'
import { PassThrough } from 'node:stream'
import { after, before, describe, it } from 'node:test'
import { addAuthorizedPeer } from '../../../src/auth/ops.ts'
import { LocalClient } from '../../../src/client/local.ts'
import { editConfigFile } from '../../../src/config/edit.ts'
import { initRelay } from '../../../src/config/init.ts'
import { nodeConfigSchema, relayConfigSchema } from '../../../src/config/schema.ts'
import { decodeInviteCode } from '../../../src/invite/code.ts'
import { runInvite } from '../../../src/invite/invite.ts'
import { runJoin } from '../../../src/invite/join.ts'
import { configureLogging, createLogger } from '../../../src/log/index.ts'
import { AUDIT_EVENTS } from '../../../src/metrics/audit.ts'
import { stdioEnd } from '../../../src/pipe/node.ts'
import { pipe } from '../../../src/pipe/pipe.ts'
import { runRelay } from '../../../src/relay/serve.ts'
import type { RelayHandle } from '../../../src/relay/server.ts'
import { tempDir } from '../../helpers/cli.ts'
import { startTestDaemon, type TestDaemon } from '../../helpers/daemon.ts'
import { createTestNode, type TestNode, type TestRelay } from '../../helpers/mesh.ts'
import { sample, scrape } from '../../helpers/metrics.ts'

const logs: string[] = []
configureLogging({ level: 'debug', format: 'json', write: (line) => logs.push(line) })

const MiB = 1024 * 1024

async function auditLines(file: string): Promise<Array<Record<string, unknown>>> {
  const text = await fs.readFile(file, 'utf8').catch(() => '')
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>)
}

describe('metrics, audit and logs', { timeout: 180_000 }, () => {
  let root: string
  let relayDir: string
  let relayHandle: RelayHandle
  let relayMetrics: string
  let relayStopped: Promise<void>
  let a: TestNode
  let b: TestNode
  let da: TestDaemon
  let db: TestDaemon
  const stopRelay = new AbortController()
  const cleanups: Array<() => Promise<unknown>> = []

  /** What createTestNode needs of a relay: its address, and its handle (STUN off here). */
  const relayRef = (): TestRelay =>
    ({
      address: relayHandle.addresses().find((x) => x.startsWith('/ip4/127.0.0.1/')),
      handle: relayHandle,
    }) as unknown as TestRelay

  const enableTelemetry = (configFile: string) =>
    editConfigFile(configFile, nodeConfigSchema, (doc) => {
      doc.setIn(['telemetry', 'metrics', 'enabled'], true)
      doc.setIn(['telemetry', 'metrics', 'listen_address'], '127.0.0.1:0')
      doc.setIn(['telemetry', 'audit', 'enabled'], true)
    })

  before(async () => {
    root = await tempDir({ after: (fn) => cleanups.push(fn) })
    const init = await initRelay(path.join(root, 'relay'))
    relayDir = init.dir
    await editConfigFile(init.configFile, relayConfigSchema, (doc) => {
      doc.setIn(['network', 'listen_addresses'], doc.createNode(['/ip4/127.0.0.1/tcp/0']))
      doc.setIn(['stun', 'enabled'], false)
      doc.setIn(['health', 'listen_address'], '127.0.0.1:0')
      doc.setIn(['splice', 'listen_address'], '127.0.0.1:0')
      doc.setIn(['telemetry', 'metrics', 'enabled'], true)
      doc.setIn(['telemetry', 'metrics', 'listen_address'], '127.0.0.1:0')
      doc.setIn(['telemetry', 'audit', 'enabled'], true)
    })
    const ready = Promise.withResolvers<void>()
    relayStopped = runRelay({
      configFile: init.configFile,
      log: createLogger('relay'),
      signal: stopRelay.signal,
      onReady: (handle, extra) => {
        relayHandle = handle
        relayMetrics = extra.metricsAddress as string
        ready.resolve()
      },
    })
    relayStopped.catch(ready.reject)
    await ready.promise
    cleanups.unshift(async () => {
      stopRelay.abort()
      await relayStopped
    })
    const relay = relayRef()
    const authorizeOnRelay = async (peer: string) => {
      await addAuthorizedPeer(init.authorizedKeysFile, peer)
      await relayHandle.reloadAuthorized()
    }
    a = await createTestNode(root, 'a', relay)
    b = await createTestNode(root, 'b', relay)
    await authorizeOnRelay(a.peerId)
    await authorizeOnRelay(b.peerId)
    await addAuthorizedPeer(path.join(b.dir, 'authorized_keys'), a.peerId)
    const echo = net.createServer({ allowHalfOpen: true }, (s) => s.pipe(s))
    await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve))
    cleanups.unshift(() => new Promise((resolve) => echo.close(resolve)))
    const port = (echo.address() as net.AddressInfo).port
    await b.addService('echo', `127.0.0.1:${port}`)
    // Offered to somebody else only: a's stream to it is refused (service_denied).
    await b.addService('secret', `127.0.0.1:${port}`, [
      '12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN',
    ])
    await enableTelemetry(a.configFile)
    await enableTelemetry(b.configFile)
    const bConfig = await fs.readFile(a.configFile, 'utf8')
    await fs.writeFile(a.configFile, bConfig.replace('names: {}', `names:\n  b: ${b.peerId}`))
    db = await startTestDaemon(b.configFile)
    cleanups.unshift(() => db.stop())
    da = await startTestDaemon(a.configFile)
    cleanups.unshift(() => da.stop())
  })

  after(async () => {
    for (const fn of cleanups) {
      await fn().catch(() => {})
    }
    configureLogging({ level: 'error', write: (line) => process.stderr.write(line) })
  })

  it('a scrape after a proxied transfer shows the bytes and connections moved, both sides', async () => {
    const beforeB = await scrape(db.ready.metricsAddress as string)
    const inBefore = sample(beforeB, 'peerup_proxy_bytes_total', { direction: 'in', service: 'echo' }) ?? 0
    const far = await new LocalClient({ configFile: a.configFile }).dial('b', 'echo')
    const input = new PassThrough()
    const output = new PassThrough()
    let echoed = 0
    output.on('data', (c: Buffer) => {
      echoed += c.length
    })
    const done = pipe(stdioEnd(input, output), far)
    input.end(Buffer.alloc(1 * MiB, 7))
    assert.equal((await done).reset, false)
    assert.equal(echoed, MiB)
    // b's end of the session is over once a's last acknowledgement reached it, a moment after a's.
    let b1 = await scrape(db.ready.metricsAddress as string)
    for (
      let i = 0;
      i < 200 && sample(b1, 'peerup_proxy_active_connections', { service: 'echo', side: 'inbound' }) !== 0;
      i++
    ) {
      b1 = await scrape(db.ready.metricsAddress as string)
    }
    assert.equal(sample(b1, 'peerup_proxy_bytes_total', { direction: 'in', service: 'echo' }), inBefore + MiB)
    assert.equal(sample(b1, 'peerup_proxy_bytes_total', { direction: 'out', service: 'echo' }), MiB)
    assert.equal(sample(b1, 'peerup_proxy_connections_total', { service: 'echo', side: 'inbound' }), 1)
    assert.equal(sample(b1, 'peerup_proxy_active_connections', { service: 'echo', side: 'inbound' }), 0)
    assert.ok((sample(b1, 'peerup_auth_decisions_total', { decision: 'allow' }) ?? 0) >= 1)
    assert.equal(sample(b1, 'peerup_info', { role: 'node' }), 1)
    assert.ok((sample(b1, 'peerup_connected_peers', { path_type: 'RELAYED' }) ?? 0) >= 1)
    // The transfer was a resumable session, over now; nothing had to resume.
    assert.equal(sample(b1, 'peerup_sessions', { side: 'accepted', state: 'attached' }), 0)
    assert.equal(sample(b1, 'peerup_session_events_total', { side: 'accepted', event: 'expired' }), 0)
    // libp2p's own metrics are in the same registry.
    assert.match(b1, /^libp2p_/m)
    const a1 = await scrape(da.ready.metricsAddress as string)
    assert.equal(sample(a1, 'peerup_proxy_bytes_total', { direction: 'out', service: 'echo' }), MiB)
    assert.equal(sample(a1, 'peerup_proxy_bytes_total', { direction: 'in', service: 'echo' }), MiB)
    assert.equal(sample(a1, 'peerup_proxy_connections_total', { service: 'echo', side: 'outbound' }), 1)
    assert.ok((sample(a1, 'peerup_path_dial_total', { path_type: 'RELAYED', result: 'success' }) ?? 0) >= 1)
    assert.ok(
      (sample(a1, 'peerup_daemon_requests_total', { method: 'POST', path: '/v1/dial', status: '101' }) ??
        0) >= 1,
    )
    // The relay forwarded it: both directions, 2 MiB and the protocol overhead.
    const r1 = await scrape(relayMetrics)
    assert.ok((sample(r1, 'peerup_relay_relayed_bytes_total') ?? 0) >= 2 * MiB)
    assert.ok((sample(r1, 'peerup_relay_reservations') ?? 0) >= 2)
  })

  it('the relay counts a refused reservation', async () => {
    const before =
      sample(await scrape(relayMetrics), 'peerup_relay_refusals_total', {
        what: 'reservation',
        reason: 'unauthorized',
      }) ?? 0
    const root2 = await tempDir({ after: (fn) => cleanups.push(fn) })
    const stranger = await createTestNode(root2, 's', relayRef())
    const refused = new Promise<void>((resolve) => {
      const onRefusal = (evt: CustomEvent<{ peer: string; what: string }>) => {
        if (evt.detail.peer === stranger.peerId && evt.detail.what === 'reservation') {
          relayHandle.events.removeEventListener('refusal', onRefusal as never)
          resolve()
        }
      }
      relayHandle.events.addEventListener('refusal', onRefusal as never)
    })
    await stranger.start('daemon')
    cleanups.unshift(() => stranger.stop())
    await refused
    const after = sample(await scrape(relayMetrics), 'peerup_relay_refusals_total', {
      what: 'reservation',
      reason: 'unauthorized',
    })
    assert.equal(after, before + 1)
    const relayAudit = await auditLines(path.join(relayDir, 'audit.log'))
    assert.ok(
      relayAudit.some(
        (e) => e.event === 'auth_decision' && e.peer === stranger.peerId && e.decision === 'deny',
      ),
    )
  })

  it('every audit event is emitted', async () => {
    const c = new LocalClient({ configFile: b.configFile })
    // service_denied: a may use echo, not secret.
    // b refuses the session before it begins: the dial is answered with the refusal.
    await assert.rejects(
      new LocalClient({ configFile: a.configFile }).dial('b', 'secret'),
      /not allowed to use service secret/,
    )
    writeSync(2, 'MARK0\n')
    // auth_change: through b's API.
    const extra = '12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK'
    await c.call('authAdd', { peer: extra })
    await c.call('authRemove', { peer: extra })
    writeSync(2, 'MARK1\n')
    // auth_decision deny: a peer b does not know.
    const root3 = await tempDir({ after: (fn) => cleanups.push(fn) })
    const relay = relayRef()
    const unknown = await createTestNode(root3, 'u', relay)
    await addAuthorizedPeer(path.join(relayDir, 'relay_authorized_keys'), unknown.peerId)
    await relayHandle.reloadAuthorized()
    const ru = await unknown.start('client')
    await assert.rejects(ru.reach(b.peerId))
    await unknown.stop()
    writeSync(2, 'MARK2\n')
    // pairing: an invite on a node with the audit log on, and a join.
    const inviter = await createTestNode(root3, 'inviter', relay)
    const joiner = await createTestNode(root3, 'joiner', relay)
    await addAuthorizedPeer(path.join(relayDir, 'relay_authorized_keys'), inviter.peerId)
    await relayHandle.reloadAuthorized()
    await enableTelemetry(inviter.configFile)
    await enableTelemetry(joiner.configFile)
    const code = Promise.withResolvers<string>()
    const invited = runInvite({
      configFile: inviter.configFile,
      log: createLogger('invite'),
      name: 'inviter',
      ttlMs: 60_000,
      signal: AbortSignal.timeout(60_000),
      onCode: (text) => code.resolve(text),
    })
    invited.catch(code.reject)
    writeSync(2, 'MARK3\n')
    const text = await code.promise
    await runJoin({
      code: decodeInviteCode(text),
      target: { configFile: joiner.configFile },
      name: 'joiner',
      log: createLogger('join'),
      signal: AbortSignal.timeout(60_000),
    })
    writeSync(2, 'MARK4\n')
    await invited

    const bAudit = await auditLines(path.join(b.dir, 'audit.log'))
    const seen = new Set([
      ...bAudit.map((e) => e.event),
      ...(await auditLines(path.join(inviter.dir, 'audit.log'))).map((e) => e.event),
      // refusal: the relay's, of the reservation refused in the test before.
      ...(await auditLines(path.join(relayDir, 'audit.log'))).map((e) => e.event),
    ])
    for (const event of AUDIT_EVENTS) {
      assert.ok(seen.has(event), `audit event ${event} was never written`)
    }
    assert.ok(
      bAudit.some((e) => e.event === 'service_denied' && e.service === 'secret' && e.peer === a.peerId),
    )
    assert.ok(bAudit.some((e) => e.event === 'auth_change' && (e.removed as string[]).includes(extra)))
    assert.ok(
      bAudit.some((e) => e.event === 'auth_decision' && e.decision === 'deny' && e.peer === unknown.peerId),
    )
    assert.ok(bAudit.some((e) => e.event === 'api_access' && e.path === '/v1/auth' && e.status === 201))
    const inviterAudit = await auditLines(path.join(inviter.dir, 'audit.log'))
    assert.ok(
      inviterAudit.some((e) => e.event === 'pairing' && e.outcome === 'paired' && e.peer === joiner.peerId),
    )
    const joinerAudit = await auditLines(path.join(joiner.dir, 'audit.log'))
    assert.ok(joinerAudit.some((e) => e.event === 'pairing' && e.role === 'joiner' && e.outcome === 'paired'))
    assert.equal((await fs.stat(path.join(b.dir, 'audit.log'))).mode & 0o777, 0o600)
    // The invite code is a secret: never in an audit line.
    assert.ok(!JSON.stringify(inviterAudit).includes(text.replace(/-/g, '').slice(0, 24)))
    logs.push(`INVITE-CODE-MARKER ${text}\n`)
  })

  it('no cookie, key or invite code appears in any log line, even at debug level', async () => {
    const all = logs.filter((l) => !l.startsWith('INVITE-CODE-MARKER')).join('')
    assert.ok(all.length > 1000, `debug logging produced ${all.length} characters`)
    for (const dir of [a.dir, b.dir]) {
      const cookie = (await fs.readFile(path.join(dir, '.daemon-cookie'), 'utf8')).trim()
      assert.ok(!all.includes(cookie), `the cookie of ${dir} is in the logs`)
      const key = await fs.readFile(path.join(dir, 'identity.key'))
      for (const form of [key.toString('hex'), key.toString('base64'), key.subarray(4, 36).toString('hex')]) {
        assert.ok(!all.includes(form), 'identity key material is in the logs')
      }
    }
    const code =
      logs
        .find((l) => l.startsWith('INVITE-CODE-MARKER'))
        ?.split(' ')[1]
        ?.trim() ?? ''
    assert.ok(code.length > 20)
    for (const form of [code, code.replace(/-/g, ''), code.slice(0, 19)]) {
      assert.ok(!all.includes(form), 'the invite code is in the logs')
    }
  })
})
