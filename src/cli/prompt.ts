/**
 * Line prompts for interactive commands (`init`). Only used when stdin is a terminal.
 *
 * @packageDocumentation
 */

import { createInterface, type Interface } from 'node:readline'
import type { CliContext } from './context.ts'

/** Whether the command may ask questions: stdin is a terminal and `--non-interactive` was not given. */
export function canPrompt(ctx: CliContext, nonInteractive: boolean | undefined): boolean {
  return nonInteractive !== true && ctx.stdin.isTTY === true
}

/**
 * Asks questions on stderr and reads answers from stdin, one line each. Lines are queued as they
 * arrive: readline drops a line that comes before its question is asked (typed ahead, or pasted
 * together), and one interface serves the whole conversation for the same reason.
 */
export class Prompter {
  #rl: Interface
  #out: CliContext['stderr']
  #lines: string[] = []
  #waiting: ((line: string | undefined) => void) | undefined
  #closed = false

  constructor(ctx: CliContext) {
    this.#out = ctx.stderr
    this.#rl = createInterface({ input: ctx.stdin, terminal: false })
    this.#rl.on('line', (line) => {
      const waiting = this.#waiting
      this.#waiting = undefined
      if (waiting === undefined) {
        this.#lines.push(line)
      } else {
        waiting(line)
      }
    })
    this.#rl.once('close', () => {
      this.#closed = true
      this.#waiting?.(undefined)
    })
  }

  /** Asks one question and returns the trimmed answer, or `fallback` for an empty one (or end of input). */
  async ask(question: string, fallback = ''): Promise<string> {
    const suffix = fallback === '' ? '' : ` [${fallback}]`
    this.#out.write(`${question}${suffix}: `)
    let line = this.#lines.shift()
    if (line === undefined && !this.#closed) {
      line = await new Promise<string | undefined>((resolve) => {
        this.#waiting = resolve
      })
    }
    const answer = (line ?? '').trim()
    return answer === '' ? fallback : answer
  }

  /** Releases stdin (`using prompter = new Prompter(ctx)` does it at the end of the block). */
  [Symbol.dispose](): void {
    this.#rl.close()
  }
}
