/** Checking that command lines written in files (compose, systemd units, plists) parse. */

import assert from 'node:assert/strict'
import { PassThrough } from 'node:stream'
import { buildProgram } from '../../src/cli/program.ts'
import { readEnv } from '../../src/env.ts'

class ParsedOk extends Error {}

/** Parses a command line with the real program, stopping just before the command would run. */
export async function parsesOk(args: string[]): Promise<void> {
  const out = new PassThrough()
  const program = buildProgram({
    programName: 'peerup',
    stdout: out,
    stderr: out,
    stdin: new PassThrough(),
    env: readEnv({ HOME: '/nonexistent' }),
    cwd: '/',
    signal: new AbortController().signal,
  })
  program.hook('preAction', () => {
    throw new ParsedOk()
  })
  await assert.rejects(
    program.parseAsync(args, { from: 'user' }),
    ParsedOk,
    `does not parse: peerup ${args.join(' ')}`,
  )
}
