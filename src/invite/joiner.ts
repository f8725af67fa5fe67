/**
 * The joining side of the exchange in src/invite/protocol.ts: proves the token on a stream to
 * the inviter (or to a relay, for a group code), checks the inviter's proof in return, and turns
 * every refusal into an error that tells the person what happened.
 *
 * @packageDocumentation
 */

import type { Stream } from '@libp2p/interface'
import { CPaceParty } from './cpace.ts'
import {
  CodeExpiredError,
  CodeUsedError,
  InviterUnreachableError,
  PairingProofError,
  PairingProtocolError,
  UnknownCodeError,
} from './errors.ts'
import {
  deriveKeys,
  Framed,
  freshNonce,
  type GroupMember,
  macEquals,
  PAIRING_VERSION,
  type PairingMessage,
  pakeProofKey,
  proofMac,
  shortCodeCPace,
} from './protocol.ts'
import { MAX_SHORT_CODE_FAILURES, type ShortCode, shortCodeId } from './short-code.ts'

export type Accept = Extract<PairingMessage, { type: 'accept' }>

export interface ProveOptions {
  localPeerId: string
  /** The inviter (the relay, for a group code), as authenticated by the connection. */
  remotePeerId: string
  /** Who answers: the inviter (default), or the relay for a group code; refusals name it. */
  answeredBy?: 'inviter' | 'relay'
  /** What proves the code: a long code's token, or a short code's words (through CPace). */
  secret: { token: Uint8Array } | { short: ShortCode }
  /** This machine's name, for the other side's `names:`. */
  name?: string
  signal?: AbortSignal
  /** Called with the accept, before anything else is read: write this side's files here. */
  onAccept: (accept: Accept) => Promise<void>
  /** A relay group: called for each member that joins after us, while we wait. */
  onMember?: (member: GroupMember) => Promise<void>
  /** A relay group: wait for the group to fill (default), or return right after joining. */
  waitForGroup?: boolean
  groupWaitMs?: number
}

/** Runs the joiner's side on `stream`; resolves with the accept once everything is written. */
export async function proveToken(
  stream: Stream,
  options: ProveOptions,
): Promise<{ accept: Accept; complete: boolean }> {
  const framed = new Framed(stream)
  const { signal, answeredBy = 'inviter', secret } = options
  const short = 'short' in secret ? secret.short : undefined
  try {
    const nonces = { joiner: freshNonce(), inviter: '' }
    const ids = { inviter: options.remotePeerId, joiner: options.localPeerId }
    const side = proofSide(secret, ids, nonces.joiner)
    await framed.send(
      {
        type: 'hello',
        v: PAIRING_VERSION,
        code: side.codeId,
        nonce: nonces.joiner,
        ...(side.pake === undefined ? {} : { pake: side.pake }),
      },
      signal,
    )
    const challenge = await framed.read(['challenge'], { signal })
    if (challenge.type === 'error') {
      throw short === undefined
        ? refusal(challenge.reason, challenge.remaining, answeredBy)
        : shortRefusal(challenge.reason, challenge.remaining)
    }
    nonces.inviter = challenge.nonce
    const key = side.key(challenge.pake)
    await framed.send(
      {
        type: 'proof',
        mac: proofMac(key, 'joiner', ids, nonces),
        ...(options.name === undefined ? {} : { name: options.name }),
      },
      signal,
    )
    const accept = await framed.read(['accept'], { signal })
    if (accept.type === 'error') {
      throw short === undefined
        ? refusal(accept.reason, accept.remaining, answeredBy)
        : shortRefusal(accept.reason, accept.remaining)
    }
    if (!macEquals(accept.mac, proofMac(key, 'inviter', ids, nonces))) {
      throw new PairingProofError('the other side did not prove it knows the code: nothing was written', {
        hint:
          short === undefined
            ? 'make sure the code came from the person you meant to pair with, and ask for a new one'
            : 'the relay may have sent you to someone else: check the relay address and ask for a new code',
      })
    }
    await options.onAccept(accept)
    let complete = accept.group === undefined || accept.group.members.length + 1 >= accept.group.size
    if (accept.group !== undefined && !complete && options.waitForGroup !== false) {
      const deadline = AbortSignal.timeout(options.groupWaitMs ?? 3_600_000)
      const waitSignal = signal === undefined ? deadline : AbortSignal.any([signal, deadline])
      for (;;) {
        const m = await framed
          .read(['member', 'complete'], { signal: waitSignal, timeoutMs: 2 ** 31 - 1 })
          .catch((err: unknown) => {
            if (!waitSignal.aborted) {
              throw err
            }
          })
        // The wait is over, the group is complete, or it stopped (expired, revoked): who joined so
        // far is written already.
        if (m?.type !== 'member') {
          complete = m?.type === 'complete'
          break
        }
        await options.onMember?.({ peerId: m.peerId, ...(m.name === undefined ? {} : { name: m.name }) })
      }
    }
    await framed.send({ type: 'done' }).catch(() => {})
    return { accept, complete }
  } finally {
    await framed.close()
  }
}

/**
 * Asks a relay, on `stream`, whether a member's invite code is spent: a hello naming the code's
 * spent id (never its code id, src/invite/protocol.ts), which a relay its inviter told refuses with
 * `used` or `burned` (src/relay/invites.ts). Resolves with the error that says so, or undefined.
 */
