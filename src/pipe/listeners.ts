/**
 * Event listeners an end adds when it starts and removes, all at once, when its pipe is over.
 *
 * @packageDocumentation
 */

import type { EventEmitter } from 'node:events'

// biome-ignore lint/suspicious/noExplicitAny: listeners of Node emitters take whatever the event carries
type Listener = (...args: any[]) => void

/** Listeners added together and removed together. */
export class Listeners {
  readonly #off: Array<() => void> = []

  /** `emitter.on(event, fn)`, until {@link Listeners.removeAll}. */
  on(emitter: EventEmitter, event: string, fn: Listener): this {
    emitter.on(event, fn)
    this.#off.push(() => emitter.off(event, fn))
    return this
  }

  /** `target.addEventListener(event, fn)`, until {@link Listeners.removeAll}. */
  listen(target: EventTarget, event: string, fn: Listener): this {
    target.addEventListener(event, fn)
    this.#off.push(() => target.removeEventListener(event, fn))
    return this
  }

  removeAll(): void {
    for (const off of this.#off.splice(0)) {
      off()
    }
  }
}
