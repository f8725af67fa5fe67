/**
 * invite/join through a real relay with gating on everywhere, all in this process on 127.0.0.1:
 * B invites, A (known to nobody) joins over the limited circuit, both end up authorized, the
 * relay authorizes A on B's word, and a proxied TCP round-trip works right after. Then the abuse
 * cases: a stranger who knows only B's peer id and the relay burns nothing with hellos naming
 * random codes (B hears nothing of it, the real joiner pairs); three wrong proofs against the real
 * code id shut that peer out while B is told and the code stays good for others; ten in all burn
 * it; a used code is refused (by the relay, once the invite has ended), an expired one is refused by the inviter whatever the joiner's clock
 * says, and nothing but the invite protocol is open to a peer that has not paired. No log line
 * carries the code or its token.
 */

import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import * as fs from 'node:fs/promises'
import * as net from 'node:net'
import * as path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { multiaddr } from '@multiformats/multiaddr'
import { loadAuthorizedKeys } from '../../../src/auth/authorized-keys.ts'
import { loadNodeConfig, loadRelayConfig } from '../../../src/config/load.ts'
import {
  createInviteCode,
  decodeInviteCode,
  encodeInviteCode,
  type InviteCode,
} from '../../../src/invite/code.ts'
import {
  CodeExpiredError,
  CodeUsedError,
  InviterUnreachableError,
  UnknownCodeError,
} from '../../../src/invite/errors.ts'
import { runInvite } from '../../../src/invite/invite.ts'
import { answerPairing, InviteSession } from '../../../src/invite/inviter.ts'
import { runJoin } from '../../../src/invite/join.ts'
import { type PairingNode, startPairingNode } from '../../../src/invite/node.ts'
import {
  deriveKeys,
  Framed,
  freshNonce,
  INVITE_PROTOCOL,
  INVITE_STREAM_OPTIONS,
  PAIRING_VERSION,
} from '../../../src/invite/protocol.ts'
import { configureLogging, createLogger } from '../../../src/log/index.ts'
import { RelayPairingService } from '../../../src/relay/pairing.ts'
import { tempDir } from '../../helpers/cli.ts'
import { createTestNode, startTestRelay, type TestNode, type TestRelay } from '../../helpers/mesh.ts'

const logs: string[] = []
configureLogging({ level: 'debug', format: 'json', write: (line) => logs.push(line) })

