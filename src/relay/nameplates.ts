/**
 * The relay's side of `/peerup/nameplate/1.0.0` (src/invite/nameplate.ts): anyone connected may ask
 * which member's open invite holds a nameplate. The answer names a peer id that circuits can
 * already reach while the invite is open, and nothing secret: a short code's words never come
 * here. Asking counts against nothing and tells only which members have an invite open; a guess
 * at the words needs a circuit to the member, which the relay's limits on strangers bound
 * (src/relay/gater.ts, docs/decisions/0004-strangers.md).
 *
 * @packageDocumentation
 */

import type { Stream } from '@libp2p/interface'
import {
  NAMEPLATE_PROTOCOL,
  type NameplateRequest,
  type NameplateResponse,
  nameplateRequest,
} from '../invite/nameplate.ts'
import { answerOnce, closeStream, PAIRING_VERSION } from '../invite/protocol.ts'
import type { Component } from '../util/components.ts'
import type { PairingComponents } from './sponsoring.ts'

/** The handler of `/peerup/nameplate/1.0.0`: `start()` registers it, `stop()` removes it. */
export class NameplateLookup implements Component {
  readonly #components: Pick<PairingComponents, 'relay' | 'log'>

  constructor(components: Pick<PairingComponents, 'relay' | 'log'>) {
    this.#components = components
  }

  async start(): Promise<void> {
    await this.#components.relay.node.handle(
      NAMEPLATE_PROTOCOL,
      (stream) => {
        this.#answer(stream)
          .catch((err: unknown) =>
            this.#components.log.debug('nameplate lookup failed', { error: err as Error }),
          )
          .finally(() => closeStream(stream))
      },
      { maxInboundStreams: 4 },
    )
  }

  async stop(): Promise<void> {
    await this.#components.relay.node.unhandle(NAMEPLATE_PROTOCOL).catch(() => {})
  }

  #answer(stream: Stream): Promise<void> {
    return answerOnce<NameplateRequest, NameplateResponse>(
      stream,
      nameplateRequest,
      (request) => {
        const held =
          request.v === PAIRING_VERSION
            ? this.#components.relay.invites.lookupNameplate(request.nameplate)
            : undefined
        return held === undefined ? { ok: false } : { ok: true, peer: held.member, network: held.network }
      },
      { ok: false },
    )
  }
}
