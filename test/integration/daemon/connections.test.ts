/**
 * Who is connected, and how much (`GET /v1/connections`, `peerup daemon connections`), with a real
 * relay and two real daemons: a transfer through a's `daemon connect` listener to b's echo
 * service shows in both daemons' tables with its bytes growing as it runs — through the API and
 * through the command's `--json` — and, once over, in the history with how it ended (clean,
 * reset, closed with its proxy); a `peerup proxy --stdio`-style dial shows as `stdio`; the
 * per-peer and per-service byte counters of `/metrics` say the same.
 */

import assert from 'node:assert/strict'
import { PassThrough } from 'node:stream'
import { after, before, describe, it } from 'node:test'
import { setTimeout as delay } from 'node:timers/promises'
import type { ClosedConnection, ConnectionsResponse } from '../../../src/api/index.ts'
import { LocalClient } from '../../../src/client/local.ts'
import { editConfigFile } from '../../../src/config/edit.ts'
import { nodeConfigSchema } from '../../../src/config/schema.ts'
import { stdioEnd } from '../../../src/pipe/node.ts'
import { pipe } from '../../../src/pipe/pipe.ts'
import { runCli, startCli, tempDir } from '../../helpers/cli.ts'
import { startTestDaemon, type TestDaemon } from '../../helpers/daemon.ts'
import { startRelayAndPair, type TestNode, type TestRelay } from '../../helpers/mesh.ts'
import { sample, scrape } from '../../helpers/metrics.ts'
import { connect, echoClient, startEcho } from '../../helpers/tcp.ts'

const KiB = 1024

