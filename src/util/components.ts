/**
 * Components, the way js-libp2p's services are built: a class whose `start()` acquires what it
 * needs (a listener, a timer, a subscription, a socket) and whose `stop()` gives back exactly
 * that, so cleanup lives beside what it cleans up, not in one long function's `finally`. A role
 * (the daemon, the relay, a node) is an ordered list of them. A component reads what others
 * provide (the libp2p node, a running runtime) from the `Components` object it was given, at
 * start or later: by then the components before it in the list have started.
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

/**
 * A component made only when its turn to start comes, from what the components before it
 * provide (a class that takes a running node in its constructor, say): `start()` makes it and
 * starts it, `stop()` stops it. {@link Deferred.value} is the component, once made.
 */
export class Deferred<T extends Component> implements Component {
  readonly #make: () => T
  #value: T | undefined

  constructor(make: () => T) {
    this.#make = make
  }

  /** The component; only once started (it stays readable after the stop). */
  get value(): T {
    if (this.#value === undefined) {
      throw new Error('this component has not started')
    }
    return this.#value
  }

  async start(): Promise<void> {
    const value = this.#make()
    await value.start()
    this.#value = value
  }

  async stop(): Promise<void> {
    await this.#value?.stop()
  }
}

/** The name of a component for a log line: its class name (a deferred one's, once made). */
export function componentName(component: Component): string {
  if (component instanceof Deferred) {
    try {
      return componentName(component.value)
    } catch {
      return 'Deferred'
    }
  }
  return component.constructor?.name ?? 'component'
}
