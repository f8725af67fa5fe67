/**
 * The relay's side of `/peerup/nameplate/1.0.0` (src/invite/nameplate.ts): anyone connected may ask
 * which member's open invite holds a nameplate. The answer names a peer id that circuits can
 * already reach while the invite is open, and nothing secret: a short code's words never come
 * here. Asking counts against nothing; what keeps a stranger from asking a thousand times a second
 * are the relay's per-IP limits on strangers (src/relay/gater.ts).
 *
 * @packageDocumentation
 */

import type { Stream } from '@libp2p/interface'
import { lpStream } from '@libp2p/utils'
import {
  NAMEPLATE_PROTOCOL,
  type NameplateRequest,
  type NameplateResponse,
  nameplateRequest,
} from '../invite/nameplate.ts'
import { closeStream, MAX_MESSAGE_BYTES, PAIRING_VERSION, STEP_TIMEOUT_MS } from '../invite/protocol.ts'
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

  async #answer(stream: Stream): Promise<void> {
    const lp = lpStream(stream, { maxDataLength: MAX_MESSAGE_BYTES })
    const signal = AbortSignal.timeout(STEP_TIMEOUT_MS)
    const reply = (response: NameplateResponse) =>
      lp.write(new TextEncoder().encode(JSON.stringify(response)), { signal })
    const raw = (await lp.read({ signal })).subarray()
    let request: NameplateRequest
    try {
      request = nameplateRequest.parse(JSON.parse(new TextDecoder().decode(raw)))
    } catch {
      await reply({ ok: false })
      return
    }
    const held =
      request.v === PAIRING_VERSION
        ? this.#components.relay.invites.lookupNameplate(request.nameplate)
        : undefined
    await reply(held === undefined ? { ok: false } : { ok: true, peer: held.member, network: held.network })
  }
}
