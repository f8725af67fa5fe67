/**
 * The service units in configs/: every peerup command line they run parses, and they ask systemd
 * for what the daemon and the relay speak (Type=notify, a watchdog, restart on failure).
 */

import assert from 'node:assert/strict'
import * as fs from 'node:fs/promises'
import { PassThrough } from 'node:stream'
import { describe, it } from 'node:test'
import { buildProgram } from '../../../src/cli/program.ts'
import { readEnv } from '../../../src/env.ts'

class ParsedOk extends Error {}

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
    `does not parse: ${args.join(' ')}`,
  )
}

function directive(unit: string, key: string): string | undefined {
  return new RegExp(`^${key}=(.*)$`, 'm').exec(unit)?.[1]
}

describe('configs/*.service', () => {
  for (const name of ['peerup.service', 'relay-server.service']) {
    it(`${name}: Type=notify with a watchdog, restarted on failure, and its ExecStart parses`, async () => {
      const unit = await fs.readFile(new URL(`../../../configs/${name}`, import.meta.url), 'utf8')
      assert.equal(directive(unit, 'Type'), 'notify')
      assert.match(directive(unit, 'WatchdogSec') ?? '', /^\d+$/)
      assert.equal(directive(unit, 'Restart'), 'on-failure')
      const exec = (directive(unit, 'ExecStart') ?? '').split(/\s+/)
      assert.match(exec[0] ?? '', /\/peerup$/)
      await parsesOk(exec.slice(1))
    })
  }

  it('the launchd plist runs `peerup daemon` and restarts it after a failure', async () => {
    const plist = await fs.readFile(
      new URL('../../../configs/org.peerup.daemon.plist', import.meta.url),
      'utf8',
    )
    const args = [
      ...(/<key>ProgramArguments<\/key>\s*<array>([\s\S]*?)<\/array>/.exec(plist)?.[1] ?? '').matchAll(
        /<string>(.*?)<\/string>/g,
      ),
    ].map((m) => m[1] as string)
    assert.match(args[0] ?? '', /\/peerup$/)
    await parsesOk(args.slice(1))
    assert.match(plist, /<key>SuccessfulExit<\/key>\s*<false\/>/)
  })
})
