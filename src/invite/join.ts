/**
 * `peerup join`: pair with the inviter named in a code. Creates this node's identity and config
 * from the code when there is none, connects to the inviter through the code's relay (a limited
 * circuit: the connection itself authenticates the inviter's peer id), proves the token, and
 * authorizes the inviter here. With a relay's group code the relay answers instead, and every
 * other member of the group is authorized as the relay introduces it. With a short code
 * (`7-acorn-zebra`) the relay is given beside it: the joiner asks it who holds the nameplate
 * (src/invite/nameplate.ts), then proves the words to that peer through CPace.
 *
 * @packageDocumentation
 */

import * as path from 'node:path'
import type { Stream } from '@libp2p/interface'
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr'
import { initNode, removeMade } from '../config/init.ts'
import { loadNodeConfig } from '../config/load.ts'
import { addRelay, relayPeerId, setNetwork } from '../config/ops.ts'
import type { Logger } from '../log/index.ts'
import { auditObserver, type Observer } from '../metrics/observer.ts'
import { explainDialFailure } from '../p2p/reach.ts'
import { assertNotExpired, type InviteCode, relayMultiaddr } from './code.ts'
import { InviterUnreachableError, UnknownCodeError } from './errors.ts'
import { askSpent, proveToken } from './joiner.ts'
import { askNameplate, NAMEPLATE_PROTOCOL } from './nameplate.ts'
import { type PairingNode, startPairingNode } from './node.ts'
import { INVITE_PROTOCOL, INVITE_STREAM_OPTIONS, STEP_TIMEOUT_MS } from './protocol.ts'
import type { ShortCode } from './short-code.ts'
import { type Trusted, trustPeer } from './trust.ts'

/** Where the joiner's node lives: an existing config, or a directory to create one in. */
export type JoinTarget = { configFile: string } | { createIn: string }

/** A short code with the relay the joiner was told (or uses), `…/p2p/<relay>`. */
export interface ShortJoinCode {
  kind: 'short'
  code: ShortCode
  relay: string
}

export interface JoinOptions {
  code: InviteCode | ShortJoinCode
  target: JoinTarget
  /** This machine's name, told to the inviter (and a group's members) for their `names:`. */
  name: string | undefined
  log: Logger
  signal: AbortSignal
  /** Wait for a relay group to fill before returning (default true). */
  waitForGroup?: boolean
  /** This machine's clock (tests). The inviter judges the expiry by its own anyway. */
  now?: () => Date
  onProgress?: (message: string) => void
}

/** What a successful join did. */
export interface JoinResult {
  configFile: string
  /** Whether this join created the node's identity and config. */
  created: boolean
  peerId: string
  /** The peer paired with (for a group code: the relay). */
  inviter: { peerId: string; name: string | undefined }
  /** Whether the relay authorized this node (a peer invite's sponsoring). */
  sponsored: { ok: boolean; reason?: string } | undefined
  group: { id: string; size: number; members: Trusted[]; complete: boolean } | undefined
}

/**
 * Pairs using `code`. A join that fails before the other side accepted leaves things as they were:
 * the node it created for the purpose is removed again (config, key and authorized_keys, and the
 * directory when it made it), and an existing config gets the code's relay only once accepted.
 */
export async function runJoin(options: JoinOptions): Promise<JoinResult> {
  const { code, log } = options
  const progress = options.onProgress ?? (() => {})
  if (code.kind !== 'short') {
    assertNotExpired(code, options.now?.() ?? new Date())
  }
  const relay = joinRelay(code)
  const made: string[] = []
  let accepted = false
  try {
    const target = await joinTarget(options, relay, made)
    return await pairFrom(target, options, async (network) => {
      accepted = true
      if (target.addRelay) {
        await addRelay(target.configFile, relay)
        progress(`added the relay ${relay} to ${target.configFile}`)
      }
      // A short code does not carry the network: the relay told it with the nameplate.
      if (target.created && network !== undefined && network !== '') {
        await setNetwork(target.configFile, network)
      }
    })
  } catch (err) {
    if (!accepted && made.length > 0 && 'createIn' in options.target) {
      const dir = options.target.createIn
      await removeMade(made).then(
        () => progress(`removed the identity and config this join had created in ${dir}`),
        (e: unknown) => log.warn('could not remove what this join had created', { error: e as Error }),
      )
    }
    throw err
  }
}

