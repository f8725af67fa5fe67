/** `relay serve` under systemd: READY=1 once it relays, WATCHDOG=1 while it runs, STOPPING=1 at stop. */

import assert from 'node:assert/strict'
import * as path from 'node:path'
import { it } from 'node:test'
import { DgramSocket } from 'node-unix-socket'
import { editConfigFile } from '../../../src/config/edit.ts'
import { initRelay } from '../../../src/config/init.ts'
import { relayConfigSchema } from '../../../src/config/schema.ts'
import { readEnv } from '../../../src/env.ts'
import { configureLogging, createLogger } from '../../../src/log/index.ts'
import { runRelay } from '../../../src/relay/serve.ts'
import { tempDir } from '../../helpers/cli.ts'

configureLogging({ level: 'error' })

it('the relay tells systemd READY=1, WATCHDOG=1, then STOPPING=1', { timeout: 30_000 }, async (t) => {
  const root = await tempDir(t)
  const init = await initRelay(path.join(root, 'relay'))
  await editConfigFile(init.configFile, relayConfigSchema, (doc) => {
    doc.setIn(['network', 'listen_addresses'], doc.createNode(['/ip4/127.0.0.1/tcp/0']))
    doc.setIn(['stun', 'enabled'], false)
    doc.setIn(['health', 'listen_address'], '127.0.0.1:0')
    doc.setIn(['splice', 'listen_address'], '127.0.0.1:0')
  })
  const notifyPath = path.join(root, 'notify.sock')
  const listener = new DgramSocket()
  t.after(() => listener.close())
  const received: string[] = []
  const waiters: Array<() => void> = []
  listener.on('data', (buf: Buffer) => {
    received.push(buf.toString())
    for (const w of waiters.splice(0)) w()
  })
  listener.bind(notifyPath)
  const seen = async (what: RegExp): Promise<void> => {
    while (!received.some((m) => what.test(m))) {
      await new Promise<void>((resolve) => waiters.push(resolve))
    }
  }
  const controller = new AbortController()
  const running = runRelay({
    configFile: init.configFile,
    log: createLogger('relay'),
    signal: controller.signal,
    env: { ...readEnv({}), notifySocket: notifyPath, watchdogUsec: 300_000 },
  })
  await seen(/^READY=1/m)
  await seen(/^WATCHDOG=1$/m)
  controller.abort()
  await running
  await seen(/^STOPPING=1$/m)
  const order = ['READY=1', 'WATCHDOG=1', 'STOPPING=1'].map((s) => received.findIndex((m) => m.startsWith(s)))
  assert.deepEqual(
    [...order].sort((x, y) => x - y),
    order,
  )
})
