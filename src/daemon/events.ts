/**
 * What a daemon tells its watchers (`GET /v1/events`, `peerup status --watch`): peers connecting
 * and leaving, the path to a peer changing (relayed → direct) and how upgrades go — all from the
 * node's PathTracker — plus reservations gained and lost and authorized_keys changes.
 *
 * @packageDocumentation
 */

import type { ApiPath, DaemonEvent, PathState } from '../api/index.ts'
import type { PathInfo } from '../p2p/path.ts'
import type { PathChange, UpgradeEvent } from '../p2p/paths.ts'
import type { NodeRuntime } from '../p2p/runtime.ts'

/** A subscriber gets every event in order; it must not throw. */
export type EventListener = (event: DaemonEvent) => void

/**
 * Distributes daemon events: a component whose `start()` subscribes to the node runtime's path
 * tracker, reservation supervisor and authorized_keys, and whose `stop()` unsubscribes.
 */
export class DaemonEvents {
  readonly #listeners = new Set<EventListener>()
  readonly #rt: NodeRuntime
  readonly #unsubscribe: Array<() => void> = []

  constructor(rt: NodeRuntime) {
    this.#rt = rt
  }

  /** Starts listening to the path tracker, the reservation supervisor and authorized_keys. */
  start(): void {
    const paths = this.#rt.paths
    const onPath = (evt: CustomEvent<PathChange>): void => {
      const { peer, previous, current } = evt.detail
      const time = new Date(evt.detail.at).toISOString()
      const name = this.nameOf(peer)
      if (current === undefined) {
        this.publish({ type: 'peer-disconnected', time, peerId: peer, name })
      } else if (previous === undefined) {
        this.publish({ type: 'peer-connected', time, peerId: peer, name, path: toApiPath(current) })
      } else {
        this.publish({
          type: 'path-changed',
          time,
          peerId: peer,
          name,
          from: toApiPath(previous),
          to: toApiPath(current),
        })
      }
    }
    const onUpgrade = (evt: CustomEvent<UpgradeEvent>): void => {
      const u = evt.detail
      this.publish({
        type: 'upgrade',
        time: new Date(u.at).toISOString(),
        peerId: u.peer,
        outcome: u.outcome,
        attempt: u.attempt,
        transport: u.transport,
        elapsedMs: u.elapsedMs,
        error: u.error,
      })
    }
    paths.addEventListener('path', onPath)
    paths.addEventListener('upgrade', onUpgrade)
    this.#unsubscribe.push(() => {
      paths.removeEventListener('path', onPath)
      paths.removeEventListener('upgrade', onUpgrade)
    })
    this.#unsubscribe.push(
      this.#rt.supervisor.onChange((e) => this.publish({ type: 'reservation', time: now(), ...e })),
      this.#rt.authorized.onChange((added, removed) =>
        this.publish({ type: 'auth-changed', time: now(), added, removed }),
      ),
    )
  }

  stop(): void {
    for (const off of this.#unsubscribe.splice(0)) {
      off()
    }
  }

  subscribe(listener: EventListener): () => void {
    this.#listeners.add(listener)
    return () => this.#listeners.delete(listener)
  }

  publish(event: DaemonEvent): void {
    for (const listener of this.#listeners) {
      listener(event)
    }
  }

  /** The path to every peer the tracker knows. */
  paths(): PathState[] {
    return this.#rt.paths.list().map((p) => ({
      peerId: p.peer,
      name: this.nameOf(p.peer),
      path: p.path === undefined ? undefined : toApiPath(p.path),
      since: new Date(p.since).toISOString(),
      previous: p.previous === undefined ? undefined : toApiPath(p.previous),
      connections: p.connections,
      upgrade: { ...p.upgrade },
    }))
  }

  /** The name a peer has under `names:`. */
  nameOf(peerId: string): string | undefined {
    return Object.entries(this.#rt.config.names).find(([, id]) => id === peerId)?.[0]
  }
}

/** Tells the watchers what a config change did. */
export function publishConfig(
  events: DaemonEvents,
  action: 'reloaded' | 'reverted' | 'confirmed',
  applied: string[] = [],
  restartNeeded: string[] = [],
): void {
  events.publish({ type: 'config', time: now(), action, applied, restartNeeded })
}

/** The API's form of a path (the same fields: the contract is written down separately). */
export function toApiPath(p: PathInfo): ApiPath {
  return {
    type: p.type,
    relay: p.relay,
    transport: p.transport,
    remoteAddr: p.remoteAddr,
    limited: p.limited,
  }
}

function now(): string {
  return new Date().toISOString()
}
