import assert from 'node:assert/strict'
import * as fs from 'node:fs/promises'
import { describe, it } from 'node:test'
import { parse } from 'yaml'
import { parsesOk } from '../../helpers/parse.ts'

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
