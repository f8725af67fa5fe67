/**
 * Lines that happen over time (a ping's replies, the daemon's events, an invite's progress) as an
 * async iterable: whoever produces them pushes, whoever consumes them pulls. What the consumer has
 * not taken yet is bounded: a consumer that falls that far behind is cut off with an error rather
 * than let memory grow.
 *
 * @packageDocumentation
 */

/** The consumer fell too far behind. */
export class ChannelOverflowError extends Error {
  override name = 'ChannelOverflowError'
}

/** A queue of values with one consumer. */
export class Channel<T> implements AsyncIterable<T> {
  readonly #queue: T[] = []
  readonly #limit: number
  readonly #onClose = new Set<() => void>()
  #wake: (() => void) | undefined
  #ended = false
  #error: Error | undefined
  #closed = false

  /** @param limit - values waiting for the consumer before it is cut off */
  constructor(limit = Number.POSITIVE_INFINITY) {
    this.#limit = limit
  }

  /** Adds a value; ignored once the channel ended. */
  push(value: T): void {
    if (this.#ended) {
      return
    }
    if (this.#queue.length >= this.#limit) {
      this.fail(new ChannelOverflowError(`the reader fell more than ${this.#limit} lines behind`))
      return
    }
    this.#queue.push(value)
    this.#wake?.()
  }

  /** No more values: the consumer's loop ends after the ones queued. */
  end(): void {
    this.#ended = true
    this.#wake?.()
  }

  /** Ends with an error, thrown to the consumer after the values queued. */
  fail(err: Error): void {
    if (!this.#ended) {
      this.#error = err
      this.end()
    }
  }

  /** Runs `fn` once the consumer is done (finished, failed, or stopped early). */
  onClose(fn: () => void): void {
    if (this.#closed) {
      fn()
    } else {
      this.#onClose.add(fn)
    }
  }

  #close(): void {
    if (!this.#closed) {
      this.#closed = true
      this.#ended = true
      for (const fn of this.#onClose) {
        fn()
      }
    }
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<T> {
    try {
      for (;;) {
        const next = this.#queue.shift()
        if (next !== undefined) {
          yield next
          continue
        }
        if (this.#ended) {
          if (this.#error !== undefined) {
            throw this.#error
          }
          return
        }
        await new Promise<void>((resolve) => {
          this.#wake = resolve
        })
        this.#wake = undefined
      }
    } finally {
      this.#close()
    }
  }
}
