/**
 * What counts against a pairing code, for both code books — `peerup invite`'s single code and a
 * relay's group codes — driven through the real exchange (answerPairing) over in-memory streams,
 * from one table: a hello naming a code that is not there never counts, however often and from
 * whomever; three wrong proofs shut that peer out while others still pair; ten in all burn the
 * code; expiry, busy and used are reported as such. Then what the joiner makes of each refusal.
 */

import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { after, describe, it } from 'node:test'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { Connection, Stream } from '@libp2p/interface'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { streamPair } from '@libp2p/utils'
import { initRelay } from '../../../src/config/init.ts'
import { loadRelayConfig } from '../../../src/config/load.ts'
import { formatError } from '../../../src/errors.ts'
import { decodeInviteCode } from '../../../src/invite/code.ts'
import { CodeUsedError, PairingProtocolError, UnknownCodeError } from '../../../src/invite/errors.ts'
import { answerPairing, InviteSession, WrongProofs } from '../../../src/invite/inviter.ts'
import { askSpent, proveToken } from '../../../src/invite/joiner.ts'
import {
  deriveKeys,
  Framed,
  freshNonce,
  INVITE_PROTOCOL,
  MAX_FAILED_PROOFS,
  MAX_FAILED_PROOFS_PER_CODE,
  PAIRING_VERSION,
  proofMac,
} from '../../../src/invite/protocol.ts'
import { configureLogging, createLogger } from '../../../src/log/index.ts'
import type { Observer } from '../../../src/metrics/observer.ts'
import { NO_OBSERVER } from '../../../src/metrics/observer.ts'
import { OpenInvites } from '../../../src/relay/invites.ts'
import { RelayPairingService } from '../../../src/relay/pairing.ts'
import type { RelayHandle } from '../../../src/relay/server.ts'
import { tempDir } from '../../helpers/cli.ts'

// Quiet: refusals are asserted, not read from the logs (one test captures them on purpose).
configureLogging({ level: 'error' })

const cleanups: Array<() => Promise<unknown>> = []
after(async () => {
  for (const fn of cleanups) {
    await fn().catch(() => {})
  }
})

const ids = new Map<string, string>()
/** A real peer id per name (the relay writes accepted ones into relay_authorized_keys). */
async function peer(name: string): Promise<string> {
  let id = ids.get(name)
  if (id === undefined) {
    id = peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()
    ids.set(name, id)
  }
  return id
}

const connectionOf = (remote: string): Connection =>
  ({ remotePeer: { toString: () => remote } }) as unknown as Connection

/** Resolves once the answering side has closed its stream: its book has settled by then. */
function closed(stream: Stream): Promise<void> {
  return new Promise((resolve) => {
    if (stream.status === 'closed' || stream.status === 'aborted' || stream.status === 'reset') {
      resolve()
      return
    }
    stream.addEventListener('close', () => resolve(), { once: true })
  })
}

/** One answering side under test: serves a stream as if `remote` had opened it. */
interface Harness {
  serve(stream: Stream, remote: string): void
  inviter: string
  codeId: string
  key: Uint8Array
  /** Peers the inviter was told are shut out (an invite only). */
  shutOut?: string[]
  /** The relay only: stop and start its pairing on the same state file. */
  restart?(): Promise<void>
  /** The invite only: its outcome. */
  joined?: Promise<unknown>
  /** The relay only: its members' invites, spent codes among them. */
  invites?: OpenInvites
}

const log = createLogger('test')

function inviteHarness(options: { expired?: boolean; observer?: Observer } = {}): Harness {
  const token = randomBytes(16)
  const shutOut: string[] = []
  const inviter = 'inviter'
  const session = new InviteSession({
    token,
    expires: new Date(Date.now() + (options.expired === true ? -1000 : 60_000)),
    onJoin: async () => ({}),
    onShutOut: (p) => shutOut.push(p),
  })
  return {
    inviter,
    ...deriveKeys(token),
    shutOut,
    joined: session.joined,
    serve: (stream, remote) => {
      answerPairing(stream, connectionOf(remote), {
        localPeerId: inviter,
        book: session,
        log,
        observer: options.observer ?? NO_OBSERVER,
      }).catch(() => {})
    },
  }
}

