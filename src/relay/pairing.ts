/**
 * The relay's part in pairing (docs/pairing.md): sponsoring (src/relay/sponsoring.ts), the
 * nameplates of short codes (src/relay/nameplates.ts), and group
 * codes (`peerup relay pair --count N --ttl 1h`), N single-use codes whose inviter is the relay
 * itself (src/relay/group-codes.ts), kept with their groups' members in `pairing-groups.json`
 * (src/relay/groups.ts) so that both survive a restart.
 *
 * @packageDocumentation
 */

import { resolveIn } from '../config/load.ts'
import type { RelayConfig } from '../config/schema.ts'
import { ConflictError } from '../errors.ts'
import type { Logger } from '../log/index.ts'
import type { Observer } from '../metrics/observer.ts'
import { NO_OBSERVER } from '../metrics/observer.ts'
import { type Component, startAll, stopAll } from '../util/components.ts'
import { GroupCodes } from './group-codes.ts'
import { type GroupInfo, GroupStore, groupInfo, type NewGroup } from './groups.ts'
import { NameplateLookup } from './nameplates.ts'
import type { RelayHandle } from './server.ts'
import { RelayAdminProtocol, RelayKeys } from './sponsoring.ts'

export { GROUPS_FILE, type GroupInfo, MAX_GROUP_SIZE, type NewGroup } from './groups.ts'

export interface RelayPairingOptions {
  relay: RelayHandle
  config: RelayConfig
  /** The relay's directory (relay-server.yaml's). */
  dir: string
  log: Logger
  /** The transport address to put in group codes; default the first announce or listen address. */
  codeAddress?: string
  /** Group joins and sponsoring go to the audit log through it. */
  observer?: Observer
}

/**
 * Sponsoring and group codes as a component of the relay: the state file of the groups (read
 * first, its writes waited for last), the relay-admin protocol, and the group codes' handler of
 * the invite protocol, started in that order and stopped in reverse. The relay is read from
 * `options` when it starts, so `relay serve` can hand over one that starts just before.
 */
export class RelayPairingService implements Component {
  readonly #options: RelayPairingOptions
  readonly #store: GroupStore
  readonly #codes: GroupCodes
  readonly #components: Component[]

  constructor(options: RelayPairingOptions) {
    const { config, dir, log } = options
    this.#options = options
    const parts = {
      get relay(): RelayHandle {
        return options.relay
      },
      store: new GroupStore({ dir }),
      observer: options.observer ?? NO_OBSERVER,
      log,
    }
    // Onto `parts` itself: a spread would read the relay now, before `relay serve` has started it.
    const components = Object.assign(parts, {
      keys: new RelayKeys(parts, { keysFile: resolveIn(dir, config.security.authorized_keys_file) }),
    })
    this.#store = components.store
    this.#codes = new GroupCodes(components)
    this.#components = [
      this.#store,
      new RelayAdminProtocol(components, { security: config.security }),
      this.#codes,
      new NameplateLookup(components),
    ]
  }

  async start(): Promise<void> {
    await startAll(this.#components)
  }

  async stop(): Promise<void> {
    await stopAll(this.#components)
  }

  async createGroup({ count, ttlMs }: { count: number; ttlMs: number }): Promise<NewGroup> {
    const { relay, config, log } = this.#options
    const created = await this.#store.create({
      count,
      ttlMs,
      issuer: () => ({
        address: this.#codeAddress(),
        peerId: relay.peerId,
        network: config.discovery.network,
      }),
    })
    log.info('group created', { group: created.group.id, size: count, expires: created.group.expires })
    return created
  }

  listGroups(): GroupInfo[] {
    return this.#store.groups.map((g) => groupInfo(g))
  }

  async revokeGroup(id: string): Promise<GroupInfo> {
    const group = this.#store.get(id)
    group.revoked = true
    await this.#store.save()
    this.#codes.notify(group, { type: 'error', reason: 'revoked' })
    this.#options.log.info('group revoked', { group: id })
    return groupInfo(group)
  }

  /** The transport address group codes name: the one given, else what nodes can reach. */
  #codeAddress(): string {
    const { codeAddress, config, relay } = this.#options
    if (codeAddress !== undefined) {
      return codeAddress
    }
    // What nodes can reach: an announced address, else a listen address that is not loopback
    // (a loopback one only when there is nothing else, as in tests).
    const candidates = [...config.network.announce_addresses, ...relay.addresses()].filter(
      (a) => !/\/ip[46]\/(0\.0\.0\.0|::)\//.test(a) && !a.includes('/p2p-circuit'),
    )
    const loopback = (a: string): boolean => /^\/ip4\/127\.|^\/ip6\/::1\/|^\/ip6\/fe80/.test(a)
    const chosen = candidates.find((a) => !loopback(a)) ?? candidates[0]
    if (chosen === undefined) {
      throw new ConflictError('the relay has no address to put in a code', {
        hint: 'set network.announce_addresses in relay-server.yaml to the address nodes reach it on',
      })
    }
    return chosen.includes('/p2p/') ? chosen.slice(0, chosen.lastIndexOf('/p2p/')) : chosen
  }
}