export async function askSpent(
  stream: Stream,
  token: Uint8Array,
  signal?: AbortSignal,
): Promise<Error | undefined> {
  const framed = new Framed(stream)
  try {
    const code = deriveKeys(token).spentId
    await framed.send({ type: 'hello', v: PAIRING_VERSION, code, nonce: freshNonce() }, signal)
    const answer = await framed.read(['challenge'], { ...(signal === undefined ? {} : { signal }) })
    return answer.type === 'error' && (answer.reason === 'used' || answer.reason === 'burned')
      ? refusal(answer.reason, undefined, 'inviter')
      : undefined
  } finally {
    await framed.close()
  }
}

/**
 * The joiner's side of the proof for `secret`: the code id its hello names, its CPace share (a
 * short code), and the MAC key once the challenge has come (for a short code, from the inviter's
 * share, which the challenge must carry).
 */
function proofSide(
  secret: ProveOptions['secret'],
  ids: { inviter: string; joiner: string },
  joinerNonce: string,
): { codeId: string; pake?: string; key: (theirShare: string | undefined) => Uint8Array } {
  if ('token' in secret) {
    const { codeId, key } = deriveKeys(secret.token)
    return { codeId, key: () => key }
  }
  const party = new CPaceParty('initiator', shortCodeCPace(secret.short, ids, joinerNonce))
  return {
    codeId: shortCodeId(secret.short.nameplate),
    pake: Buffer.from(party.share).toString('hex'),
    key: (theirShare) => {
      const isk =
        theirShare === undefined ? undefined : party.finish(Uint8Array.from(Buffer.from(theirShare, 'hex')))
      if (isk === undefined) {
        throw new PairingProtocolError(
          'pairing broke off: the inviter did not answer the short code properly',
          {
            hint: 'check that both machines run a peerup that knows short codes, or use the long code',
          },
        )
      }
      return pakeProofKey(isk)
    },
  }
}

/** The error for a refusal of a short code: a wrong word counts, the rest reads as for a long code. */
function shortRefusal(reason: string, remaining: number | undefined): Error {
  const newCode = 'ask for a new code (`peerup invite` on the other machine), or use the long one it printed'
  switch (reason) {
    case 'wrong-proof':
      return new PairingProofError(
        `the inviter did not accept the short code: a word is wrong${remaining === undefined ? '' : ` (${remaining} tr${remaining === 1 ? 'y' : 'ies'} left before it burns)`}`,
        { hint: 'check each word against what `peerup invite` printed, then try again' },
      )
    case 'burned':
      return new CodeUsedError(
        `the short code is burned: ${MAX_SHORT_CODE_FAILURES} wrong tries were made with it`,
        { hint: newCode },
      )
    case 'unknown-code':
      return new UnknownCodeError('the inviter has no open invite with this short code', { hint: newCode })
    case 'bad-message':
      return new PairingProtocolError('the inviter did not take the short code (an older peerup?)', {
        hint: 'use the long code `peerup invite` printed',
      })
    default:
      return refusal(reason, remaining, 'inviter')
  }
}

/** The error for a refusal; `reason` is any word, since a newer peerup may send one this build does not know. */
function refusal(reason: string, remaining: number | undefined, by: 'inviter' | 'relay'): Error {
  const askOperator = 'ask the relay operator for a new code (`peerup relay pair`)'
  switch (reason) {
    case 'unknown-code':
      return by === 'relay'
        ? new UnknownCodeError(
            "the relay has no group code like this one: it is another relay's, or the relay lost its pairing state",
            { hint: askOperator },
          )
        : new UnknownCodeError(
            "the inviter has no open invite with this code: it expired, was used, or is another invite's",
            { hint: 'ask for a new code (`peerup invite` on the other machine)' },
          )
    case 'wrong-proof':
      // The code id matched, so this machine holds a code of that invite: the proof itself failed.
      return new PairingProofError(
        `the ${by} did not accept this machine's proof of the code${remaining === undefined ? '' : ` (${remaining} attempt${remaining === 1 ? '' : 's'} left for this machine)`}`,
        {
          hint: 'an intact code always proves right: check that both machines run the same peerup version, then ask for a new code',
        },
      )
    case 'burned':
      return new CodeUsedError(`the ${by} refuses this code now: too many wrong proofs were made with it`, {
        hint: by === 'relay' ? askOperator : 'ask the inviter for a new code (`peerup invite`)',
      })
    case 'used':
      return new CodeUsedError('this code was used already: a code pairs one machine, once', {
        hint:
          by === 'relay'
            ? askOperator
            : 'ask the inviter for a new code (`peerup invite`); if this machine did not use it, someone else did, and `peerup auth list` there shows who',
      })
    case 'expired':
      return new CodeExpiredError('the inviter says the code has expired', {
        hint: 'ask for a new one; if it should still be valid, check both clocks',
      })
    case 'revoked':
      return new CodeUsedError('the relay operator revoked this group code', {
        hint: 'ask the relay operator for a new one (`peerup relay pair`)',
      })
    case 'busy':
      return new InviterUnreachableError('the inviter is busy pairing with someone else right now', {
        hint: 'try again in a moment',
      })
    default:
      return new PairingProtocolError(`the inviter could not complete the pairing (${reason})`, {
        hint: 'look at the output of `peerup invite` on the other machine',
      })
  }
}
