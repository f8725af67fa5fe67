/**
 * Several networks (src/config/networks.ts): the name@network split, the network-name rule, the
 * layout found on disk, the selection, and `network add` / `network remove` on real directories.
 */

import assert from 'node:assert/strict'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import { describe, it } from 'node:test'
import { splitNetworkRef } from '../../../src/api/names.ts'
import { loadIdentity, peerIdOf } from '../../../src/auth/identity.ts'
import { loadNodeConfig } from '../../../src/config/load.ts'
import {
  addNetwork,
  checkNetworkName,
  findNetwork,
  listNetworks,
  locateNetworkConfig,
  readSelectedNetwork,
  removeNetworkDir,
  selectNetwork,
  writeSelectedNetwork,
} from '../../../src/config/networks.ts'
import { ConflictError, NotFoundError, UsageError } from '../../../src/errors.ts'
import { initNodeDir, RELAY_ADDR, tempDir } from '../../helpers/cli.ts'

describe('name@network', () => {
  it('splits at the last @, and leaves a plain name alone', () => {
    assert.deepEqual(splitNetworkRef('home@work'), { name: 'home', network: 'work' })
    assert.deepEqual(splitNetworkRef('home'), { name: 'home', network: undefined })
    assert.deepEqual(splitNetworkRef('12D3KooWabc@lab'), { name: '12D3KooWabc', network: 'lab' })
    assert.deepEqual(splitNetworkRef('a@b@c'), { name: 'a@b', network: 'c' })
    assert.deepEqual(splitNetworkRef('home@'), { name: 'home', network: '' })
  })

  it('selects the peer’s network, else --network, else the one `use` chose, else none', () => {
    assert.deepEqual(selectNetwork({ peer: 'home@work', used: 'lab' }), { network: 'work', peer: 'home' })
    assert.deepEqual(selectNetwork({ peer: 'home', flag: 'work', used: 'lab' }), {
      network: 'work',
      peer: 'home',
    })
    assert.deepEqual(selectNetwork({ peer: 'home', used: 'lab' }), { network: 'lab', peer: 'home' })
    assert.deepEqual(selectNetwork({}), { network: undefined, peer: undefined })
    assert.deepEqual(selectNetwork({ peer: 'home@work', flag: 'work' }), { network: 'work', peer: 'home' })
    assert.throws(() => selectNetwork({ peer: 'home@work', flag: 'lab' }), UsageError)
    assert.throws(() => selectNetwork({ peer: 'home@' }), /invalid network name ""/)
    assert.throws(() => selectNetwork({ peer: 'home@Work' }), UsageError)
  })
})

describe('network names', () => {
  it('takes lowercase letters, digits, - and _, and refuses the rest with the rule', () => {
    for (const ok of ['work', 'home-lab', 'a', 'x_1', '0']) {
      assert.equal(checkNetworkName(ok), ok)
    }
    for (const bad of ['', 'Work', '.removed', '-x', 'a/b', '../x', 'a b', 'x'.repeat(64), 'a@b']) {
      assert.throws(
        () => checkNetworkName(bad),
        (e: Error) => e instanceof UsageError && /lowercase/.test(e.message),
      )
    }
  })

  it('locates a further network’s config beside its main one by the path alone', () => {
    assert.deepEqual(locateNetworkConfig('/h/.config/peerup/networks/work/config.yaml'), {
      mainConfigFile: '/h/.config/peerup/config.yaml',
      network: 'work',
    })
    assert.deepEqual(locateNetworkConfig('/h/.config/peerup/config.yaml'), {
      mainConfigFile: '/h/.config/peerup/config.yaml',
      network: undefined,
    })
  })
})

describe('the layout on disk', () => {
  it('is the main network alone for a config of today, named default (or its discovery.network)', async (t) => {
    const root = await tempDir(t)
    const main = await initNodeDir(root)
    assert.deepEqual(await listNetworks(main), [
      { name: 'default', dir: path.dirname(main), configFile: main, main: true },
    ])
    const named = await initNodeDir(path.join(root, 'other'), ['--network', 'home'])
    assert.equal((await listNetworks(named))[0]?.name, 'home')
  })

  it('adds a network as init makes a node, lists it, selects it, and removes it into .removed', async (t) => {
    const root = await tempDir(t)
    const main = await initNodeDir(root)
    const dir = path.dirname(main)
    const added = await addNetwork({ mainConfigFile: main, name: 'work', relays: [RELAY_ADDR] })
    assert.equal(added.dir, path.join(dir, 'networks', 'work'))
    const { config } = await loadNodeConfig(added.configFile)
    assert.equal(config.discovery.network, 'work')
    assert.deepEqual(config.relay.addresses, [RELAY_ADDR])
    assert.equal((await fs.stat(added.dir)).mode & 0o777, 0o700)
    assert.equal((await fs.stat(path.join(added.dir, 'identity.key'))).mode & 0o777, 0o600)
    const mainId = peerIdOf(await loadIdentity(path.join(dir, 'identity.key')))
    assert.notEqual(added.peerId, mainId, 'a network of its own has an identity of its own')
    // Nothing of the temporary directory is left beside it.
    assert.deepEqual(await fs.readdir(path.join(dir, 'networks')), ['work'])

    const same = await addNetwork({ mainConfigFile: main, name: 'lab', relays: [], sameIdentity: true })
    assert.equal(same.peerId, mainId)
    assert.equal(same.createdIdentity, false)

    assert.deepEqual(
      (await listNetworks(main)).map((n) => [n.name, n.main]),
      [
        ['default', true],
        ['lab', false],
        ['work', false],
      ],
    )
    await assert.rejects(addNetwork({ mainConfigFile: main, name: 'work', relays: [] }), ConflictError)
    await assert.rejects(addNetwork({ mainConfigFile: main, name: 'default', relays: [] }), ConflictError)
    await assert.rejects(addNetwork({ mainConfigFile: main, name: 'Bad', relays: [] }), UsageError)
    // A bad relay fails before anything is left behind.
    await assert.rejects(addNetwork({ mainConfigFile: main, name: 'broken', relays: ['nonsense'] }))
    assert.deepEqual((await fs.readdir(path.join(dir, 'networks'))).sort(), ['lab', 'work'])
    await assert.rejects(
      findNetwork(main, 'nope'),
      (e: Error) =>
        e instanceof NotFoundError && /network list/.test(`${e.message} ${(e as NotFoundError).hint}`),
    )

    assert.equal(await readSelectedNetwork(dir), undefined)
    await writeSelectedNetwork(dir, 'work')
    assert.equal(await readSelectedNetwork(dir), 'work')

    const now = new Date('2026-12-06T16:00:00.000Z')
    const { movedTo } = await removeNetworkDir(main, 'work', now)
    assert.equal(movedTo, path.join(dir, 'networks', '.removed', 'work-2026-12-06T16-00-00-000Z'))
    assert.ok((await fs.stat(path.join(movedTo, 'config.yaml'))).isFile(), 'nothing is deleted')
    assert.equal(await readSelectedNetwork(dir), undefined, 'the choice of a removed network is forgotten')
    assert.deepEqual(
      (await listNetworks(main)).map((n) => n.name),
      ['default', 'lab'],
    )
    await assert.rejects(removeNetworkDir(main, 'default'), UsageError)
    await assert.rejects(removeNetworkDir(main, 'work'), NotFoundError)
  })
})