describe('daemon connections', { timeout: 240_000 }, () => {
  let root: string
  let relay: TestRelay
  let a: TestNode
  let b: TestNode
  let da: TestDaemon
  let db: TestDaemon
  const cleanups: Array<() => Promise<unknown>> = []
  const aClient = () => new LocalClient({ configFile: a.configFile })
  const bClient = () => new LocalClient({ configFile: b.configFile })

  /**
   * The record of connection `id` in `client`'s history, once its end has been recorded: the
   * listener records it a moment after the client's socket closed, in the daemon's own time.
   */
  const endedOf = async (client: LocalClient, match: (c: ClosedConnection) => boolean) => {
    for (;;) {
      const found = (await client.call('connections', {})).closed.find(match)
      if (found !== undefined) {
        return found
      }
      await delay(20)
    }
  }

  before(async () => {
    root = await tempDir({ after: (fn) => cleanups.push(fn) })
    ;({ relay, a, b } = await startRelayAndPair(root))
    cleanups.unshift(() => relay.stop())
    const echo = await startEcho()
    cleanups.unshift(echo.close)
    await b.addService('echo', `127.0.0.1:${echo.port}`)
    await editConfigFile(a.configFile, nodeConfigSchema, (doc) => {
      doc.setIn(['names', 'b'], b.peerId)
      doc.setIn(['telemetry', 'metrics', 'enabled'], true)
      doc.setIn(['telemetry', 'metrics', 'listen_address'], '127.0.0.1:0')
    })
    db = await startTestDaemon(b.configFile)
    cleanups.unshift(() => db.stop())
    da = await startTestDaemon(a.configFile)
    cleanups.unshift(() => da.stop())
  })

  after(async () => {
    for (const fn of cleanups) {
      await fn().catch(() => {})
    }
  })

  it('shows a running transfer growing, through the API and --json, then how it ended', async () => {
    const proxy = await aClient().call('connectAdd', { peer: 'b', service: 'echo', listen: '127.0.0.1:0' })
    const socket = await connect(Number(proxy.listen.split(':').pop()))
    const client = echoClient(socket)

    await client.roundTrip(256 * KiB)
    // Everything sent came back: a's listener has counted it all, both ways, and so has b.
    const first = (await aClient().call('connections', {})).open.find((c) => c.proxy === proxy.id)
    assert.ok(first, 'the connection is in the table')
    assert.equal(first.side, 'outbound')
    assert.equal(first.peerId, b.peerId)
    assert.equal(first.name, 'b')
    assert.equal(first.service, 'echo')
    assert.equal(first.local, proxy.listen)
    assert.equal(first.resumable, true)
    assert.ok(first.path?.type === 'RELAYED' || first.path?.type === 'DIRECT', 'it has a path')
    assert.equal(first.bytesOut, 256 * KiB)
    assert.equal(first.bytesIn, 256 * KiB)
    assert.ok(first.bytesInPerSecond >= 0 && first.bytesOutPerSecond >= 0)

    await client.roundTrip(256 * KiB)
    const cli = await runCli(['daemon', 'connections', '--json', '--config', a.configFile], root)
    assert.equal(cli.code, 0, cli.stderr)
    const second = (JSON.parse(cli.stdout) as ConnectionsResponse).open.find((c) => c.id === first.id)
    assert.ok(second, 'the same connection, still open')
    assert.equal(second.bytesOut, 512 * KiB)
    assert.equal(second.bytesIn, 512 * KiB)
    assert.equal(second.since, first.since)
    // b sees the same connection as one of its service's, from a.
    const theirs = (await bClient().call('connections', {})).open.find(
      (c) => c.peerId === a.peerId && c.service === 'echo',
    )
    assert.ok(theirs, "b's side of it")
    assert.equal(theirs.side, 'inbound')
    assert.equal(theirs.bytesIn, 512 * KiB)
    assert.equal(theirs.bytesOut, 512 * KiB)

    // The text form: a table of what is open.
    const text = await runCli(['daemon', 'connections', '--config', a.configFile], root)
    assert.equal(text.code, 0, text.stderr)
    assert.match(text.stdout, /^open \(1\)$/m)
    assert.match(
      text.stdout,
      new RegExp(`^${first.id} +b +echo +out +(RELAYED via|DIRECT).* 512 KiB +512 KiB`, 'm'),
    )

    socket.end()
    await client.closed
    const ended = await endedOf(aClient(), (c) => c.id === first.id)
    assert.equal(ended.end, 'clean')
    assert.equal(ended.error, undefined)
    assert.equal(ended.bytesIn, 512 * KiB)
    assert.equal(ended.bytesOut, 512 * KiB)
    assert.ok(ended.path !== undefined, 'the path it had')
    assert.ok(Date.parse(ended.ended) >= Date.parse(ended.since))
    assert.equal((await aClient().call('connections', {})).open.length, 0)
    const theirsEnded = await endedOf(bClient(), (c) => c.id === theirs.id)
    assert.equal(theirsEnded.end, 'clean')

    // Totals by peer and by service, and the same in /metrics.
    const totals = await aClient().call('connections', {})
    const peer = totals.peers.find((p) => p.peerId === b.peerId)
    assert.deepEqual(peer, {
      peerId: b.peerId,
      name: 'b',
      connections: 1,
      bytesIn: 512 * KiB,
      bytesOut: 512 * KiB,
    })
    const service = totals.services.find((s) => s.service === 'echo' && s.side === 'outbound')
    assert.equal(service?.bytesOut, 512 * KiB)
    const metrics = await scrape(da.ready.metricsAddress as string)
    const labels = { peer: b.peerId, service: 'echo', side: 'outbound' }
    assert.equal(sample(metrics, 'peerup_proxy_peer_bytes_total', { ...labels, direction: 'out' }), 512 * KiB)
    assert.equal(sample(metrics, 'peerup_proxy_peer_bytes_total', { ...labels, direction: 'in' }), 512 * KiB)
    assert.equal(
      sample(metrics, 'peerup_proxy_bytes_total', { service: 'echo', direction: 'out' }),
      512 * KiB,
    )
    await aClient().call('connectRemove', { id: proxy.id })
  })

  it('a reset, and a connection whose proxy is removed, end as such', async () => {
    const proxy = await aClient().call('connectAdd', { peer: 'b', service: 'echo', listen: '127.0.0.1:0' })
    const port = Number(proxy.listen.split(':').pop())
    const resetting = await connect(port)
    await echoClient(resetting).roundTrip(16 * KiB)
    const before = (await aClient().call('connections', {})).open.map((c) => c.id)
    resetting.resetAndDestroy()
    const reset = await endedOf(aClient(), (c) => before.includes(c.id))
    assert.equal(reset.end, 'reset')
    assert.ok(reset.error !== undefined, 'with why')

    const kept = await connect(port)
    const keptClient = echoClient(kept)
    await keptClient.roundTrip(16 * KiB)
    const open = (await aClient().call('connections', {})).open.find((c) => c.proxy === proxy.id)
    assert.ok(open)
    await aClient().call('connectRemove', { id: proxy.id })
    await keptClient.closed
    const closed = await endedOf(aClient(), (c) => c.id === open.id)
    assert.equal(closed.end, 'closed')
    // Newest first.
    const history = (await aClient().call('connections', {})).closed
    assert.ok(history.findIndex((c) => c.id === open.id) < history.findIndex((c) => c.id === reset.id))
  })

  it('a dial through the daemon (`peerup proxy --stdio`) shows as stdio', async () => {
    const far = await aClient().dial('b', 'echo')
    const input = new PassThrough()
    const output = new PassThrough()
    output.resume()
    const done = pipe(stdioEnd(input, output), far)
    input.end(Buffer.alloc(64 * KiB, 1))
    assert.equal((await done).reset, false)
    const ended = await endedOf(aClient(), (c) => c.local === 'stdio')
    assert.equal(ended.end, 'clean')
    assert.equal(ended.bytesOut, 64 * KiB)
    assert.equal(ended.name, 'b')
  })

  it('--watch prints a line when a connection opens and one when it ends; with --json, the answers', async () => {
    const proxy = await aClient().call('connectAdd', { peer: 'b', service: 'echo', listen: '127.0.0.1:0' })
    const watch = startCli(['daemon', 'connections', '--watch', '--config', a.configFile], root)
    const json = startCli(['daemon', 'connections', '--watch', '--json', '--config', a.configFile], root)
    try {
      const socket = await connect(Number(proxy.listen.split(':').pop()))
      const client = echoClient(socket)
      await client.roundTrip(4 * KiB)
      const [opened] = await watch.stdout(
        /^\S+ opened (\d+) b echo outbound 127\.0\.0\.1:\d+ (RELAYED|DIRECT).*$/m,
      )
      const id = opened.split(' ')[2]
      // A line of --json is the whole answer, the open connection in it.
      const [line = ''] = await json.stdout(new RegExp(`^\\{.*"id":${id},.*\\}$`, 'm'))
      assert.ok((JSON.parse(line) as ConnectionsResponse).open.some((c) => String(c.id) === id))
      socket.end()
      await client.closed
      await watch.stdout(
        new RegExp(`^\\S+ closed ${id} b echo outbound clean in 4\\.0 KiB out 4\\.0 KiB$`, 'm'),
      )
    } finally {
      watch.stop()
      json.stop()
      await aClient().call('connectRemove', { id: proxy.id })
    }
    assert.equal((await watch.done).code, 0)
    assert.equal((await json.done).code, 0)
  })
})
