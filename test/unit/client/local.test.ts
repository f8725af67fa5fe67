/**
 * LocalClient against a real local API server on a Unix socket: the version-mismatch warning
 * comes once per process, a missing daemon is a DaemonNotRunningError that says how to start it,
 * and the API's error answers keep their message and hint.
 */

import assert from 'node:assert/strict'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import { describe, it } from 'node:test'
import { ApiResponseError, DaemonNotRunningError, LocalClient } from '../../../src/client/local.ts'
import { NODE_FILES } from '../../../src/config/paths.ts'
import { NotFoundError } from '../../../src/errors.ts'
import { PeerUnreachableError } from '../../../src/p2p/errors.ts'
import { writeCookie } from '../../../src/util/cookie.ts'
import { createLocalApiServer } from '../../../src/util/local-api.ts'
import { listenOnSocket } from '../../../src/util/socket.ts'
import { tempDir } from '../../helpers/cli.ts'

async function fakeDaemon(dir: string, version: string) {
  const cookie = await writeCookie(path.join(dir, NODE_FILES.cookie))
  const server = createLocalApiServer({
    version,
    cookie: () => cookie,
    routes: [
      { method: 'GET', path: '/v1/status', handler: async () => ({ data: { peerId: 'x' } }) },
      {
        method: 'GET',
        path: '/v1/resolve/:name',
        handler: async (r) => {
          throw new NotFoundError(`unknown peer ${r.params.name}`, { hint: 'pair with it first' })
        },
      },
      {
        method: 'POST',
        path: '/v1/traceroute',
        handler: async () => {
          throw new PeerUnreachableError('cannot reach home', { hint: 'is its daemon running?' })
        },
      },
    ],
    statusOf: (err) => (err instanceof PeerUnreachableError ? 502 : undefined),
  })
  return listenOnSocket(server, path.join(dir, NODE_FILES.socket), { what: 'a test daemon' })
}

describe('LocalClient', () => {
  it('warns once per process when the daemon runs another version', async (t) => {
    const dir = await tempDir(t)
    await fs.chmod(dir, 0o700)
    const close = await fakeDaemon(dir, '9.9.9')
    t.after(close)
    const warnings: string[] = []
    const client = new LocalClient({
      configFile: path.join(dir, 'config.yaml'),
      warn: (m) => warnings.push(m),
    })
    await client.call('status', {})
    await client.call('status', {})
    assert.equal(warnings.length, 1)
    assert.match(warnings[0] ?? '', /daemon runs peerup 9\.9\.9.*restart the daemon/)
  })

  it('an error answer comes back as the same kind of error, with its message and hint', async (t) => {
    const dir = await tempDir(t)
    await fs.chmod(dir, 0o700)
    const close = await fakeDaemon(dir, '0.0.0')
    t.after(close)
    const client = new LocalClient({ configFile: path.join(dir, 'config.yaml') })
    await assert.rejects(client.call('resolve', { name: 'ghost' }), (err: unknown) => {
      assert.ok(err instanceof NotFoundError)
      assert.equal(err.message, 'unknown peer ghost')
      assert.equal(err.hint, 'pair with it first')
      return true
    })
    // A kind only the daemon's side knows keeps its name and status.
    await assert.rejects(client.call('traceroute', { peer: 'home' }), (err: unknown) => {
      assert.ok(err instanceof ApiResponseError)
      assert.equal(err.name, 'PeerUnreachableError')
      assert.equal(err.status, 502)
      assert.equal(err.message, 'cannot reach home')
      assert.equal(err.hint, 'is its daemon running?')
      return true
    })
  })

  it('says the daemon is not running, and how to start it, when nothing answers', async (t) => {
    const dir = await tempDir(t)
    const client = new LocalClient({ configFile: path.join(dir, 'config.yaml') })
    await assert.rejects(client.call('status', {}), (err: unknown) => {
      assert.ok(err instanceof DaemonNotRunningError)
      assert.match(err.hint ?? '', /peerup daemon/)
      return true
    })
  })
})