async function relayHarness(options: { expired?: boolean } = {}): Promise<Harness> {
  const dir = await tempDir({ after: (fn) => cleanups.push(fn) })
  const init = await initRelay(dir)
  const { config } = await loadRelayConfig(init.configFile)
  let handler: ((stream: Stream, connection: Connection) => void) | undefined
  // What RelayPairingService uses of a relay; the invite protocol's handler is served by hand.
  const relay = {
    peerId: init.peerId,
    node: {
      handle: async (protocol: string, h: typeof handler) => {
        if (protocol === INVITE_PROTOCOL) handler = h
      },
      unhandle: async () => {},
    },
    authorized: { has: () => true },
    reloadAuthorized: async () => ({ added: [], removed: [] }),
    invites: new OpenInvites(),
  } as unknown as RelayHandle
  const start = async () => {
    const started = new RelayPairingService({
      relay,
      config,
      dir,
      log,
      codeAddress: '/ip4/127.0.0.1/tcp/7777',
    })
    await started.start()
    return started
  }
  let pairing = await start()
  cleanups.push(() => pairing.stop())
  const group = await pairing.createGroup({ count: 2, ttlMs: options.expired === true ? 0 : 60_000 })
  const token = decodeInviteCode(group.codes[0] as string).token
  return {
    inviter: init.peerId,
    ...deriveKeys(token),
    serve: (stream, remote) => handler?.(stream, connectionOf(remote)),
    invites: relay.invites,
    restart: async () => {
      await pairing.stop()
      pairing = await start()
    },
  }
}

/** A joiner that speaks the protocol by hand: any code id, a right or a wrong proof, or none yet. */
class RawJoiner {
  readonly #h: Harness
  readonly #held = new Map<string, { framed: Framed; served: Promise<void> }>()

  constructor(h: Harness) {
    this.#h = h
  }

  /** Says hello as `remote`; returns `challenge`, or the refusal as `reason[:remaining]`. */
  async hello(remote: string, code: 'real' | 'other'): Promise<string> {
    const [out, inbound] = await streamPair()
    const served = closed(inbound)
    this.#h.serve(inbound, remote)
    const framed = new Framed(out)
    const nonce = freshNonce()
    const codeId = code === 'real' ? this.#h.codeId : randomBytes(8).toString('hex')
    await framed.send({ type: 'hello', v: PAIRING_VERSION, code: codeId, nonce })
    const challenge = await framed.read(['challenge'])
    if (challenge.type === 'error') {
      await framed.close()
      await served
      return refusal(challenge)
    }
    this.#held.set(remote, { framed, served })
    this.nonces.set(remote, { inviter: challenge.nonce, joiner: nonce })
    return 'challenge'
  }

  readonly nonces = new Map<string, { inviter: string; joiner: string }>()

