/**
 * Slots for connections that are still in their handshake. libp2p holds every inbound
 * connection in one pool of pending slots until noise has authenticated it
 * (`maxIncomingPendingConnections`); a peer that never finishes its handshakes fills that pool
 * and every connection behind it is refused until the upgrade timeout frees the slots. The
 * gaters give strangers a small, separate allowance of their own out of it, keyed by IP or by
 * claimed peer id, so that they can never take the slots authorized peers need
 * (docs/decisions/0004-strangers.md).
 *
 * @packageDocumentation
 */

/** One slot held; releasing it twice is harmless. */
export interface PendingSlot {
  release(): void
}

export interface PendingSlotsOptions {
  /** Slots one key (an IP, a peer id) may hold at once. */
  perKey: number
  /** Slots all keys together may hold at once; unlimited when absent. */
  total?: number
  /** A slot not released by then is freed anyway: the handshake has timed out by then. */
  timeoutMs: number
}

/** Counted pending slots, per key and in total. */
export class PendingSlots {
  readonly #held = new Map<string, number>()
  readonly #options: PendingSlotsOptions
  #total = 0

  constructor(options: PendingSlotsOptions) {
    this.#options = options
  }

  /**
   * A slot for `key`, or undefined when `key` (or everyone together) holds the most allowed.
   * `onFree` runs once when the slot is released or times out.
   */
  take(key: string, onFree?: () => void): PendingSlot | undefined {
    const mine = this.#held.get(key) ?? 0
    if (mine >= this.#options.perKey) {
      return undefined
    }
    if (this.#options.total !== undefined && this.#total >= this.#options.total) {
      return undefined
    }
    this.#held.set(key, mine + 1)
    this.#total++
    let released = false
    const release = (): void => {
      if (released) {
        return
      }
      released = true
      clearTimeout(timer)
      onFree?.()
      this.#total--
      const left = (this.#held.get(key) ?? 1) - 1
      if (left <= 0) {
        this.#held.delete(key)
      } else {
        this.#held.set(key, left)
      }
    }
    const timer = setTimeout(release, this.#options.timeoutMs)
    timer.unref()
    return { release }
  }
}

/** The IP address of a multiaddr's first component, when it has one. */
export function ipOfAddr(addr: {
  getComponents(): Array<{ name: string; value?: string }>
}): string | undefined {
  return addr.getComponents().find((x) => x.name === 'ip4' || x.name === 'ip6')?.value
}
