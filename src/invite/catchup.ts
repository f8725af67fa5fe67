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
import { askRelay } from './relay-admin.ts'
import { trustPeer } from './trust.ts'

/** What {@link catchUpGroups} needs of the node. */
export interface CatchUpHost {
  peerId: string
  configFile: string
  authorizedKeysFile: string
  authorized: { has(peerId: string): boolean; reloadFromFile(): Promise<unknown> }
}

/** Asks the relay for the members of this node's groups; trusts the ones it does not know. Returns them. */
export async function catchUpGroups(host: CatchUpHost, relay: Connection, log: Logger): Promise<string[]> {
  let answer: Awaited<ReturnType<typeof askRelay>>
  try {
    answer = await askRelay(relay, { type: 'members' })
  } catch (err) {
    // A relay without pairing (older, or its pairing off) has nothing to tell.
    log.debug('relay has no group members for us', {
      relay: relay.remotePeer.toString(),
      error: err as Error,
    })
    return []
  }
  const added: string[] = []
  for (const group of answer.groups ?? []) {
    for (const member of group.members) {
      if (member.peerId === host.peerId || host.authorized.has(member.peerId)) {
        continue
      }
      await trustPeer({
        authorizedKeysFile: host.authorizedKeysFile,
        configFile: host.configFile,
        peerId: member.peerId,
        ...(member.name === undefined ? {} : { name: member.name }),
        group: group.id,
      })
      added.push(member.peerId)
    }
  }
  if (added.length > 0) {
    await host.authorized.reloadFromFile()
    log.info('trusted group members learned from the relay', { count: added.length })
  }
  return added
}

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
    const conn = rt.node
      .getConnections()
      .find((c) => c.remotePeer.toString() === relayId && c.status === 'open' && c.limits === undefined)
    if (conn === undefined) {
      return
    }
    const host = {
      peerId: rt.peerId,
      configFile: rt.configFile,
      authorizedKeysFile: resolveIn(rt.dir, rt.config.security.authorized_keys_file),
      authorized: rt.authorized,
    }
    catchUpGroups(host, conn, log.child('groups')).catch((err: unknown) =>
      log.warn('catching up with relay groups failed', { error: err as Error }),
    )
  }
}
