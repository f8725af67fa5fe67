/**
 * startAll()/stopAll(): components start in order and stop in reverse; a start that fails stops
 * those already started, in reverse, and never the one that failed or those after it; a stop that
 * throws is reported and the others still stop; an optional component that fails to start is
 * reported and skipped; a deferred one is made only when its turn to start comes.
 */

import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import {
  type Component,
  componentName,
  Deferred,
  Optional,
  startAll,
  stopAll,
} from '../../../src/util/components.ts'

/** A component that writes `start <name>` and `stop <name>` into `log`, and can be made to fail. */
class Recorder implements Component {
  readonly #name: string
  readonly #log: string[]
  readonly #fail: 'start' | 'stop' | undefined

  constructor(name: string, log: string[], fail?: 'start' | 'stop') {
    this.#name = name
    this.#log = log
    this.#fail = fail
  }

  async start(): Promise<void> {
    // A turn of the event loop: the next start must wait for this one.
    await new Promise((resolve) => setImmediate(resolve))
    if (this.#fail === 'start') {
      throw new Error(`${this.#name} cannot start`)
    }
    this.#log.push(`start ${this.#name}`)
  }

  stop(): void {
    this.#log.push(`stop ${this.#name}`)
    if (this.#fail === 'stop') {
      throw new Error(`${this.#name} cannot stop`)
    }
  }
}

describe('startAll / stopAll', () => {
  it('starts in order and stops in reverse', async () => {
    const log: string[] = []
    const list = ['a', 'b', 'c'].map((n) => new Recorder(n, log))
    await startAll(list)
    await stopAll(list)
    assert.deepEqual(log, ['start a', 'start b', 'start c', 'stop c', 'stop b', 'stop a'])
  })

  it('stops the started ones in reverse when a start fails, and throws its error', async () => {
    const log: string[] = []
    const list = [
      new Recorder('a', log),
      new Recorder('b', log),
      new Recorder('c', log, 'start'),
      new Recorder('d', log),
    ]
    await assert.rejects(startAll(list), /c cannot start/)
    assert.deepEqual(log, ['start a', 'start b', 'stop b', 'stop a'])
  })

  it('reports a stop that throws and stops the others all the same', async () => {
    const log: string[] = []
    const failing = new Recorder('b', log, 'stop')
    const list = [new Recorder('a', log), failing, new Recorder('c', log)]
    await startAll(list)
    const reported: Array<{ message: string; component: Component }> = []
    await stopAll(list, (err, component) => reported.push({ message: (err as Error).message, component }))
    assert.deepEqual(log, ['start a', 'start b', 'start c', 'stop c', 'stop b', 'stop a'])
    assert.deepEqual(reported, [{ message: 'b cannot stop', component: failing }])
  })

  it('reports a stop that throws while undoing a failed start, and throws the start error', async () => {
    const log: string[] = []
    const list = [new Recorder('a', log, 'stop'), new Recorder('b', log, 'start')]
    const reported: string[] = []
    await assert.rejects(
      startAll(list, (err) => reported.push((err as Error).message)),
      /b cannot start/,
    )
    assert.deepEqual(log, ['start a', 'stop a'])
    assert.deepEqual(reported, ['a cannot stop'])
  })

  it('goes on past an optional component that fails to start, and does not stop it', async () => {
    const log: string[] = []
    const errors: string[] = []
    const list = [
      new Recorder('a', log),
      new Optional(new Recorder('b', log, 'start'), (err) => errors.push((err as Error).message)),
      new Optional(new Recorder('c', log), () => errors.push('c')),
    ]
    await startAll(list)
    await stopAll(list)
    assert.deepEqual(log, ['start a', 'start c', 'stop c', 'stop a'])
    assert.deepEqual(errors, ['b cannot start'])
  })

  it('makes a deferred component when its turn to start comes, from what started before it', async () => {
    const log: string[] = []
    let made = 0
    const first = new Recorder('a', log)
    const deferred = new Deferred(() => {
      made++
      // What the components before it provide is there by now.
      assert.deepEqual(log, ['start a'])
      return new Recorder('b', log)
    })
    assert.throws(() => deferred.value, /not started/)
    assert.equal(componentName(deferred), 'Deferred')
    await startAll([first, deferred])
    assert.equal(made, 1)
    assert.ok(deferred.value instanceof Recorder)
    assert.equal(componentName(deferred), 'Recorder')
    await stopAll([first, deferred])
    assert.deepEqual(log, ['start a', 'start b', 'stop b', 'stop a'])
  })

  it('names a component by its class', () => {
    assert.equal(componentName(new Recorder('x', [])), 'Recorder')
  })
})
