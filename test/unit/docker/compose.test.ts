import assert from 'node:assert/strict'
import * as fs from 'node:fs/promises'
import { PassThrough } from 'node:stream'
import { describe, it } from 'node:test'
import { parse } from 'yaml'
import { buildProgram } from '../../../src/cli/program.ts'
import { readEnv } from '../../../src/env.ts'

class ParsedOk extends Error {}

/** Parses a command line with the real program, stopping just before the command would run. */
async function parsesOk(args: string[]): Promise<void> {
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

describe('docker files', () => {
  it('every command line in compose.yaml parses', async () => {
    const compose = parse(await fs.readFile(new URL('../../../docker/compose.yaml', import.meta.url), 'utf8'))
    const commands = Object.values(compose.services as Record<string, { command: string[] }>).map(
      (s) => s.command,
    )
    assert.ok(commands.length >= 3)
    for (const command of commands) {
      await parsesOk(command)
    }
  })

  it("the Dockerfile's default command parses", async () => {
    const dockerfile = await fs.readFile(new URL('../../../docker/Dockerfile', import.meta.url), 'utf8')
    const cmd = JSON.parse(/^CMD (.+)$/m.exec(dockerfile)?.[1] ?? '[]') as string[]
    assert.deepEqual(cmd, ['--help'])
    assert.match(dockerfile, /^ENTRYPOINT \["peerup"\]$/m)
  })

  it('a wrong command line is caught', async () => {
    await assert.rejects(parsesOk(['daemon', '--bogus']))
  })
})
