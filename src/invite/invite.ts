/**
 * `peerup invite`: hold a reservation on a relay, make a single-use code, wait on
 * `/peerup/invite/1.0.0` for one joiner, then authorize it here, record its name and ask the
 * relay to authorize it there (sponsoring, docs/pairing.md).
 *
 * @packageDocumentation
 */

import { once } from 'node:events'
import * as path from 'node:path'
import { multiaddr } from '@multiformats/multiaddr'
import { NODE_FILES } from '../config/paths.ts'
import type { Logger } from '../log/index.ts'
import { auditObserver, NO_OBSERVER, type Observer } from '../metrics/observer.ts'
import { shortId } from '../p2p/path.ts'
import type { RelayState } from '../p2p/reservations.ts'
import { type Component, startAll, stopAll } from '../util/components.ts'
import { socketAnswers } from '../util/socket.ts'
import { createInviteCode, encodeInviteCode, formatExpiry, type InviteCode, relayMultiaddr } from './code.ts'
import { CodeExpiredError, InviteUnavailableError } from './errors.ts'
import { answerPairing, InviteSession } from './inviter.ts'
import { type PairingHost, startPairingNode } from './node.ts'
import { deriveKeys, INVITE_PROTOCOL, INVITE_STREAM_OPTIONS, MAX_FAILED_PROOFS } from './protocol.ts'
import { askRelay, type RelayAdminRequest } from './relay-admin.ts'
import { createShortWords, formatShortCode, MAX_SHORT_CODE_FAILURES } from './short-code.ts'
import { trustPeer } from './trust.ts'

/** The multicodec of `/p2p/<peer id>`. */
const P2P_CODE = 421

/** How long `invite` waits for a reservation before giving up. */
export const RESERVATION_WAIT_MS = 30_000

export interface InviteOptions {
  configFile: string
  log: Logger
  /** This machine's name, told to the joiner for its `names:`. */
  name: string | undefined
  ttlMs: number
  signal: AbortSignal
  /**
   * Called once with the code to show (and the decoded fields, for the QR code and JSON), and the
   * short code with the relay it waits on, unless the relay gave it no nameplate (an older relay).
   */
  onCode: (text: string, code: InviteCode, short?: ShortInvite) => void
  /** Progress for stderr. */
  onProgress?: (message: string) => void
}

/** A short code to show: `7-acorn-zebra` (a secret, like the long code) and the relay's full address. */
export interface ShortInvite {
  code: string
  relay: string
}

/** What a successful invite did. */
export interface InviteResult {
  peerId: string
  /** The name recorded for the joiner under `names:`. */
  name: string | undefined
  /** Whether the relay authorized the joiner (and why not). */
  sponsored: { ok: boolean; reason?: string }
}

/** Runs one invite to its end: a join (resolves), expiry, burning or the signal (rejects). */
export async function runInvite(options: InviteOptions): Promise<InviteResult> {
  const { log } = options
  const socket = path.join(path.dirname(options.configFile), NODE_FILES.socket)
  if (await socketAnswers(socket)) {
    // Two processes with one identity would both hold a reservation on the relay, and circuits
    // would reach the daemon, which does not answer the invite protocol.
    throw new InviteUnavailableError('a daemon is running for this config, and it would take the joiner', {
      hint: 'stop the daemon while pairing (Ctrl+C or `systemctl stop peerup`), run `peerup invite`, then start it again',
    })
  }
  const pn = await startPairingNode({ configFile: options.configFile, log, reserve: true })
  const audit = await auditObserver(pn.config.telemetry.audit, path.dirname(pn.configFile))
  try {
    return await inviteOn(pn, { ...options, observer: audit.observer })
  } finally {
    await pn.stop()
    await audit.close()
  }
}

export type { PairingHost } from './node.ts'

export interface InviteOnOptions extends Omit<InviteOptions, 'configFile'> {
  /** Pairing attempts go to the audit log through it. */
  observer?: Observer
}

