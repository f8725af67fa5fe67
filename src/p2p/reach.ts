/**
 * Reaching a peer: reuse a live connection, else race a DHT lookup against the circuit
 * addresses through every configured relay (docs/decisions/0000-inherited.md), and report which path won. Failures are
 * turned into errors that say what to do.
 *
 * @packageDocumentation
 */

import type { Connection, IdentifyResult, PeerId } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { formatError } from '../errors.ts'
import { REACH_TIMEOUT_MS } from './constants.ts'
import { PeerRefusedError, PeerUnreachableError, RelayRefusedError } from './errors.ts'
import type { PeerupLibp2p } from './node.ts'
import { bestConnection, classifyConnection, type PathInfo } from './path.ts'
import { nextEvent } from './wait.ts'

/** How a peer was reached. */
export interface Reached {
  connection: Connection
  path: PathInfo
  /** `existing` (a live connection), `relay` (a circuit through a configured relay) or `dht`. */
  via: 'existing' | 'relay' | 'dht'
  elapsedMs: number
}

export interface ReachOptions {
  /** The configured relay multiaddrs (each ending in /p2p/<relay>). */
  relays: string[]
  signal?: AbortSignal
  /** Skip the DHT (it cannot help a node whose only peers are relays it already tries). */
  useDht?: boolean
}

/** Reaches `peerId`, returning the connection and how it was reached. */
export async function reachPeer(node: PeerupLibp2p, peerId: string, options: ReachOptions): Promise<Reached> {
  const started = performance.now()
  const peer = peerIdFromString(peerId)
  const existing = bestConnection(node.getConnections(peer))
  if (existing !== undefined) {
    return { connection: existing, path: classifyConnection(existing), via: 'existing', elapsedMs: 0 }
  }
  const controller = new AbortController()
  const signal = AbortSignal.any([
    controller.signal,
    AbortSignal.timeout(REACH_TIMEOUT_MS),
    ...(options.signal === undefined ? [] : [options.signal]),
  ])
  const confirmed = (dial: Promise<Connection>, via: Reached['via']) =>
    dial
      .then((connection) => confirmAccepted(node, peer, connection, signal))
      .then((connection) => ({ connection, via }))
  const attempts = [...new Set(options.relays)]
    .filter((r) => !r.endsWith(`/p2p/${peerId}`))
    .map((relay) =>
      confirmed(node.dial(multiaddr(`${relay}/p2p-circuit/p2p/${peerId}`), { signal }), 'relay'),
    )
  if (options.useDht !== false) {
    const dhtSignal = AbortSignal.any([signal, AbortSignal.timeout(DHT_TIMEOUT_MS)])
    attempts.push(confirmed(dialViaDht(node, peer, dhtSignal), 'dht'))
  }
  if (attempts.length === 0) {
    throw new PeerUnreachableError(`cannot reach ${peerId}: no relay is configured and the DHT is off`, {
      hint: 'add a relay with `peerup relay add <multiaddr>`',
    })
  }
  try {
    const won = await Promise.any(attempts)
    return { ...won, path: classifyConnection(won.connection), elapsedMs: performance.now() - started }
  } catch (err) {
    options.signal?.throwIfAborted()
    throw explainDialFailure(peerId, err)
  } finally {
    // The losers of the race stop dialling; a connection one of them already made is kept by
    // libp2p and reused (it is the same peer).
    controller.abort()
  }
}

// The DHT rarely helps a node whose peers are all behind NAT, and a lookup with nobody to ask
// waits for its signal: give it less time than the whole attempt.
const DHT_TIMEOUT_MS = 8_000

/** A connection older than this was accepted long ago: identify will not run on it again. */
const SETTLED_CONNECTION_MS = 5_000

/**
 * Makes sure the peer kept the connection. Its gater refuses us only after the handshake, which
 * completes first on our side: the dial "succeeds" and the connection dies a moment later
 * (libp2p's gater refuses after the handshake). The peer answering identify on this very connection proves it
 * was accepted; the connection closing first proves it was not.
 */
