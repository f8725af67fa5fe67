/**
 * `peerup network list|add|remove|use` and `--network` without a daemon: the layout on disk, the
 * commands that read a node's files following the selected network, and one-line refusals that
 * leave nothing half-made.
 */

import assert from 'node:assert/strict'
import { once } from 'node:events'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import { describe, it } from 'node:test'
import { initNodeDir, RELAY_ADDR, runCli, tempDir } from '../../helpers/cli.ts'
import { spawnDaemon } from '../../helpers/daemon.ts'

const PEER = '12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN'

describe('peerup network', () => {
  it('adds, lists, uses and removes a network; --network and name@network pick the files', async (t) => {
    const root = await tempDir(t)
    const main = await initNodeDir(root)
    const dir = path.dirname(main)
    const cli = (...args: string[]) => runCli(['--config', main, ...args], root)

    const list0 = await cli('network', 'list', '--json')
    assert.equal(list0.code, 0, list0.stderr)
    assert.deepEqual(
      (JSON.parse(list0.stdout) as Array<{ name: string; main: boolean; selected: boolean }>).map((n) => [
        n.name,
        n.main,
        n.selected,
      ]),
      [['default', true, true]],
    )

    const add = await cli('network', 'add', 'work', '--relay', RELAY_ADDR, '--json')
    assert.equal(add.code, 0, add.stderr)
    const added = JSON.parse(add.stdout) as { dir: string; peerId: string; running: boolean }
    assert.equal(added.dir, path.join(dir, 'networks', 'work'))
    assert.equal(added.running, false)

    // Refusals: one line that says what to do, and nothing written.
    const again = await cli('network', 'add', 'work')
    assert.equal(again.code, 1)
    assert.match(again.stderr, /^peerup: a network named work already exists .* — choose another name/)
    assert.equal(again.stderr.trim().split('\n').length, 1)
    const bad = await cli('network', 'add', 'Work/x')
    assert.equal(bad.code, 2)
    assert.match(bad.stderr, /invalid network name "Work\/x": a network name is lowercase/)
    const unknown = await cli('--network', 'nope', 'status')
    assert.equal(unknown.code, 1)
    assert.match(unknown.stderr, /unknown network "nope" .*`peerup network list` shows the names/)
    assert.deepEqual(await fs.readdir(path.join(dir, 'networks')), ['work'])

    // Commands that read a node's files follow --network, and name@network.
    const authed = await cli('auth', 'add', `${PEER}@work`, '--comment', 'a work peer')
    assert.equal(authed.code, 0, authed.stderr)
    assert.match(
      await fs.readFile(path.join(dir, 'networks', 'work', 'authorized_keys'), 'utf8'),
      new RegExp(PEER),
    )
    assert.doesNotMatch(await fs.readFile(path.join(dir, 'authorized_keys'), 'utf8'), new RegExp(PEER))
    const svc = await cli('service', 'add', 'web', '127.0.0.1:8080', '--network', 'work')
    assert.equal(svc.code, 0, svc.stderr)
    const status = await cli('status', '--network', 'work', '--json')
    assert.equal(status.code, 0, status.stderr)
    const s = JSON.parse(status.stdout) as {
      peerId: string
      network: string
      services: Array<{ name: string }>
    }
    assert.equal(s.peerId, added.peerId)
    assert.equal(s.network, 'work')
    assert.deepEqual(
      s.services.map((x) => x.name),
      ['web'],
    )
    const conflict = await cli('auth', 'add', `${PEER}@work`, '--network', 'default')
    assert.equal(conflict.code, 2)
    assert.match(conflict.stderr, /names network work but --network says default/)

    // doctor checks each network unless --network names one.
    const doctor = await cli('doctor', '--json')
    const report = JSON.parse(doctor.stdout) as {
      checks: Array<{ id: string; summary: string }>
      networks?: Array<{ name: string; report: { checks: Array<{ id: string; summary: string }> } }>
    }
    assert.equal(report.checks.find((c) => c.id === 'config')?.summary, `${main} is valid`)
    assert.deepEqual(
      report.networks?.map((n) => [n.name, n.report.checks.find((c) => c.id === 'config')?.summary]),
      [['work', `${path.join(dir, 'networks', 'work', 'config.yaml')} is valid`]],
    )
    const one = JSON.parse((await cli('doctor', '--json', '--network', 'work')).stdout) as {
      networks?: unknown
    }
    assert.equal(one.networks, undefined)

    // The daemon runs every network: --network is refused before anything starts.
    const daemon = await cli('--network', 'work', 'daemon')
    assert.equal(daemon.code, 2)
    assert.match(daemon.stderr, /the daemon runs every network of the node: --network does not apply/)

    // `use` makes work the network of commands that name none; `use default` resets.
    const use = await cli('network', 'use', 'work')
    assert.equal(use.code, 0, use.stderr)
    assert.equal(JSON.parse((await cli('whoami', '--json')).stdout).peerId, added.peerId)
    const listed = JSON.parse((await cli('network', 'list', '--json')).stdout) as Array<{
      name: string
      selected: boolean
      peerId: string
    }>
    assert.deepEqual(
      listed.map((n) => [n.name, n.selected]),
      [
        ['default', false],
        ['work', true],
      ],
    )
    assert.equal(listed[1]?.peerId, added.peerId)
    // `peerup daemon` runs the main config (and so every network), whatever `use` chose.
    // A network whose config does not load does not keep the others from running.
    const broken = path.join(dir, 'networks', 'broken')
    await fs.mkdir(broken, { mode: 0o700 })
    await fs.writeFile(path.join(broken, 'config.yaml'), 'version: 1\nrelay: [not a map\n', { mode: 0o600 })
    // A child process: `peerup daemon` runs itself again in place (MALLOC_ARENA_MAX), which in
    // this process would be the test runner's.
    const running = await spawnDaemon(main)
    try {
      // It answers on the main directory's socket, and runs both networks.
      let states: Array<{ name: string; running: boolean; error?: string }> = []
      const up = () => states.filter((n) => n.running).length === 2
      for (let i = 0; i < 200 && !up(); i++) {
        await new Promise((resolve) => setTimeout(resolve, 100))
        const r = await cli('network', 'list', '--json')
        states = r.code === 0 ? JSON.parse(r.stdout) : []
      }
      assert.deepEqual(
        states.map((n) => [n.name, n.running]),
        [
          ['default', true],
          ['broken', false],
          ['work', true],
        ],
      )
      assert.match(states[1]?.error ?? '', /broken\/config\.yaml:\d+: invalid YAML/)
      assert.ok((await fs.stat(path.join(dir, 'peerup.sock'))).isSocket())
      assert.equal(
        await fs.stat(path.join(dir, 'networks', 'work', 'peerup.sock')).catch(() => undefined),
        undefined,
      )
    } finally {
      const exited = once(running, 'exit')
      running.kill('SIGTERM')
      assert.deepEqual(await exited, [0, null])
      await fs.rm(broken, { recursive: true })
    }
    assert.equal((await cli('network', 'use', 'default')).code, 0)
    assert.notEqual(JSON.parse((await cli('whoami', '--json')).stdout).peerId, added.peerId)

    // remove keeps the directory under .removed and says where.
    const configBefore = await fs.readFile(path.join(dir, 'networks', 'work', 'config.yaml'))
    const removed = await cli('network', 'remove', 'work', '--json')
    assert.equal(removed.code, 0, removed.stderr)
    const { movedTo, stopped } = JSON.parse(removed.stdout) as { movedTo: string; stopped: boolean }
    assert.equal(stopped, false)
    assert.ok(movedTo.startsWith(path.join(dir, 'networks', '.removed', 'work-')))
    assert.deepEqual(await fs.readFile(path.join(movedTo, 'config.yaml')), configBefore)
    assert.equal((await cli('network', 'remove', 'default')).code, 2)
    const gone = await cli('--network', 'work', 'status')
    assert.equal(gone.code, 1)
    // The main config was never touched.
    assert.match(await fs.readFile(main, 'utf8'), /network: ""/)
  })
})