/**
 * Runs one invite on `pn`: a join (resolves), expiry, burning or the signal (rejects). While the
 * code is open three components run, started in this order and stopped in reverse: the invite
 * registered on the relay, the handler of the invite protocol, and the admission of the joiner.
 */
export async function inviteOn(pn: PairingHost, options: InviteOnOptions): Promise<InviteResult> {
  const progress = options.onProgress ?? (() => {})
  const relay = await reservedRelay(pn, options)
  // The code carries the transport part; the relay's peer id travels beside it.
  const relayAddr = multiaddr(relay.addrs[0] as string).decapsulateCode(P2P_CODE)
  const code = createInviteCode({
    kind: 'peer',
    expires: new Date(Math.floor((Date.now() + options.ttlMs) / 1000) * 1000),
    relayAddress: relayAddr.toString(),
    relayPeerId: relay.peerId,
    inviterPeerId: pn.peerId,
    network: pn.config.discovery.network,
  })
  let result: InviteResult | undefined
  const session = inviteSession(pn, options, code, relay.peerId, (r) => {
    result = r
  })
  const exchanges = new InviteExchanges(
    { host: pn, log: options.log, observer: options.observer ?? NO_OBSERVER },
    { session },
  )
  // The relay lets a stranger's circuit through to us only while we say we are pairing, and
  // will sponsor only the peer it saw join us then (docs/decisions/0004-strangers.md).
  const relayInvite = new RelayInvite(
    { host: pn, log: options.log },
    {
      relayPeerId: relay.peerId,
      expires: code.expires,
      spentId: deriveKeys(code.token).spentId,
      spent: () => (session.state === 'used' || session.state === 'burned' ? session.state : undefined),
      network: pn.config.discovery.network,
    },
  )
  const components: Component[] = [relayInvite, exchanges, joinerAdmission(pn)]
  await startAll(components)
  try {
    let short: ShortInvite | undefined
    if (relayInvite.nameplate !== undefined) {
      const shortCode = { nameplate: relayInvite.nameplate, words: createShortWords() }
      session.offerShort(shortCode)
      short = { code: formatShortCode(shortCode), relay: relayMultiaddr(code) }
    }
    options.onCode(encodeInviteCode(code), code, short)
    progress('waiting for the other machine to run `peerup join` with this code…')
    const expired = AbortSignal.timeout(Math.max(code.expires.getTime() - Date.now(), 0))
    try {
      const joiner = await raceSignals(session.joined, [options.signal, expired])
      // The exchange finishes (accept sent, the joiner's done read) before the node goes away;
      // each step of it has its own deadline.
      await exchanges.settled()
      if (result === undefined || result.peerId !== joiner.peerId) {
        throw new Error('pairing finished without a result')
      }
      return result
    } catch (err) {
      if (!expired.aborted && !options.signal.aborted) {
        // Burned: the exchange that burned the code is still telling its joiner so; stopping now
        // would cut that off, and the joiner would read "the other side closed the connection".
        await exchanges.settled()
      }
      if (expired.aborted && !options.signal.aborted) {
        throw new CodeExpiredError(`nobody joined before the code expired at ${formatExpiry(code.expires)}`, {
          hint: 'run `peerup invite` again for a new code (`--ttl` makes it last longer)',
        })
      }
      throw err
    }
  } finally {
    await stopAll(components)
  }
}

/**
 * Waits (at most {@link RESERVATION_WAIT_MS}) for a reservation on one of `pn`'s relays and returns
 * that relay. A relay that refuses is named on the progress line at once, since the wait may be
 * the operator's `peerup relay authorize` on its way (the supervisor tries again on its own, and
 * at once when the relay says so); when the wait runs out, the error says each relay's reason.
 */
