/**
 * The service units in configs/: every peerup command line they run parses, and they ask systemd
 * for what the daemon and the relay speak (Type=notify, a watchdog, restart on failure).
 */

import assert from 'node:assert/strict'
import * as fs from 'node:fs/promises'
import { describe, it } from 'node:test'
import { parsesOk } from '../../helpers/parse.ts'

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
