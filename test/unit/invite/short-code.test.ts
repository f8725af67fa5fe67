/**
 * Short invite codes: the format (src/invite/short-code.ts) as people type it, then the rule that
 * counts against one, driven through the real exchange — an invite's session (answerPairing) and
 * the joiner's side (proveToken) with CPace — over in-memory streams: the right words pair, a
 * wrong word is refused and counted, three wrong tries burn the short code (and only it), and the
 * right words after that are refused; and a run spliced between two connections fails.
 */

import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { describe, it } from 'node:test'
import type { Connection, Stream } from '@libp2p/interface'
import { streamPair } from '@libp2p/utils'
import { formatError } from '../../../src/errors.ts'
import { CPaceParty } from '../../../src/invite/cpace.ts'
import {
  CodeTypoError,
  CodeUsedError,
  MalformedCodeError,
  PairingProofError,
} from '../../../src/invite/errors.ts'
import { answerPairing, InviteSession } from '../../../src/invite/inviter.ts'
import { proveToken } from '../../../src/invite/joiner.ts'
import { deriveKeys, shortCodeCPace } from '../../../src/invite/protocol.ts'
import {
  createShortWords,
  formatShortCode,
  looksLikeShortCode,
  MAX_SHORT_CODE_FAILURES,
  parseShortCode,
  type ShortCode,
  shortCodeId,
} from '../../../src/invite/short-code.ts'
import { SHORT_CODE_WORDS } from '../../../src/invite/words.ts'
import { configureLogging, createLogger } from '../../../src/log/index.ts'

configureLogging({ level: 'error' })

describe('the short code format', () => {
  it('the word list: 1295 distinct lowercase words of the EFF short list', () => {
    assert.equal(SHORT_CODE_WORDS.length, 1295)
    assert.equal(new Set(SHORT_CODE_WORDS).size, 1295)
    assert.ok(SHORT_CODE_WORDS.every((w) => /^[a-z]{3,5}$/.test(w)))
    assert.equal(SHORT_CODE_WORDS[0], 'acid')
    assert.equal(SHORT_CODE_WORDS.at(-1), 'zoom')
  })

  it('reads what people type: any case, dashes or spaces', () => {
    for (const typed of [
      '7-acorn-zebra',
      '7 acorn zebra',
      '  7-Acorn-ZEBRA\n',
      '7 - acorn -  zebra',
      '007-acorn-zebra',
    ]) {
      assert.deepEqual(parseShortCode(typed), { nameplate: 7, words: ['acorn', 'zebra'] }, typed)
    }
    const made = { nameplate: 42, words: createShortWords() }
    assert.deepEqual(parseShortCode(formatShortCode(made)), made)
  })

  it('tells a short code from a long one', () => {
    assert.equal(looksLikeShortCode('7-acorn-zebra'), true)
    assert.equal(looksLikeShortCode('999 acorn zebra'), true)
    assert.equal(looksLikeShortCode('04AB-CDEF-GH12'), false)
    assert.equal(looksLikeShortCode('0123-4567'), false)
  })

  const cases: Array<{
    typed: string
    error: typeof MalformedCodeError | typeof CodeTypoError
    message: RegExp
  }> = [
    { typed: 'acorn-zebra', error: MalformedCodeError, message: /not a short pairing code/ },
    { typed: '7-acorn', error: MalformedCodeError, message: /has 2 words after its number, this one has 1/ },
    { typed: '7-acorn-zebra-zoom', error: MalformedCodeError, message: /this one has 3/ },
    { typed: '0-acorn-zebra', error: MalformedCodeError, message: /from 1 to 999/ },
    { typed: '7-ac0rn-zebra', error: MalformedCodeError, message: /not a short pairing code/ },
    // One letter off a single word of the list: changed, dropped, added, two neighbours swapped.
    {
      typed: '7-acorm-zebra',
      error: CodeTypoError,
      message: /^word 1 .* one letter off a word of the list — did you mean that one\?$/,
    },
    { typed: '7-acorn-zbra', error: CodeTypoError, message: /^word 2 .*did you mean/ },
    { typed: '7-acorn-zebbra', error: CodeTypoError, message: /^word 2 .*did you mean/ },
    { typed: '7-acorn-ezbra', error: CodeTypoError, message: /^word 2 .*did you mean/ },
    {
      typed: '7-acorn-qqqqqq',
      error: CodeTypoError,
      message: /^word 2 of the short code is not a word of the list$/,
    },
  ]
  for (const c of cases) {
    it(`${c.typed}: ${c.error.name}`, () => {
      assert.throws(
        () => parseShortCode(c.typed),
        (err: Error) => {
          assert.ok(err instanceof c.error, err.name)
          assert.match(err.message, c.message)
          // One line, and never a word of the code (they are the secret).
          const shown = formatError(err)
          assert.doesNotMatch(shown.split('\n')[0] ?? '', /acorn|zebra|acorm|zbra/)
          assert.doesNotMatch(err.message, /\n/)
          return true
        },
      )
    })
  }

  it('the code id is public and names the nameplate only', () => {
    assert.equal(shortCodeId(7), shortCodeId(7))
    assert.notEqual(shortCodeId(7), shortCodeId(8))
    assert.match(shortCodeId(7), /^[0-9a-f]{16}$/)
  })
})

