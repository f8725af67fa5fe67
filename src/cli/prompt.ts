/**
 * Line prompts for interactive commands (`init`). Only used when stdin is a terminal.
 *
 * @packageDocumentation
 */

import { createInterface } from 'node:readline/promises'
import type { CliContext } from './context.ts'

/** Whether the command may ask questions: stdin is a terminal and `--non-interactive` was not given. */
export function canPrompt(ctx: CliContext, nonInteractive: boolean | undefined): boolean {
  return nonInteractive !== true && ctx.stdin.isTTY === true
}

/** Asks one question on stderr and returns the trimmed answer, or `fallback` for an empty one. */
export async function ask(ctx: CliContext, question: string, fallback = ''): Promise<string> {
  const rl = createInterface({ input: ctx.stdin, output: ctx.stderr, terminal: ctx.stdin.isTTY === true })
  try {
    const suffix = fallback === '' ? '' : ` [${fallback}]`
    const answer = (await rl.question(`${question}${suffix}: `)).trim()
    return answer === '' ? fallback : answer
  } finally {
    rl.close()
  }
}