describe('pairing with invite/join through a relay', { timeout: 180_000 }, () => {
  let root: string
  let relay: TestRelay
  let b: TestNode
  let echo: net.Server
  const secrets: string[] = []
  const cleanups: Array<() => Promise<unknown>> = []

  before(async () => {
    root = await tempDir({ after: (fn) => cleanups.push(fn) })
    relay = await startTestRelay(root)
    cleanups.unshift(() => relay.stop())
    const { config } = await loadRelayConfig(path.join(relay.dir, 'relay-server.yaml'))
    const pairing = new RelayPairingService({
      relay: relay.handle,
      config,
      dir: relay.dir,
      log: createLogger('pairing'),
    })
    await pairing.start()
    cleanups.unshift(() => pairing.stop())
    b = await createTestNode(root, 'b', relay)
    await relay.authorize(b.peerId)
    echo = net.createServer((s) => {
      s.on('error', () => {})
      s.pipe(s)
    })
    echo.listen(0, '127.0.0.1')
    await once(echo, 'listening')
    cleanups.unshift(() => new Promise((r) => echo.close(r)))
    await b.addService('echo', `127.0.0.1:${(echo.address() as net.AddressInfo).port}`)
  })

  after(async () => {
    for (const fn of cleanups) {
      await fn().catch(() => {})
    }
    configureLogging({ level: 'error', write: (line) => process.stderr.write(line) })
  })

  /** Starts `peerup invite` on B and resolves with its code once it is printed; `progress` is its stderr. */
  function invite(options: { ttlMs?: number; name?: string } = {}) {
    const controller = new AbortController()
    const { promise: code, resolve } = Promise.withResolvers<string>()
    const progress: string[] = []
    const result = runInvite({
      configFile: b.configFile,
      log: createLogger('invite'),
      name: options.name ?? 'bee',
      ttlMs: options.ttlMs ?? 60_000,
      signal: controller.signal,
      onProgress: (m) => progress.push(m),
      onCode: (text) => {
        secrets.push(text)
        resolve(text)
      },
    })
    result.catch(() => {})
    cleanups.unshift(async () => controller.abort())
    return {
      code,
      result,
      stop: () => controller.abort(),
      warnings: () => progress.filter((m) => m.startsWith('warning')),
    }
  }

  /** The inviter's own warnings in the log so far (what `peerup invite` shows on stderr). */
  const inviterWarnings = (): string[] =>
    logs
      .map((l) => JSON.parse(l) as { level: string; component: string; msg: string })
      .filter((l) => l.level === 'warn' && l.component === 'invite.invite')
      .map((l) => l.msg)

  /** A peer nobody knows, on a pairing node of its own. */
  async function stranger(name: string): Promise<PairingNode> {
    const node = await createTestNode(root, name, relay)
    const pn = await startPairingNode({
      configFile: node.configFile,
      log: createLogger(name),
      reserve: false,
    })
    cleanups.unshift(() => pn.stop())
    return pn
  }

  /**
   * One exchange by hand with B, as someone with a code id but no token: a hello naming `codeId`,
   * then (if challenged) a random proof. Returns the refusal.
   */
  async function attempt(pn: PairingNode, codeId: string): Promise<{ reason: string; remaining?: number }> {
    const conn = await pn.node.dial(multiaddr(`${relay.address}/p2p-circuit/p2p/${b.peerId}`), {
      signal: AbortSignal.timeout(10_000),
    })
    try {
      const stream = await conn.newStream(INVITE_PROTOCOL, {
        ...INVITE_STREAM_OPTIONS,
        signal: AbortSignal.timeout(10_000),
      })
      const framed = new Framed(stream)
      await framed.send({ type: 'hello', v: PAIRING_VERSION, code: codeId, nonce: freshNonce() })
      const challenge = await framed.read(['challenge'])
      const refusal =
        challenge.type === 'error'
          ? challenge
          : await framed
              .send({ type: 'proof', mac: randomBytes(32).toString('hex') })
              .then(() => framed.read(['accept']))
      assert.equal(refusal.type, 'error', 'a random proof is never accepted')
      return {
        reason: refusal.reason,
        ...(refusal.remaining === undefined ? {} : { remaining: refusal.remaining }),
      }
    } finally {
      // Hanging up at once: the inviter waits for that (up to 2 s) before it closes its side.
      await conn.close().catch(() => {})
    }
  }

  function join(node: TestNode, code: InviteCode | string, extra: { now?: () => Date } = {}) {
    return runJoin({
      code: typeof code === 'string' ? decodeInviteCode(code) : code,
      target: { configFile: node.configFile },
      name: node.name,
      log: createLogger(`join-${node.name}`),
      signal: AbortSignal.timeout(60_000),
      ...extra,
    })
  }

  it('pairs A and B: both authorized and named, A sponsored on the relay, and a proxied round-trip works right after', async (t) => {
    const a = await createTestNode(root, 'a', relay)
    const inv = invite()
    const code = await inv.code
    const joined = await join(a, code)
    const invited = await inv.result

    assert.equal(invited.peerId, a.peerId)
    assert.equal(invited.name, 'a')
    assert.deepEqual(invited.sponsored, { ok: true })
    assert.equal(joined.inviter.peerId, b.peerId)
    assert.equal(joined.inviter.name, 'bee')
    assert.deepEqual(joined.sponsored, { ok: true })

    const aKeys = await loadAuthorizedKeys(path.join(a.dir, 'authorized_keys'))
    assert.equal(aKeys.get(b.peerId)?.comment, 'bee')
    const bKeys = await loadAuthorizedKeys(path.join(b.dir, 'authorized_keys'))
    assert.equal(bKeys.get(a.peerId)?.comment, 'a')
    assert.equal((await loadNodeConfig(a.configFile)).config.names.bee, b.peerId)
    assert.equal((await loadNodeConfig(b.configFile)).config.names.a, a.peerId)
    const relayKeys = await loadAuthorizedKeys(path.join(relay.dir, 'relay_authorized_keys'))
    assert.equal(relayKeys.get(a.peerId)?.attributes.sponsor, b.peerId)
    assert.ok(relay.handle.authorized.has(a.peerId), 'the running relay picked it up at once')

    // B's daemon now, A a client: the same bytes come back through the relay, on a full circuit.
    const rb = await b.start('daemon')
    t.after(() => b.stop())
    await rb.supervisor.waitForReservation(AbortSignal.timeout(20_000))
    const ra = await a.start('client')
    t.after(() => a.stop())
    const { stream, path: p } = await ra.openService('bee', 'echo')
    assert.equal(p.type, 'RELAYED')
    assert.equal(p.limited, false)
    const payload = new Uint8Array(256 * 1024).map((_, i) => i % 251)
    const got: Uint8Array[] = []
    let n = 0
    const done = new Promise<void>((resolve) => {
      stream.addEventListener('message', (evt) => {
        const chunk = evt.data.subarray()
        got.push(chunk)
        n += chunk.length
        if (n >= payload.length) resolve()
      })
    })
    stream.send(payload)
    await done
    assert.deepEqual(Buffer.concat(got), Buffer.from(payload))
    await stream.close()
  })

  it('a stranger who knows only the peer id and the relay burns nothing: B hears nothing, the real joiner pairs', async () => {
    const c = await createTestNode(root, 'c', relay)
    const s1 = await stranger('s1')
    const inv = invite()
    const real = decodeInviteCode(await inv.code)
    const warnedBefore = inviterWarnings().length
    // Hellos naming random codes: before, three of these burned the invite.
    for (let i = 0; i < 12; i++) {
      assert.deepEqual(await attempt(s1, randomBytes(8).toString('hex')), { reason: 'unknown-code' })
    }
    // `peerup join` with codes of other invites by B: told plainly, and nothing counted.
    const { token: _token, version: _version, ...fields } = real
    for (let i = 0; i < 3; i++) {
      await assert.rejects(join(c, createInviteCode(fields)), (err: unknown) => {
        assert.ok(err instanceof UnknownCodeError, String(err))
        assert.match(err.message, /^the inviter has no open invite with this code: it expired, was used/)
        return true
      })
    }
    const joined = await join(c, real)
    assert.equal(joined.inviter.peerId, b.peerId)
    assert.equal((await inv.result).peerId, c.peerId)
    assert.deepEqual(inv.warnings(), [], 'the inviter was told about nothing')
    assert.deepEqual(inviterWarnings().slice(warnedBefore), [])
  })

  it('three wrong proofs against the real code id shut that peer out; B is told once, and the real joiner pairs', async () => {
    const c2 = await createTestNode(root, 'c2', relay)
    const s2 = await stranger('s2')
    const inv = invite()
    const real = decodeInviteCode(await inv.code)
    // As someone who got hold of the code id but not the token (or runs a broken peerup).
    const { codeId } = deriveKeys(real.token)
    const answers = []
    for (let i = 0; i < 4; i++) {
      answers.push(await attempt(s2, codeId))
    }
    assert.deepEqual(answers, [
      { reason: 'wrong-proof', remaining: 2 },
      { reason: 'wrong-proof', remaining: 1 },
      { reason: 'burned', remaining: 0 },
      { reason: 'burned', remaining: 0 },
    ])
    assert.equal(inv.warnings().length, 1, inv.warnings().join('\n'))
    assert.match(
      inv.warnings()[0] ?? '',
      new RegExp(
        `^warning: peer ${s2.peerId.slice(0, 8)}…${s2.peerId.slice(-6)} made 3 wrong proofs and is shut out; the code stays open until \\S`,
      ),
    )
    await join(c2, real)
    assert.equal((await inv.result).peerId, c2.peerId)
    assert.equal((await loadAuthorizedKeys(path.join(b.dir, 'authorized_keys'))).has(s2.peerId), false)
  })

  it('ten wrong proofs from four peers burn the code for everyone; the right one is then told so', async () => {
    const c3 = await createTestNode(root, 'c3', relay)
    const peers = await Promise.all(['s3', 's4', 's5', 's6'].map(stranger))
    const inv = invite()
    const real = decodeInviteCode(await inv.code)
    const { codeId } = deriveKeys(real.token)
    for (const pn of peers.slice(0, 3)) {
      for (const remaining of [2, 1]) {
        assert.deepEqual(await attempt(pn, codeId), { reason: 'wrong-proof', remaining })
      }
      assert.deepEqual(await attempt(pn, codeId), { reason: 'burned', remaining: 0 })
    }
    assert.equal(inv.warnings().length, 3)
    assert.deepEqual(await attempt(peers[3]!, codeId), { reason: 'burned', remaining: 0 })
    // The inviter gives up on a burned code (and says why); the right code finds nobody waiting.
    await assert.rejects(
      inv.result,
      (err: unknown) =>
        err instanceof CodeUsedError && /burned after 10 wrong proofs from 4 peers/.test(err.message),
    )
    // B told the relay the code burned: the right code hears that, not just that nobody waits.
    await assert.rejects(
      join(c3, real),
      (err: unknown) => err instanceof CodeUsedError && /too many wrong proofs/.test(err.message),
    )
    // Nothing was written anywhere for them.
    const bKeys = await loadAuthorizedKeys(path.join(b.dir, 'authorized_keys'))
    for (const id of [c3.peerId, ...peers.map((p) => p.peerId)]) {
      assert.equal(bKeys.has(id), false)
    }
    assert.equal((await loadAuthorizedKeys(path.join(c3.dir, 'authorized_keys'))).has(b.peerId), false)
  })

  it('refuses a used code, and an expired one whatever the joiner clock says; an unpaired peer reaches nothing else', async (t) => {
    // The invite protocol held open on B after a join, as a long-running inviter would.
    const pn = await startPairingNode({
      configFile: b.configFile,
      log: createLogger('b-invite'),
      reserve: true,
    })
    t.after(() => pn.stop())
    await pn.supervisor.waitForReservation(AbortSignal.timeout(20_000))
    pn.admitJoiners()
    // What `peerup invite` tells the relay, so that it lets unknown joiners through to B.
    relay.handle.invites.open(b.peerId, 120_000)
    t.after(() => relay.handle.invites.close(b.peerId))
    const sessions: InviteSession[] = []
    await pn.node.handle(
      INVITE_PROTOCOL,
      (stream, connection) => {
        const session = sessions.find((s) => s.state === 'open' || s.state === 'busy') ?? sessions.at(-1)
        answerPairing(stream, connection, {
          localPeerId: pn.peerId,
          book: session!,
          log: createLogger('b'),
        }).catch(() => {})
      },
      INVITE_STREAM_OPTIONS,
    )
    const fields = {
      kind: 'peer' as const,
      relayAddress: relay.address.slice(0, relay.address.lastIndexOf('/p2p/')),
      relayPeerId: relay.peerId,
      inviterPeerId: b.peerId,
      network: '',
    }

    const d = await createTestNode(root, 'd', relay)
    const used = createInviteCode({ ...fields, expires: new Date(Date.now() + 60_000) })
    secrets.push(encodeInviteCode(used))
    sessions.push(
      new InviteSession({ token: used.token, expires: used.expires, onJoin: async () => ({ name: 'bee' }) }),
    )
    await join(d, used)
    await assert.rejects(
      join(d, used),
      (err: unknown) => err instanceof CodeUsedError && /used already/.test(err.message),
    )

    // An unpaired peer connected on the limited circuit: the invite protocol, nothing else.
    const e = await createTestNode(root, 'e', relay)
    const pe = await startPairingNode({ configFile: e.configFile, log: createLogger('e'), reserve: false })
    t.after(() => pe.stop())
    const conn = await pe.node.dial(multiaddr(`${relay.address}/p2p-circuit/p2p/${b.peerId}`))
    assert.ok(conn.limits !== undefined, 'an unknown source gets a limited circuit')
    for (const protocol of ['/peerup/echo/1.0.0', '/peerup/ssh/1.0.0', '/peerup/kad/1.0.0']) {
      await assert.rejects(
        conn.newStream(protocol, { runOnLimitedConnection: true, signal: AbortSignal.timeout(10_000) }),
        `${protocol} must not be open to a peer that has not paired`,
      )
    }

    const expired = createInviteCode({ ...fields, expires: new Date(Date.now() - 1000) })
    secrets.push(encodeInviteCode(expired))
    sessions.push(
      new InviteSession({ token: expired.token, expires: expired.expires, onJoin: async () => ({}) }),
    )
    await assert.rejects(
      join(e, expired, { now: () => new Date(Date.now() - 3_600_000) }),
      (err: unknown) => err instanceof CodeExpiredError && /inviter says/.test(err.message),
    )
    // By the joiner's own clock it does not even get that far.
    await assert.rejects(
      join(e, expired),
      (err: unknown) => err instanceof CodeExpiredError && /expired at/.test(err.message),
    )
    assert.equal((await loadAuthorizedKeys(path.join(b.dir, 'authorized_keys'))).has(e.peerId), false)
  })

  it('says "used already" to a second join once `peerup invite` has ended, from any machine', async () => {
    const f = await createTestNode(root, 'f', relay)
    const g = await createTestNode(root, 'g', relay)
    const inv = invite()
    const code = await inv.code
    await join(f, code)
    await inv.result
    // B's invite is over and its node gone: the relay answers for the code, to the machine that
    // used it (a member now) and to a stranger alike.
    for (const node of [g, f]) {
      await assert.rejects(
        join(node, code),
        (err: unknown) => err instanceof CodeUsedError && /^this code was used already/.test(err.message),
        node.name,
      )
    }
  })

  it('says the inviter is no longer waiting once `peerup invite` stopped before anyone joined', async () => {
    const h = await createTestNode(root, 'h', relay)
    const inv = invite()
    const code = await inv.code
    inv.stop()
    await assert.rejects(inv.result)
    await assert.rejects(join(h, code), (err: unknown) => err instanceof InviterUnreachableError)
  })

  it('logged nothing secret', async () => {
    const text = logs.join('')
    assert.ok(text.length > 0)
    for (const code of secrets) {
      const decoded = decodeInviteCode(code)
      const chars = code.replaceAll('-', '')
      // Every 8 characters (40 bits) of the token's part of the code: its 16 bytes start at byte
      // 2, so characters 4 to 27 carry nothing else. Shorter pieces would match peer ids and hex
      // in the logs by chance (a 4-character needle once did, in CI).
      const pieces = Array.from({ length: 28 - 8 - 4 + 1 }, (_, i) => chars.slice(4 + i, 12 + i))
      for (const needle of [
        code,
        chars,
        ...pieces,
        ...pieces.map((p) => `${p.slice(0, 4)}-${p.slice(4)}`).filter((_, i) => i % 4 === 0),
        Buffer.from(decoded.token).toString('hex'),
        Buffer.from(decoded.token).toString('base64'),
      ]) {
        assert.ok(!text.includes(needle), 'a code or token reached the logs')
      }
    }
    await fs.access(root)
  })
})