async function reservedRelay(pn: PairingHost, options: InviteOnOptions): Promise<RelayState> {
  if (pn.config.relay.addresses.length === 0) {
    throw new InviteUnavailableError('this node has no relay, so a joiner behind NAT could not reach it', {
      hint: 'add one with `peerup relay add <multiaddr>` (`peerup relay info` on the relay prints it)',
    })
  }
  const progress = options.onProgress ?? (() => {})
  progress(`waiting for a reservation on the relay (up to ${RESERVATION_WAIT_MS / 1000} s)…`)
  const said = new Map<string, string>()
  const off = pn.supervisor.onUpdate((r) => {
    if (!r.reserved && r.reason !== undefined && said.get(r.peerId) !== r.reason) {
      said.set(r.peerId, r.reason)
      progress(`relay ${shortId(r.peerId)}: ${r.reason}; still trying…`)
    }
  })
  try {
    await pn.supervisor.waitForReservation(
      AbortSignal.any([options.signal, AbortSignal.timeout(RESERVATION_WAIT_MS)]),
    )
  } catch (err) {
    options.signal.throwIfAborted()
    throw noReservationError(pn.peerId, pn.supervisor.status(), err)
  } finally {
    off()
  }
  return pn.supervisor.status().find((r) => r.reserved)!
}

/**
 * The error of an invite that got no reservation: each relay with the supervisor's reason
 * (`refused by the relay: not in relay_authorized_keys`), and what to do about the first.
 */
export function noReservationError(
  peerId: string,
  relays: RelayState[],
  cause?: unknown,
): InviteUnavailableError {
  const why = (r: RelayState): string => r.reason ?? r.lastError ?? 'the relay has not answered yet'
  const first = relays.find((r) => !r.reserved)
  const reasons = relays.filter((r) => !r.reserved).map((r) => `relay ${shortId(r.peerId)}: ${why(r)}`)
  const text = first === undefined ? '' : why(first)
  const hint = /relay_authorized_keys|PERMISSION_DENIED/.test(text)
    ? `on the relay: \`peerup relay authorize ${peerId}\`, then \`peerup invite\` again (it goes on by itself when that happens while it waits)`
    : /cannot reach the relay/.test(text)
      ? 'check the relay address (`peerup relay list`) and that the relay is running (`peerup relay info` on it)'
      : "the relay's log says more (`journalctl -u relay-server` on it)"
  return new InviteUnavailableError(
    `no relay gave this node a reservation within ${RESERVATION_WAIT_MS / 1000} s (${reasons.join('; ')})`,
    { hint, ...(cause === undefined ? {} : { cause }) },
  )
}

/**
 * The session of one code: on a join it authorizes the joiner here (names it, if it told its
 * name), has the gater read the new set, asks the relay to authorize it there (sponsoring), and
 * hands the outcome to `onResult`.
 */
function inviteSession(
  pn: PairingHost,
  options: InviteOnOptions,
  code: InviteCode,
  relayPeerId: string,
  onResult: (result: InviteResult) => void,
): InviteSession {
  const progress = options.onProgress ?? (() => {})
  return new InviteSession({
    token: code.token,
    expires: code.expires,
    // Whoever presents the right code id has seen the code (or runs a broken peerup): the person
    // inviting should know, though the code stays good for the one they meant.
    onShutOut: (peer) =>
      progress(
        `warning: peer ${shortId(peer)} made ${MAX_FAILED_PROOFS} wrong proofs and is shut out; the code stays open until ${formatExpiry(code.expires)}`,
      ),
    // Each wrong try is someone's guess or typo: the person inviting hears of every one.
    onShortFailure: (peer, remaining) => {
      if (remaining > 0) {
        progress(
          `warning: peer ${shortId(peer)} tried a wrong short code; ${remaining} more wrong tr${remaining === 1 ? 'y' : 'ies'} burn it`,
        )
        return
      }
      progress(
        `warning: the short code is burned after ${MAX_SHORT_CODE_FAILURES} wrong tries (the last by peer ${shortId(peer)}); the long code still works until ${formatExpiry(code.expires)}`,
      )
      // Its nameplate is free again: the relay stops sending joiners here for it.
      void askOwnRelay(pn, relayPeerId, { type: 'nameplate-release' }, 'no connection to the relay')
    },
    onJoin: async (joiner) => {
      const trusted = await trustPeer({
        authorizedKeysFile: pn.authorizedKeysFile,
        configFile: pn.configFile,
        peerId: joiner.peerId,
        ...(joiner.name === undefined ? {} : { name: joiner.name }),
        note: joiner.name === undefined ? `paired ${new Date().toISOString().slice(0, 10)}` : undefined,
      })
      // Gating reads the set, not the file: the joiner may now open the connection it needs.
      await pn.authorized.reloadFromFile()
      const sponsored = await askOwnRelay(
        pn,
        relayPeerId,
        { type: 'sponsor', peer: joiner.peerId, ...(joiner.name === undefined ? {} : { name: joiner.name }) },
        'the inviter lost its connection to the relay',
      )
      if (!sponsored.ok) {
        options.log.warn('the relay did not authorize the joiner', {
          peer: joiner.peerId,
          reason: sponsored.reason,
        })
      }
      onResult({ peerId: trusted.peerId, name: trusted.name, sponsored })
      return { ...(options.name === undefined ? {} : { name: options.name }), sponsored }
    },
  })
}

