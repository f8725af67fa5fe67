/**
 * A daemon catching up with its relay groups: members who joined a group after this machine
 * stopped waiting for them (`join --no-wait`, a killed process) are learned from the relay, which
 * keeps each group's member list (`members` over `/peerup/relay-admin/1.0.0`), and trusted like the
 * ones introduced while waiting. Run whenever a reservation is (re)gained on a relay.
 *
 * @packageDocumentation
 */

import type { Connection } from '@libp2p/interface'
import { resolveIn } from '../config/load.ts'
import type { Logger } from '../log/index.ts'
import type { NodeRuntime } from '../p2p/runtime.ts'
import type { Component } from '../util/components.ts'
import { unlimitedConnection } from './node.ts'
import { askRelay } from './relay-admin.ts'
import { trustPeer } from './trust.ts'

/**
 * Catches up with the relay groups each time a reservation is (re)gained, and at start on the
 * relays already reserved: `start()` subscribes to the reservation supervisor, `stop()`
 * unsubscribes.
 */
export class GroupCatchUp implements Component {
  readonly #components: { runtime: NodeRuntime; log: Logger }
  #unsubscribe: (() => void) | undefined

  /** `runtime` is read at start and later. */
  constructor(components: { runtime: NodeRuntime; log: Logger }) {
    this.#components = components
  }

  start(): void {
    const supervisor = this.#components.runtime.supervisor
    this.#unsubscribe = supervisor.onChange((e) => {
      if (e.reserved) {
        this.#catchUp(e.relay)
      }
    })
    for (const r of supervisor.status().filter((x) => x.reserved)) {
      this.#catchUp(r.peerId)
    }
  }

  stop(): void {
    this.#unsubscribe?.()
    this.#unsubscribe = undefined
  }

  #catchUp(relayId: string): void {
    const { runtime: rt, log } = this.#components
    const conn = unlimitedConnection(rt.node, relayId)
    if (conn !== undefined) {
      this.#trustMembers(conn, log.child('groups')).catch((err: unknown) =>
        log.warn('catching up with relay groups failed', { error: err as Error }),
      )
    }
  }

  /** Asks the relay for the members of this node's groups and trusts the ones it does not know. */
  async #trustMembers(relay: Connection, log: Logger): Promise<void> {
    const rt = this.#components.runtime
    const authorizedKeysFile = resolveIn(rt.dir, rt.config.security.authorized_keys_file)
    const answer = await askRelay(relay, { type: 'members' }).catch((err: unknown) => {
      // A relay without pairing (older, or its pairing off) has nothing to tell.
      log.debug('relay has no group members for us', {
        relay: relay.remotePeer.toString(),
        error: err as Error,
      })
    })
    let added = 0
    for (const group of answer?.groups ?? []) {
      for (const member of group.members) {
        if (member.peerId === rt.peerId || rt.authorized.has(member.peerId)) {
          continue
        }
        await trustPeer({
          authorizedKeysFile,
          configFile: rt.configFile,
          peerId: member.peerId,
          ...(member.name === undefined ? {} : { name: member.name }),
          group: group.id,
        })
        added++
      }
    }
    if (added > 0) {
      await rt.authorized.reloadFromFile()
      log.info('trusted group members learned from the relay', { count: added })
    }
  }
}