  /** Sends the held exchange's proof; returns `accept` or the refusal. */
  async prove(remote: string, proof: 'right' | 'wrong'): Promise<string> {
    const held = this.#held.get(remote)
    assert.ok(held !== undefined, `${remote} holds no exchange`)
    this.#held.delete(remote)
    const ids = { inviter: this.#h.inviter, joiner: remote }
    const mac =
      proof === 'right'
        ? proofMac(this.#h.key, 'joiner', ids, this.nonces.get(remote)!)
        : randomBytes(32).toString('hex')
    try {
      await held.framed.send({ type: 'proof', mac })
      const answer = await held.framed.read(['accept'])
      if (answer.type === 'error') {
        return refusal(answer)
      }
      await held.framed.send({ type: 'done' })
      return 'accept'
    } finally {
      await held.framed.close()
      await held.served
    }
  }

  /** Walks away from a held exchange before proving anything. */
  async release(remote: string): Promise<void> {
    const held = this.#held.get(remote)
    assert.ok(held !== undefined, `${remote} holds no exchange`)
    this.#held.delete(remote)
    await held.framed.close()
    await held.served
  }
}

const refusal = (m: { reason: string; remaining?: number }): string =>
  m.remaining === undefined ? m.reason : `${m.reason}:${m.remaining}`

/**
 * A step: a whole attempt (`as` a peer, with the real code id or another, a right or wrong proof),
 * a held hello (`hold`: the exchange stays at the challenge), walking away from it (`release`), or a
 * relay restart. `want` is `accept`, `challenge` or the refusal as `reason[:remaining]`.
 */
type Step =
  | { as: string; code: 'real' | 'other'; proof: 'right' | 'wrong'; want: string }
  | { as: string; hold: true; want: string }
  | { as: string; release: true }
  | { restart: true }

const wrong = (as: string, want: string): Step => ({ as, code: 'real', proof: 'wrong', want })
const right = (as: string, want: string): Step => ({ as, code: 'real', proof: 'right', want })
const other = (as: string): Step => ({ as, code: 'other', proof: 'right', want: 'unknown-code' })
/** `as` makes its three wrong proofs and is shut out. */
const shutOut = (as: string): Step[] => [
  wrong(as, 'wrong-proof:2'),
  wrong(as, 'wrong-proof:1'),
  wrong(as, 'burned:0'),
]

interface Scenario {
  name: string
  steps: Step[]
  expired?: boolean
  /** The peers the inviter is told about (an invite only). */
  toldOf?: string[]
  /** Only one of the books (a restart exists only for the relay). */
  only?: 'invite' | 'relay'
  /** The invite's outcome: rejected with this, if given. */
  burnedWith?: RegExp
}

const scenarios: Scenario[] = [
  {
    name: 'hellos naming other codes, from many peers, any number of times, burn nothing',
    steps: [...Array.from({ length: 40 }, (_, i) => other(`s${i % 8}`)), right('a', 'accept')],
    toldOf: [],
  },
  {
    name: 'three wrong proofs shut A out (even with the right proof then); B still pairs',
    steps: [
      ...shutOut('a'),
      right('a', 'burned:0'),
      other('a'),
      { as: 'b', hold: true, want: 'challenge' },
      { as: 'b', release: true },
      right('b', 'accept'),
    ],
    toldOf: ['a'],
  },
  {
    name: 'wrong proofs under the limit do not stop that peer',
    steps: [wrong('a', 'wrong-proof:2'), wrong('a', 'wrong-proof:1'), right('a', 'accept')],
    toldOf: [],
  },
  {
    name: `${MAX_FAILED_PROOFS_PER_CODE} wrong proofs in all burn the code for everyone`,
    steps: [
      ...shutOut('a'),
      ...shutOut('b'),
      ...shutOut('c'),
      other('s'),
      wrong('d', 'burned:0'),
      right('e', 'burned'),
      other('s'),
    ],
    toldOf: ['a', 'b', 'c'],
    burnedWith: /burned after 10 wrong proofs from 4 peers/,
  },
  {
    name: 'an expired code is refused as expired; a stranger still learns only unknown-code',
    expired: true,
    steps: [right('a', 'expired'), wrong('a', 'expired'), other('s')],
  },
  {
    name: 'busy while an exchange is under way; a stranger is not told that either',
    steps: [
      { as: 'a', hold: true, want: 'challenge' },
      right('b', 'busy'),
      other('s'),
      { as: 'a', release: true },
      right('b', 'accept'),
    ],
  },
  {
    name: 'a used code is refused as used, to anyone who has it',
    steps: [right('a', 'accept'), right('b', 'used'), wrong('b', 'used'), other('s')],
  },
  {
    name: 'the ceiling holds across a relay restart; who made the wrong proofs is forgotten',
    only: 'relay',
    steps: [
      ...shutOut('a'),
      ...shutOut('b'),
      { restart: true },
      wrong('a', 'wrong-proof:2'),
      ...shutOut('c'),
      right('d', 'burned'),
    ],
  },
]

async function run(h: Harness, steps: Step[]): Promise<void> {
  const joiner = new RawJoiner(h)
  for (const [i, step] of steps.entries()) {
    const at = `step ${i + 1}: ${JSON.stringify(step)}`
    if ('restart' in step) {
      await h.restart!()
      continue
    }
    const remote = await peer(step.as)
    if ('release' in step) {
      await joiner.release(remote)
      continue
    }
    if ('hold' in step) {
      assert.equal(await joiner.hello(remote, 'real'), step.want, at)
      continue
    }
    const said = await joiner.hello(remote, step.code)
    const got = said === 'challenge' ? await joiner.prove(remote, step.proof) : said
    assert.equal(got, step.want, at)
  }
}

for (const kind of ['invite', 'relay'] as const) {
  describe(`what counts against a code: ${kind === 'invite' ? '`peerup invite`' : "a relay's group code"}`, () => {
    for (const s of scenarios.filter((x) => x.only === undefined || x.only === kind)) {
      it(s.name, { timeout: 30_000 }, async () => {
        const h =
          kind === 'invite'
            ? inviteHarness({ ...(s.expired === undefined ? {} : { expired: s.expired }) })
            : await relayHarness({ ...(s.expired === undefined ? {} : { expired: s.expired }) })
        await run(h, s.steps)
        if (kind === 'invite' && s.toldOf !== undefined) {
          assert.deepEqual(h.shutOut, await Promise.all(s.toldOf.map(peer)))
        }
        if (kind === 'invite' && s.burnedWith !== undefined) {
          await assert.rejects(
            h.joined!,
            (err: unknown) => err instanceof CodeUsedError && s.burnedWith!.test(err.message),
          )
        }
      })
    }
  })
}

describe('WrongProofs', () => {
  it(`shuts a peer out at ${MAX_FAILED_PROOFS} and burns at ${MAX_FAILED_PROOFS_PER_CODE} in all, counting from a saved total`, () => {
    const w = new WrongProofs()
    assert.deepEqual(w.record('a'), { remaining: 2, burned: false })
    assert.deepEqual(w.record('b'), { remaining: 2, burned: false })
    assert.equal(w.shutOut('a'), false)
    w.record('a')
    assert.deepEqual(w.record('a'), { remaining: 0, burned: false })
    assert.equal(w.shutOut('a'), true)
    assert.equal(w.shutOut('b'), false)
    assert.deepEqual([w.total, w.peers, w.burned], [4, 2, false])
    const saved = new WrongProofs(MAX_FAILED_PROOFS_PER_CODE - 1)
    assert.equal(saved.shutOut('a'), false)
    assert.deepEqual(saved.record('a'), { remaining: 0, burned: true })
    assert.equal(saved.burned, true)
  })
})

describe('the audit and the log of refusals', () => {
  it('tell unknown codes, wrong proofs, shut-outs and burning apart; an unknown code is no warning', async () => {
    const events: string[] = []
    const lines: string[] = []
    const observer = {
      ...NO_OBSERVER,
      pairing: (e: { outcome: string; reason?: string }) => events.push(`${e.outcome}:${e.reason}`),
    }
    configureLogging({ level: 'info', format: 'json', write: (line) => lines.push(line) })
    try {
      const h = inviteHarness({ observer })
      await run(h, [other('s'), ...shutOut('a'), ...shutOut('b'), ...shutOut('c'), wrong('d', 'burned:0')])
    } finally {
      configureLogging({ level: 'error', write: (line) => process.stderr.write(line) })
    }
    assert.deepEqual(events, [
      'refused:unknown-code',
      ...['a', 'b', 'c'].flatMap(() => ['refused:wrong-proof', 'refused:wrong-proof', 'refused:shut-out']),
      'refused:burned',
    ])
    const parsed = lines.map((l) => JSON.parse(l) as { level: string; msg: string; reason?: string })
    const unknown = parsed.filter((l) => l.reason === 'unknown-code')
    assert.equal(unknown.length, 1)
    assert.equal(unknown[0]?.level, 'info')
    assert.equal(parsed.filter((l) => l.level === 'warn' && l.msg === 'wrong pairing proof').length, 10)
  })
})

describe('what the joiner makes of a refusal', () => {
  /** Runs proveToken against `serve` and returns what it threw. */
  async function joinAgainst(
    serve: (stream: Stream, remote: string) => void,
    options: { token?: Uint8Array; answeredBy?: 'inviter' | 'relay' } = {},
  ): Promise<unknown> {
    const [out, inbound] = await streamPair()
    serve(inbound, 'joiner')
    try {
      await proveToken(out, {
        localPeerId: 'joiner',
        remotePeerId: 'inviter',
        secret: { token: options.token ?? randomBytes(16) },
        ...(options.answeredBy === undefined ? {} : { answeredBy: options.answeredBy }),
        onAccept: async () => {},
      })
    } catch (err) {
      return err
    }
    assert.fail('the join should have been refused')
  }

  /** An answering side that refuses every hello with `reason`, as it stands on the wire. */
  const refusing =
    (reason: string) =>
    (stream: Stream): void => {
      const framed = new Framed(stream)
      framed
        .read(['hello'])
        .then(() => framed.send({ type: 'error', reason }))
        .finally(() => framed.close())
        .catch(() => {})
    }

  it('another code than the open invite: says so plainly, in one line, and names who answered', async () => {
    const h = inviteHarness()
    const err = await joinAgainst(h.serve)
    assert.ok(err instanceof UnknownCodeError, String(err))
    assert.equal(
      formatError(err),
      "the inviter has no open invite with this code: it expired, was used, or is another invite's — ask for a new code (`peerup invite` on the other machine)",
    )
    const fromRelay = await joinAgainst(refusing('unknown-code'), { answeredBy: 'relay' })
    assert.ok(fromRelay instanceof UnknownCodeError)
    assert.match(
      formatError(fromRelay),
      /^the relay has no group code like this one: .* — ask the relay operator/,
    )
    assert.doesNotMatch(formatError(fromRelay), /\n/)
  })

  it('a reason from a newer peerup is a refusal named as such; one that is not a plain word is malformed', async () => {
    const newer = await joinAgainst(refusing('slow-down'))
    assert.ok(newer instanceof PairingProtocolError)
    assert.match(newer.message, /could not complete the pairing \(slow-down\)/)
    const odd = await joinAgainst(refusing('\u001b[2Jgotcha'))
    assert.ok(odd instanceof PairingProtocolError)
    assert.match(odd.message, /malformed error message/)
  })

  it('being shut out, or a burned code, reads as a refusal of this code now', async () => {
    const err = await joinAgainst(refusing('burned'))
    assert.ok(err instanceof CodeUsedError)
    assert.match(
      formatError(err),
      /refuses this code now: too many wrong proofs .* — ask the inviter for a new code/,
    )
  })
})

describe("a member's spent invite code, at the relay", () => {
  /** What the relay says when asked about `token`'s code: the error the joiner reports, or undefined. */
  async function ask(h: Harness, token: Uint8Array): Promise<Error | undefined> {
    const [out, inbound] = await streamPair()
    h.serve(inbound, await peer('joiner'))
    return askSpent(out, token, AbortSignal.timeout(10_000))
  }

  it('is refused as used or burned once its inviter said so, and only under its spent id', async () => {
    const h = await relayHarness()
    const [used, burned, open] = [randomBytes(16), randomBytes(16), randomBytes(16)]
    const member = await peer('member')
    h.invites!.spend(member, deriveKeys(used).spentId, 'used', 60_000)
    h.invites!.spend(member, deriveKeys(burned).spentId, 'burned', 60_000)
    const err = await ask(h, used)
    assert.ok(err instanceof CodeUsedError, String(err))
    assert.match(
      formatError(err),
      /^this code was used already: a code pairs one machine, once — ask the inviter/,
    )
    assert.match(String(await ask(h, burned)), /too many wrong proofs/)
    // Nothing is known of a code nobody spent; and the code id itself names nothing here.
    assert.equal(await ask(h, open), undefined)
    const joiner = new RawJoiner({ ...h, codeId: deriveKeys(used).codeId })
    assert.equal(await joiner.hello(await peer('joiner'), 'real'), 'unknown-code')
  })

  it('is forgotten when the code would have expired, and a member keeps only its latest 16', () => {
    let now = 0
    const invites = new OpenInvites(() => now)
    invites.spend('m', 'old', 'used', 1_000)
    now = 999
    assert.equal(invites.spent('old'), 'used')
    now = 1_000
    assert.equal(invites.spent('old'), undefined)
    for (let i = 0; i < 20; i++) {
      invites.spend('m', `m${i}`, 'used', 60_000)
    }
    invites.spend('n', 'n0', 'burned', 60_000)
    assert.deepEqual(
      Array.from({ length: 20 }, (_, i) => invites.spent(`m${i}`) !== undefined),
      Array.from({ length: 20 }, (_, i) => i >= 4),
    )
    assert.equal(invites.spent('n0'), 'burned')
  })
})