/** Settings of {@link RelayInvite}. */
interface RelayInviteInit {
  relayPeerId: string
  expires: Date
  /** The code's spent id (src/invite/protocol.ts), what the relay is told once the code is spent. */
  spentId: string
  /** Whether the code is spent, and how: asked when the invite ends. */
  spent: () => 'used' | 'burned' | undefined
  /** `discovery.network`, which the relay tells a joiner that asks for the nameplate. */
  network: string
}

/**
 * The invite registered on the relay: `start()` sends `invite-open` until the code expires,
 * `stop()` sends `invite-close`, and `invite-spent` when the code was used or burned: once this
 * invite ends nobody here answers for its code, and the relay refuses a stranger's circuit to us,
 * so the relay is what tells a second joiner that the code was used (src/relay/invites.ts).
 * Neither throws: a relay that does not register invites only makes a joiner it does not know
 * likelier to be refused, and one that does not take `invite-spent` says "no invite open" instead.
 */
class RelayInvite implements Component {
  readonly #components: { host: PairingHost; log: Logger }
  readonly #init: RelayInviteInit
  /** The nameplate of the short code, once the relay gave one (src/invite/short-code.ts). */
  nameplate: number | undefined

  constructor(components: { host: PairingHost; log: Logger }, init: RelayInviteInit) {
    this.#components = components
    this.#init = init
  }

  async start(): Promise<void> {
    const answer = await this.#tell({
      type: 'invite-open',
      ttl_ms: Math.max(this.#init.expires.getTime() - Date.now(), 1),
    })
    if (!answer.ok) {
      this.#components.log.warn(
        'the relay did not register the invite; a joiner it does not know may be refused',
        { reason: answer.reason },
      )
      return
    }
    const claimed = await this.#tell({
      type: 'nameplate-claim',
      ttl_ms: Math.max(this.#init.expires.getTime() - Date.now(), 1),
      network: this.#init.network,
    })
    this.nameplate = claimed.nameplate
    if (claimed.nameplate === undefined) {
      this.#components.log.info('the relay gave no nameplate: no short code this time', {
        reason: claimed.reason,
      })
    }
  }

  async stop(): Promise<void> {
    await this.#tell({ type: 'invite-close' })
    const reason = this.#init.spent()
    const left = this.#init.expires.getTime() - Date.now()
    if (reason !== undefined && left > 0) {
      await this.#tell({ type: 'invite-spent', code: this.#init.spentId, reason, ttl_ms: left })
    }
  }

  #tell(request: RelayAdminRequest): Promise<{ ok: boolean; reason?: string; nameplate?: number }> {
    return askOwnRelay(this.#components.host, this.#init.relayPeerId, request, 'no connection to the relay')
  }
}

/**
 * The handler of `/peerup/invite/1.0.0` for one session: `start()` registers it, `stop()` aborts
 * the exchanges still running and removes it.
 */