async function confirmAccepted(
  node: PeerupLibp2p,
  peer: PeerId,
  connection: Connection,
  signal: AbortSignal,
): Promise<Connection> {
  if (connection.status !== 'open') {
    throw refusedBy(peer.toString())
  }
  if (Date.now() - connection.timeline.open > SETTLED_CONNECTION_MS) {
    return connection
  }
  // The first of the connection closing and `signal` ends the wait with its reason.
  const closed = new AbortController()
  const onClose = (evt: CustomEvent<Connection>): void => {
    if (evt.detail.id === connection.id) {
      closed.abort(refusedBy(peer.toString()))
    }
  }
  const ended = AbortSignal.any([signal, closed.signal])
  node.addEventListener('connection:close', onClose)
  try {
    const identified = (evt: CustomEvent<IdentifyResult>): boolean =>
      evt.detail.connection.id === connection.id
    // A peer that keeps the connection but never answers identify (10 s) is not refusing us.
    if ((await nextEvent(node, 'peer:identify', identified, 10_000, ended)) === undefined) {
      ended.throwIfAborted()
    }
    return connection
  } finally {
    node.removeEventListener('connection:close', onClose)
  }
}

async function dialViaDht(node: PeerupLibp2p, peer: PeerId, signal: AbortSignal): Promise<Connection> {
  const info = await node.peerRouting.findPeer(peer, { signal, useCache: false })
  // Circuit addresses are the relay attempts' job; a DHT answer matters for the direct ones.
  const addrs = info.multiaddrs.filter((a) => !a.getComponents().some((c) => c.name === 'p2p-circuit'))
  if (addrs.length === 0) {
    throw new PeerUnreachableError(`the DHT knows no direct address of ${peer.toString()}`)
  }
  return node.dial(
    addrs.map((a) =>
      a.getComponents().some((c) => c.name === 'p2p') ? a : a.encapsulate(`/p2p/${peer.toString()}`),
    ),
    { signal },
  )
}

function errorsOf(err: unknown): unknown[] {
  return err instanceof AggregateError ? err.errors.flatMap(errorsOf) : [err]
}

/** The peer's gater refused our connection. */
function refusedBy(peerId: string, cause?: unknown): PeerRefusedError {
  return new PeerRefusedError(`peer ${peerId} refused the connection (not authorized by the peer)`, {
    hint: 'ask its owner to run `peerup auth add <your peer id>` (see `peerup whoami`), or pair with `peerup invite`/`peerup join`',
    cause,
  })
}

/** Turns libp2p's dial errors into one error that tells the user what happened and what to do. */
export function explainDialFailure(peerId: string, err: unknown): Error {
  const all = errorsOf(err)
  const refused = all.find((e) => e instanceof PeerRefusedError)
  if (refused !== undefined) {
    return refused as PeerRefusedError
  }
  const text = all.map((e) => `${(e as Error)?.name ?? ''} ${(e as Error)?.message ?? String(e)}`).join(' | ')
  // The remote gater closes the connection right after the handshake: the dialer sees only an
  // unexpected end of stream (libp2p's gater refuses after the handshake).
  if (
    /UnexpectedEOF|unexpected end|stream ended before|Unexpected end of input|ECONNRESET.*noise/i.test(text)
  ) {
    return refusedBy(peerId, err)
  }
  if (/CONNECTION_FAILED/.test(text)) {
    return new PeerUnreachableError(`the relay could not connect you to ${peerId}`, {
      hint: 'the peer may have just gone away; try again, and check `peerup status` on that machine',
      cause: err,
    })
  }
  if (/NO_RESERVATION/.test(text)) {
    return new PeerUnreachableError(`peer ${peerId} is not connected to any of your relays`, {
      hint: 'check that its daemon is running and uses the same relay (`peerup status` on that machine)',
      cause: err,
    })
  }
  if (/PERMISSION_DENIED/.test(text)) {
    return new RelayRefusedError(`the relay refused to connect you to ${peerId}`, {
      hint: 'the peer may not be authorized on the relay, or the relay may not know you (`peerup relay authorize` on the relay)',
      cause: err,
    })
  }
  if (/ECONNREFUSED|EHOSTUNREACH|ENETUNREACH|ETIMEDOUT|Timeout|aborted/i.test(text)) {
    return new PeerUnreachableError(
      `cannot reach ${peerId}: no relay answered in time (${firstReason(all)})`,
      {
        hint: 'check the relay addresses (`peerup relay list`) and that the relay is running',
        cause: err,
      },
    )
  }
  return new PeerUnreachableError(`cannot reach ${peerId}: ${firstReason(all)}`, { cause: err })
}

function firstReason(errors: unknown[]): string {
  return formatError(errors[0] ?? 'unknown error')
}