/** Where a join runs from: the config, and whether it was created for it or lacks the code's relay. */
type JoinFrom = Awaited<ReturnType<typeof joinTarget>>

/** The relay's full address a join goes through. */
function joinRelay(code: InviteCode | ShortJoinCode): string {
  return code.kind === 'short' ? code.relay : relayMultiaddr(code)
}

/** Who a join proves its code to, and with what: from a long code, or a short code's nameplate. */
interface JoinPeer {
  kind: 'peer' | 'group'
  inviterPeerId: string
  secret: { token: Uint8Array } | { short: ShortCode }
  /** How long a group may take to fill. */
  expires?: Date
  /** The inviter's network, as the relay told it for a short code. */
  network?: string
}

/** Connects to the inviter (the relay, for a group code) from `target`'s node and pairs. */
async function pairFrom(
  target: JoinFrom,
  options: JoinOptions,
  onAccepted: (network: string | undefined) => Promise<void>,
): Promise<JoinResult> {
  const { code, log } = options
  const progress = options.onProgress ?? (() => {})
  const relay = joinRelay(code)
  const { configFile, created } = target
  const pn = await startPairingNode({ configFile, log, reserve: false })
  const audit = await auditObserver(pn.config.telemetry.audit, path.dirname(pn.configFile))
  try {
    const peer: JoinPeer =
      code.kind === 'short'
        ? await findNameplate(pn, code, options.signal, progress)
        : {
            kind: code.kind,
            inviterPeerId: code.inviterPeerId,
            secret: { token: code.token },
            expires: code.expires,
          }
    if (code.kind === 'short' && !created && peer.network !== undefined) {
      warnOtherNetwork(log, pn.config.discovery.network, peer.network)
    }
    const to =
      peer.kind === 'group' ? multiaddr(relay) : multiaddr(`${relay}/p2p-circuit/p2p/${peer.inviterPeerId}`)
    progress(
      code.kind === 'group' ? 'connecting to the relay…' : 'connecting to the inviter through the relay…',
    )
    const fail = async (err: unknown): Promise<never> => {
      options.signal.throwIfAborted()
      throw code.kind === 'short' ? err : await spentOr(pn, code, err, options.signal)
    }
    const stream = await dialInvite(pn, to, options.signal, STEP_TIMEOUT_MS * 2).catch((err: unknown) =>
      fail(explainJoinDial(peer, err)),
    )
    const proved = await proveAndTrust(pn, stream, peer, options, audit.observer, () =>
      onAccepted(peer.network),
    ).catch(fail)
    // The limited circuit has done its job; the next connection (from a new process) is a full one.
    await stream.close().catch(() => {})
    for (const c of pn.node.getConnections().filter((c) => c.limits !== undefined)) {
      await c.close().catch(() => {})
    }
    return { configFile, created, peerId: pn.peerId, ...proved }
  } finally {
    await pn.stop()
    await audit.close()
  }
}

/**
 * The node to join with: an existing config (which must keep using the code's relay, or the
 * inviter could not reach it afterwards), or a new identity and config made from the code, every
 * path of which goes into `made`.
 */
async function joinTarget(options: JoinOptions, relay: string, made: string[]) {
  const { code, log } = options
  const progress = options.onProgress ?? (() => {})
  if (!('configFile' in options.target)) {
    const init = await initNode({
      dir: options.target.createIn,
      relays: [relay],
      // A short code's network arrives with its nameplate and is written once accepted.
      network: code.kind === 'short' ? '' : code.network,
      made,
    })
    progress(`created this node's identity and config in ${init.dir}`)
    return { configFile: init.configFile, created: true, addRelay: false }
  }
  const configFile = options.target.configFile
  const { config } = await loadNodeConfig(configFile)
  if (code.kind !== 'short') {
    warnOtherNetwork(log, config.discovery.network, code.network)
  }
  return {
    configFile,
    created: false,
    // An existing config without the code's relay gets it once the other side accepts.
    addRelay: !config.relay.addresses.some((a) => relayPeerId(a) === relayPeerId(relay)),
  }
}