class InviteExchanges implements Component {
  readonly #components: { host: PairingHost; log: Logger; observer: Observer }
  readonly #session: InviteSession
  readonly #running = new Set<Promise<void>>()
  #controller = new AbortController()

  constructor(
    components: { host: PairingHost; log: Logger; observer: Observer },
    init: { session: InviteSession },
  ) {
    this.#components = components
    this.#session = init.session
  }

  /** Resolves once every exchange under way has ended. */
  async settled(): Promise<void> {
    await Promise.allSettled([...this.#running])
  }

  async start(): Promise<void> {
    const { host, log, observer } = this.#components
    this.#controller = new AbortController()
    const signal = this.#controller.signal
    await host.node.handle(
      INVITE_PROTOCOL,
      (stream, connection) => {
        const exchange = answerPairing(stream, connection, {
          localPeerId: host.peerId,
          book: this.#session,
          log: log.child('invite'),
          observer,
          role: 'inviter',
          signal,
        })
          .finally(async () => {
            // A peer that failed keeps no connection here; the joiner's limited one has done its
            // job. The joiner hangs up first: closing the connection (or stopping this node) while
            // our last frame is on its way can lose that frame, since a stop resets the TCP
            // connection to the relay and the relay drops what it had not read yet. The joiner
            // then reads "the other side closed the connection" instead of why it was refused.
            if (this.#session.state !== 'busy') {
              if (connection.status === 'open') {
                await once(connection, 'close', { signal: AbortSignal.timeout(HANG_UP_WAIT_MS) }).catch(
                  () => {},
                )
              }
              connection.close().catch(() => {})
            }
          })
          .catch(() => {})
          .finally(() => this.#running.delete(exchange))
        this.#running.add(exchange)
      },
      INVITE_STREAM_OPTIONS,
    )
  }

  async stop(): Promise<void> {
    this.#controller.abort()
    await this.#components.host.node.unhandle(INVITE_PROTOCOL).catch(() => {})
  }
}

/** Lets the joiner, a peer nobody could have authorized yet, in over a relay while the code is open. */
function joinerAdmission(host: PairingHost): Component {
  let close: (() => void) | undefined
  return {
    start: () => {
      close = host.admitJoiners()
    },
    stop: () => close?.(),
  }
}

/**
 * Asks the relay `pn` holds a connection to (`noConnection` says why not when it holds none); never
 * throws. A relay from before invites were registered answers "unsupported protocol" only for the
 * whole relay-admin protocol, and lets strangers through anyway.
 */
async function askOwnRelay(
  pn: PairingHost,
  relayPeerId: string,
  request: RelayAdminRequest,
  noConnection: string,
): Promise<{ ok: boolean; reason?: string; nameplate?: number }> {
  const conn = pn.relayConnection(relayPeerId)
  if (conn === undefined) {
    return { ok: false, reason: noConnection }
  }
  try {
    const answer = await askRelay(conn, request)
    return answer.ok
      ? { ok: true, ...(answer.nameplate === undefined ? {} : { nameplate: answer.nameplate }) }
      : { ok: false, reason: answer.reason ?? 'refused' }
  } catch (err) {
    const unsupported = request.type === 'sponsor' && (err as Error).name === 'UnsupportedProtocolError'
    return {
      ok: false,
      reason: unsupported ? 'the relay does not support sponsoring' : (err as Error).message,
    }
  }
}

/** How long an inviter waits for a joiner to hang up after the exchange before closing itself. */
const HANG_UP_WAIT_MS = 2_000

/** `promise`, or a rejection with the reason of the first of `signals` to abort. */
async function raceSignals<T>(promise: Promise<T>, signals: AbortSignal[]): Promise<T> {
  const any = AbortSignal.any(signals)
  const aborted = Promise.withResolvers<never>()
  const onAbort = (): void => aborted.reject(any.reason)
  any.addEventListener('abort', onAbort, { once: true })
  try {
    any.throwIfAborted()
    return await Promise.race([promise, aborted.promise])
  } finally {
    any.removeEventListener('abort', onAbort)
  }
}
