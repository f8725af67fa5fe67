/**
 * Components, the way js-libp2p's services are built: a class whose `start()` acquires what it
 * needs (a listener, a timer, a subscription, a socket) and whose `stop()` gives back exactly
 * that. A role (the daemon, the relay, a node) is an ordered list of them: {@link startAll} starts
 * them in order and, when one fails, stops those already started in reverse before the error
 * goes on; {@link stopAll} stops them in reverse. Cleanup then lives beside what it cleans up,
 * not in one long function's `finally`.
 *
 * A component reads what other components provide (the libp2p node, a running runtime) from the
 * `Components` object it was given, at start or later: by then the components before it in the
 * list have started.
 *
 * @packageDocumentation
 */

/** Something that runs between `start()` and `stop()`; `stop()` undoes what `start()` did. */
export interface Component {
  start(): void | Promise<void>
  stop(): void | Promise<void>
}

/** Called with each `stop()` that threw; the other components are stopped all the same. */
export type StopErrorHandler = (err: unknown, component: Component) => void

/**
 * Starts `components` one after the other. When a start fails, the ones already started are
 * stopped in reverse order and the error is thrown.
 */
export async function startAll(
  components: readonly Component[],
  onStopError: StopErrorHandler = () => {},
): Promise<void> {
  const started: Component[] = []
  try {
    for (const component of components) {
      await component.start()
      started.push(component)
    }
  } catch (err) {
    await stopAll(started, onStopError)
    throw err
  }
}

/** Stops `components` in reverse order; one that throws is reported and the rest still stop. */
export async function stopAll(
  components: readonly Component[],
  onStopError: StopErrorHandler = () => {},
): Promise<void> {
  for (const component of [...components].reverse()) {
    try {
      await component.stop()
    } catch (err) {
      onStopError(err, component)
    }
  }
}

/**
 * A component the others can do without: when its start fails, `onStartError` is told and the
 * list goes on; it is then not stopped either.
 */
export class Optional implements Component {
  readonly #component: Component
  readonly #onStartError: (err: unknown) => void
  #started = false

  constructor(component: Component, onStartError: (err: unknown) => void) {
    this.#component = component
    this.#onStartError = onStartError
  }

  /** Starts the component; a failure is reported, not thrown. */
  async start(): Promise<void> {
    try {
      await this.#component.start()
      this.#started = true
    } catch (err) {
      this.#onStartError(err)
    }
  }

  /** Stops the component, when it started. */
  async stop(): Promise<void> {
    if (this.#started) {
      this.#started = false
      await this.#component.stop()
    }
  }
}

/** The name of a component for a log line: its class name. */
export function componentName(component: Component): string {
  return component.constructor?.name ?? 'component'
}