const connectionOf = (remote: string): Connection =>
  ({ remotePeer: { toString: () => remote } }) as unknown as Connection

describe('what counts against a short code', () => {
  const log = createLogger('test')
  const code: ShortCode = { nameplate: 7, words: ['acorn', 'zebra'] }

  function invite() {
    const token = randomBytes(16)
    const failures: Array<{ peer: string; remaining: number }> = []
    const session = new InviteSession({
      token,
      expires: new Date(Date.now() + 60_000),
      onJoin: async () => ({ name: 'home' }),
      onShortFailure: (peer, remaining) => failures.push({ peer, remaining }),
    })
    session.offerShort(code)
    return { session, token, failures }
  }

  /**
   * One join by `joiner` with `secret` against `session`; resolves with what it threw, or the
   * accept. `believes` is who the joiner thinks it is talking to and who it is (default: who they
   * are), as a relay splicing two connections would make them differ.
   */
  async function join(
    session: InviteSession,
    joiner: string,
    secret: { short: ShortCode } | { token: Uint8Array },
    believes: { inviter?: string; joiner?: string } = {},
  ): Promise<unknown> {
    const [out, inbound]: [Stream, Stream] = await streamPair()
    const answered = answerPairing(inbound, connectionOf(joiner), {
      localPeerId: 'inviter',
      book: session,
      log,
    })
    try {
      return await proveToken(out, {
        localPeerId: believes.joiner ?? joiner,
        remotePeerId: believes.inviter ?? 'inviter',
        secret,
        name: joiner,
        onAccept: async () => {},
      })
    } catch (err) {
      return err
    } finally {
      await answered
    }
  }

  it('the right words pair', async () => {
    const { session } = invite()
    const result = (await join(session, 'laptop', { short: { ...code } })) as { accept: { name?: string } }
    assert.equal(result.accept.name, 'home')
    assert.equal((await session.joined).peerId, 'laptop')
    assert.equal(session.state, 'used')
  })

  it('3 wrong tries (from any peers) burn it; the right words are refused after; the long code still pairs', async () => {
    const { session, token, failures } = invite()
    const wrong: ShortCode = { nameplate: 7, words: ['acorn', 'zebu'] }
    for (const [i, peer] of ['m1', 'm2', 'm1'].entries()) {
      const err = (await join(session, peer, { short: wrong })) as Error
      const left = MAX_SHORT_CODE_FAILURES - i - 1
      if (left > 0) {
        assert.ok(err instanceof PairingProofError, `${err}`)
        assert.match(err.message, new RegExp(`a word is wrong \\(${left} tr`))
      } else {
        assert.ok(err instanceof CodeUsedError, `${err}`)
        assert.match(err.message, /the short code is burned: 3 wrong tries/)
      }
      assert.doesNotMatch(formatError(err), /acorn|zebu|zebra/)
    }
    assert.deepEqual(
      failures.map((f) => f.remaining),
      [2, 1, 0],
    )
    assert.equal(session.shortBurned, true)
    const after = (await join(session, 'laptop', { short: code })) as Error
    assert.ok(after instanceof CodeUsedError, `${after}`)
    assert.match(after.message, /the short code is burned/)
    assert.equal(failures.length, 3, 'a refused try after the burn counts for nothing more')
    // The long code is another secret: it still works.
    assert.equal(session.state, 'open')
    const long = (await join(session, 'laptop', { token })) as { accept: unknown }
    assert.ok(long.accept !== undefined, `${long}`)
    assert.equal(session.state, 'used')
  })

  it('the run is bound to both peer ids: with the right words, a spliced run fails (and counts)', async () => {
    // A relay in the middle ends one authenticated connection at itself and starts another: each
    // side then sees a different peer id than the other side's own, and the keys differ.
    for (const believes of [{ inviter: 'relay' }, { joiner: 'relay' }]) {
      const { session, failures } = invite()
      const err = (await join(session, 'laptop', { short: code }, believes)) as Error
      assert.ok(err instanceof PairingProofError, `${err}`)
      assert.match(err.message, /a word is wrong \(2 tries left/)
      assert.equal(failures.length, 1)
    }
  })

  it('a short-code exchange under way keeps only the short code busy; one invite pairs one joiner', async () => {
    const { session, token } = invite()
    const nonce = '11'.repeat(32)
    const share = (joiner: string) =>
      Buffer.from(
        new CPaceParty('initiator', shortCodeCPace(code, { inviter: 'inviter', joiner }, nonce)).share,
      ).toString('hex')
    const short = session.open(shortCodeId(7), 'stranger', new Date(), {
      share: share('stranger'),
      nonce,
      inviter: 'inviter',
    })
    assert.equal(short.ok, true)
    // Anyone may start one (the nameplate is public) and let it run: the short code is busy…
    const again = session.open(shortCodeId(7), 'laptop', new Date(), {
      share: share('laptop'),
      nonce,
      inviter: 'inviter',
    })
    assert.deepEqual(again, { ok: false, reason: 'busy' })
    // …the long code is not, and pairs.
    const long = session.open(deriveKeys(token).codeId, 'laptop', new Date())
    assert.equal(long.ok, true)
    await session.accept('invite', { peerId: 'laptop', name: undefined })
    // The short exchange, proven right after all, is refused: the invite is used.
    await assert.rejects(session.accept('short', { peerId: 'stranger', name: undefined }), CodeUsedError)
    assert.equal((await session.joined).peerId, 'laptop')
  })

  it('a wrong nameplate is another code: refused as unknown, counted nowhere', async () => {
    const { session, failures } = invite()
    const err = (await join(session, 'm1', { short: { nameplate: 8, words: code.words } })) as Error
    assert.equal(err.name, 'UnknownCodeError')
    assert.equal(failures.length, 0)
  })

  it('a used invite refuses its short code', async () => {
    const { session, token } = invite()
    await join(session, 'laptop', { token })
    const err = (await join(session, 'other', { short: code })) as Error
    assert.ok(err instanceof CodeUsedError, `${err}`)
    assert.match(err.message, /used already/)
  })

  it('a short hello without a CPace share, or with a share that is no point, is refused uncounted', async () => {
    const { session, failures } = invite()
    const opened = session.open(shortCodeId(7), 'm1', new Date())
    assert.deepEqual(opened, { ok: false, reason: 'bad-message' })
    const bad = session.open(shortCodeId(7), 'm1', new Date(), {
      share: '00'.repeat(32),
      nonce: '11'.repeat(32),
      inviter: 'inviter',
    })
    assert.deepEqual(bad, { ok: false, reason: 'bad-message' })
    assert.equal(failures.length, 0)
    assert.equal(session.state, 'open')
    // The long code's id still opens the long code.
    assert.equal(
      session.open(deriveKeys(Uint8Array.from(randomBytes(16))).codeId, 'm1', new Date()).ok,
      false,
    )
  })
})
