/**
 * The relay's side of `/peerup/relay-admin/1.0.0` (its requests: src/invite/relay-admin.ts). The
 * caller is the peer id noise authenticated; it must be authorized here, and `security.sponsoring`
 * decides whether it may sponsor: `paired` (the default), only the peer whose circuit this relay
 * carried to the caller while the caller's invite was open, once per invite; `marked`, the same for
 * `sponsor=yes` peers only; `any`, any peer id; `off`. The joiner is recorded with `sponsor=<caller>`.
 *
 * @packageDocumentation
 */

import type { Connection, Stream } from '@libp2p/interface'
import { loadAuthorizedKeys } from '../auth/authorized-keys.ts'
import { authorizePaired } from '../auth/ops.ts'
import type { RelayConfig } from '../config/schema.ts'
import { answerOnce, closeStream } from '../invite/protocol.ts'
import {
  RELAY_ADMIN_PROTOCOL,
  type RelayAdminRequest,
  type RelayAdminResponse,
  relayAdminRequest,
} from '../invite/relay-admin.ts'
import type { Logger } from '../log/index.ts'
import type { Observer } from '../metrics/observer.ts'
import type { Component } from '../util/components.ts'
import type { GroupStore } from './groups.ts'
import type { RelayHandle } from './server.ts'

/**
 * relay_authorized_keys (`keysFile`) as pairing writes it: peers are added, and the running relay
 * takes them at once.
 */
export class RelayKeys {
  readonly #components: { relay: Pick<RelayHandle, 'reloadAuthorized'> }
  readonly keysFile: string

  constructor(components: { relay: Pick<RelayHandle, 'reloadAuthorized'> }, init: { keysFile: string }) {
    this.#components = components
    this.keysFile = init.keysFile
  }

  /**
   * Authorizes `peer` with `attrs` (and `name` as its comment); a peer already there only gets the
   * group attribute, when one is given.
   */
  async authorize(peer: string, attrs: { sponsor?: string; group?: string }, name?: string): Promise<void> {
    await authorizePaired(this.keysFile, peer, {
      ...(name === undefined ? {} : { comment: name }),
      attributes: attrs,
    })
    await this.#components.relay.reloadAuthorized()
  }

  async isMarkedSponsor(peer: string): Promise<boolean> {
    const doc = await loadAuthorizedKeys(this.keysFile, { createIfMissing: true })
    return doc.get(peer)?.attributes.sponsor === 'yes'
  }
}

/** What the relay's pairing components use (src/relay/pairing.ts makes them). */
export interface PairingComponents {
  relay: Pick<RelayHandle, 'node' | 'peerId' | 'authorized' | 'invites'>
  store: GroupStore
  keys: RelayKeys
  observer: Observer
  log: Logger
}

/**
 * The handler of `/peerup/relay-admin/1.0.0`: `start()` registers it, `stop()` removes it.
 * `security` of relay-server.yaml says whether gating is on and the sponsoring mode.
 */
export class RelayAdminProtocol implements Component {
  readonly #components: PairingComponents
  readonly #security: RelayConfig['security']

  constructor(components: PairingComponents, init: { security: RelayConfig['security'] }) {
    this.#components = components
    this.#security = init.security
  }

  async start(): Promise<void> {
    await this.#components.relay.node.handle(
      RELAY_ADMIN_PROTOCOL,
      (stream, connection) => {
        this.#answer(stream, connection)
          .catch((err: unknown) =>
            this.#components.log.debug('relay admin request failed', { error: err as Error }),
          )
          .finally(() => closeStream(stream))
      },
      { maxInboundStreams: 8 },
    )
  }

  async stop(): Promise<void> {
    await this.#components.relay.node.unhandle(RELAY_ADMIN_PROTOCOL).catch(() => {})
  }

  #answer(stream: Stream, connection: Connection): Promise<void> {
    const caller = connection.remotePeer.toString()
    return answerOnce<RelayAdminRequest, RelayAdminResponse>(
      stream,
      relayAdminRequest,
      (request) => this.#decide(caller, request),
      { ok: false, reason: 'malformed request' },
    )
  }

  async #decide(caller: string, request: RelayAdminRequest): Promise<RelayAdminResponse> {
    const { relay, store, log } = this.#components
    if (this.#security.enable_connection_gating && !relay.authorized.has(caller)) {
      return { ok: false, reason: 'you are not authorized on this relay' }
    }
    if (request.type === 'invite-open') {
      relay.invites.open(caller, request.ttl_ms)
      log.debug('invite opened', { peer: caller })
      return { ok: true }
    }
    if (request.type === 'invite-close') {
      relay.invites.close(caller)
      log.debug('invite closed', { peer: caller })
      return { ok: true }
    }
    if (request.type === 'nameplate-claim') {
      const nameplate = relay.invites.claimNameplate(caller, request.ttl_ms, request.network)
      log.debug('nameplate claimed', { peer: caller, nameplate })
      return nameplate === undefined
        ? { ok: false, reason: 'no invite open, or no nameplate free' }
        : { ok: true, nameplate }
    }
    if (request.type === 'nameplate-release') {
      relay.invites.releaseNameplate(caller)
      log.debug('nameplate released', { peer: caller })
      return { ok: true }
    }
    if (request.type === 'invite-spent') {
      relay.invites.spend(caller, request.code, request.reason, request.ttl_ms)
      log.debug('invite code spent', { peer: caller, reason: request.reason })
      return { ok: true }
    }
    if (request.type === 'members') {
      return {
        ok: true,
        groups: store.groups
          .filter((g) => g.members.some((m) => m.peerId === caller))
          .map((g) => ({ id: g.id, members: g.members })),
      }
    }
    return this.#sponsor(caller, request)
  }

  async #sponsor(
    caller: string,
    request: Extract<RelayAdminRequest, { type: 'sponsor' }>,
  ): Promise<RelayAdminResponse> {
    const { relay, keys, observer, log } = this.#components
    const mode = this.#security.sponsoring
    const refused = (why: string, reason: string): void => {
      log.info('sponsoring refused', { peer: caller, sponsored: request.peer, reason: why })
      observer.pairing({ role: 'relay', outcome: 'refused', peer: request.peer, reason })
    }
    if (mode === 'off') {
      refused('off', 'sponsoring off')
      return { ok: false, reason: 'sponsoring is off on this relay' }
    }
    if (mode === 'marked' && !(await keys.isMarkedSponsor(caller))) {
      refused('not sponsor=yes', 'sponsor not marked')
      return { ok: false, reason: 'on this relay only peers marked sponsor=yes may sponsor others' }
    }
    // `paired` and `marked`: only the peer this member has just paired with through us (we carried
    // its circuit to the member while the member's invite was open), once per invite.
    if (mode !== 'any' && !relay.invites.consume(caller, request.peer)) {
      refused('no pairing seen', 'no pairing seen')
      return {
        ok: false,
        reason:
          'this relay saw no pairing of yours with that peer (it sponsors only a peer that has just joined you through it)',
      }
    }
    try {
      await keys.authorize(request.peer, { sponsor: caller }, request.name)
    } catch (err) {
      return { ok: false, reason: `the relay could not record it: ${(err as Error).message}` }
    }
    log.info('peer sponsored', { peer: request.peer, sponsor: caller })
    observer.pairing({
      role: 'relay',
      outcome: 'paired',
      peer: request.peer,
      reason: `sponsored by ${caller}`,
    })
    return { ok: true }
  }
}