/** Warns when this node's `discovery.network` is not the inviter's. */
function warnOtherNetwork(log: Logger, mine: string, inviters: string): void {
  if (mine !== inviters) {
    log.warn('this node uses another network name than the inviter; peers will meet through the relay only', {
      network: mine,
      inviter_network: inviters,
    })
  }
}

/**
 * Proves the code on `stream` and authorizes the inviter here (for a group code: every member, as
 * the relay introduces them); the attempt goes to the audit log.
 */
async function proveAndTrust(
  pn: PairingNode,
  stream: Stream,
  code: JoinPeer,
  options: JoinOptions,
  observer: Observer,
  onAccepted: () => Promise<void>,
): Promise<Pick<JoinResult, 'inviter' | 'sponsored' | 'group'>> {
  const progress = options.onProgress ?? (() => {})
  const remote = code.inviterPeerId
  const inviter: JoinResult['inviter'] = { peerId: remote, name: undefined }
  let sponsored: JoinResult['sponsored']
  let group: JoinResult['group']
  const trust = (peerId: string, name: string | undefined, groupId?: string): Promise<Trusted> =>
    trustPeer({
      authorizedKeysFile: pn.authorizedKeysFile,
      configFile: pn.configFile,
      peerId,
      ...(name === undefined ? {} : { name }),
      ...(groupId === undefined ? {} : { group: groupId }),
      ...(name === undefined ? { note: `paired ${new Date().toISOString().slice(0, 10)}` } : {}),
    })
  progress('proving the code…')
  const proving = proveToken(stream, {
    localPeerId: pn.peerId,
    remotePeerId: remote,
    answeredBy: code.kind === 'group' ? 'relay' : 'inviter',
    secret: code.secret,
    ...(options.name === undefined ? {} : { name: options.name }),
    signal: options.signal,
    waitForGroup: options.waitForGroup !== false,
    groupWaitMs: Math.max((code.expires?.getTime() ?? 0) - Date.now(), 0) + 60_000,
    onAccept: async (accept) => {
      await onAccepted()
      sponsored = accept.sponsored
      if (accept.group === undefined) {
        const t = await trust(remote, accept.name)
        inviter.name = t.name
        return
      }
      group = { id: accept.group.id, size: accept.group.size, members: [], complete: false }
      inviter.name = accept.name
      for (const m of accept.group.members) {
        if (m.peerId !== pn.peerId) {
          group.members.push(await trust(m.peerId, m.name, accept.group.id))
        }
      }
      if (accept.group.members.length + 1 < accept.group.size) {
        progress(
          `joined group ${accept.group.id} (${accept.group.members.length + 1} of ${accept.group.size}); waiting for the others to join…`,
        )
      }
    },
    onMember: async (m) => {
      if (group !== undefined && m.peerId !== pn.peerId) {
        group.members.push(await trust(m.peerId, m.name, group.id))
        progress(`${m.name ?? m.peerId} joined the group (${group.members.length + 1} of ${group.size})`)
      }
    },
  })
  let complete: boolean
  try {
    ;({ complete } = await proving)
    observer.pairing({
      role: 'joiner',
      outcome: 'paired',
      peer: remote,
      ...(inviter.name === undefined ? {} : { name: inviter.name }),
    })
  } catch (err) {
    observer.pairing({ role: 'joiner', outcome: 'failed', peer: remote, reason: (err as Error).name })
    throw err
  }
  if (group !== undefined) {
    group.complete = complete
  }
  return { inviter, sponsored, group }
}

/**
 * `err` when a peer code found no invite to take it (no invite open behind the relay, the inviter
 * not waiting, or waiting with another code), unless the code was spent: its inviter then told the
 * relay, which says so when asked (src/relay/invites.ts), and the joiner hears "used already"
 * rather than that nobody waits. Any failure to ask leaves `err` as it was.
 */
async function spentOr(
  pn: PairingNode,
  code: InviteCode,
  err: unknown,
  signal: AbortSignal,
): Promise<unknown> {
  if (code.kind === 'group' || !(err instanceof InviterUnreachableError || err instanceof UnknownCodeError)) {
    return err
  }
  try {
    const stream = await dialInvite(pn, multiaddr(relayMultiaddr(code)), signal, STEP_TIMEOUT_MS)
    return (await askSpent(stream, code.token, signal)) ?? err
  } catch {
    return err
  }
}

/**
 * Asks the short code's relay who holds its nameplate (src/invite/nameplate.ts). Nobody holding it
 * is {@link UnknownCodeError}: the invite ended, its short code burned, or it waits on another relay.
 */
async function findNameplate(
  pn: PairingNode,
  code: ShortJoinCode,
  signal: AbortSignal,
  progress: (message: string) => void,
): Promise<JoinPeer> {
  progress('asking the relay for the short code…')
  const answer = await pn.node
    .dialProtocol(multiaddr(code.relay), NAMEPLATE_PROTOCOL, {
      signal: AbortSignal.any([signal, AbortSignal.timeout(STEP_TIMEOUT_MS * 2)]),
    })
    .then((stream) =>
      askNameplate(
        stream,
        code.code.nameplate,
        AbortSignal.any([signal, AbortSignal.timeout(STEP_TIMEOUT_MS)]),
      ),
    )
    .catch((err: unknown) => {
      signal.throwIfAborted()
      if (UNSUPPORTED_PROTOCOL.test(errorText(err))) {
        throw new InviterUnreachableError('this relay does not know short codes (an older relay?)', {
          hint: 'use the long code `peerup invite` printed',
          cause: err,
        })
      }
      throw explainDialFailure(relayPeerId(code.relay), err)
    })
  if (!answer.ok || answer.peer === undefined) {
    throw new UnknownCodeError(
      `no invite waits on this relay with short code number ${code.code.nameplate}: it ended, its short code burned, or it waits on another relay`,
      {
        hint: 'check the relay and the number, or ask for a new code (`peerup invite` on the other machine)',
      },
    )
  }
  return {
    kind: 'peer',
    inviterPeerId: answer.peer,
    secret: { short: code.code },
    ...(answer.network === undefined ? {} : { network: answer.network }),
  }
}

/** Opens `/peerup/invite/1.0.0` to `to` (on a limited circuit too), within `timeoutMs`. */
function dialInvite(pn: PairingNode, to: Multiaddr, signal: AbortSignal, timeoutMs: number): Promise<Stream> {
  return pn.node.dialProtocol(to, INVITE_PROTOCOL, {
    ...INVITE_STREAM_OPTIONS,
    signal: AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]),
  })
}

/** How libp2p says the other side does not speak a protocol. */
const UNSUPPORTED_PROTOCOL = /UnsupportedProtocol|protocol selection failed|no protocol/i

/** An error's name and message, to match on. */
function errorText(err: unknown): string {
  return `${(err as Error)?.name ?? ''} ${(err as Error)?.message ?? String(err)}`
}

function explainJoinDial(code: Pick<JoinPeer, 'kind' | 'inviterPeerId'>, err: unknown): Error {
  const text = errorText(err)
  if (UNSUPPORTED_PROTOCOL.test(text)) {
    return new InviterUnreachableError(
      code.kind === 'group'
        ? 'the relay does not take group codes (an older relay?)'
        : 'the inviter is not waiting for a join any more (its `peerup invite` ended: the code was used, expired or stopped)',
      { hint: 'ask for a new code', cause: err },
    )
  }
  if (code.kind !== 'group' && /PERMISSION_DENIED/.test(text)) {
    // The relay lets a peer it does not know reach only a member that told it an invite is open
    // (src/relay/gater.ts): the inviter has closed its invite, or never had this one open there.
    return new InviterUnreachableError(
      'the relay refused to connect you to the inviter: it has no invite open there (its `peerup invite` ended: the code was used, expired or stopped)',
      { hint: 'ask for a new code', cause: err },
    )
  }
  if (/NO_RESERVATION/.test(text)) {
    return new InviterUnreachableError('the inviter is not connected to the relay in the code', {
      hint: 'is `peerup invite` still running on the other machine? Ask for a new code if it ended',
      cause: err,
    })
  }
  // A group code's inviter is its relay.
  return explainDialFailure(code.inviterPeerId, err)
}
