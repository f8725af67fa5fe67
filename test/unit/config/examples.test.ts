import assert from 'node:assert/strict'
import * as fs from 'node:fs/promises'
import { describe, it } from 'node:test'
import { isMap, parseDocument } from 'yaml'
import type { z } from 'zod'
import { parseConfigText } from '../../../src/config/load.ts'
import { nodeConfigSchema, relayConfigSchema } from '../../../src/config/schema.ts'
import { renderNodeConfig, renderRelayConfig } from '../../../src/config/template.ts'

/** Every key path of a parsed value, descending into mappings but not into user-named maps. */
function keyPaths(value: unknown, prefix = '', open = new Set(['services', 'names', 'proxies'])): string[] {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    return [prefix]
  }
  if (open.has(prefix)) {
    return [prefix]
  }
  return Object.entries(value).flatMap(([k, v]) => keyPaths(v, prefix === '' ? k : `${prefix}.${k}`, open))
}

function writtenKeyPaths(text: string): string[] {
  const doc = parseDocument(text)
  const walk = (node: unknown, prefix: string): string[] => {
    if (!isMap(node) || prefix === 'services' || prefix === 'names' || prefix === 'proxies') {
      return [prefix]
    }
    return node.items.flatMap((p) => {
      const key = String((p.key as { value: unknown }).value)
      return walk(p.value, prefix === '' ? key : `${prefix}.${key}`)
    })
  }
  return walk(doc.contents, '')
}

const examples: Array<[string, z.ZodType]> = [
  ['configs/peerup.example.yaml', nodeConfigSchema],
  ['configs/relay-server.example.yaml', relayConfigSchema],
]

describe('example configs document every key with its default', () => {
  for (const [file, schema] of examples) {
    it(file, async () => {
      const text = await fs.readFile(new URL(`../../../${file}`, import.meta.url), 'utf8')
      const parsed = parseConfigText(text, file, schema)
      const defaults = parseConfigText('version: 1\n', file, schema)
      // The values written are the defaults…
      assert.deepEqual(parsed, defaults)
      // …and every key the schema knows is written out.
      assert.deepEqual(writtenKeyPaths(text).sort(), keyPaths(defaults).sort())
    })
  }
})

describe('templates written by init and relay setup', () => {
  it('are valid and commented', () => {
    const node = renderNodeConfig({ relays: [], network: 'lab' })
    assert.equal(parseConfigText(node, 'config.yaml', nodeConfigSchema).discovery.network, 'lab')
    const relay = renderRelayConfig()
    assert.deepEqual(
      parseConfigText(relay, 'relay-server.yaml', relayConfigSchema),
      parseConfigText('version: 1\n', 'r', relayConfigSchema),
    )
    assert.ok(node.split('\n').filter((l) => l.trim().startsWith('#')).length > 5)
  })
})

describe('configs/network-work.example.yaml', () => {
  it('is a valid node config of network work', async () => {
    const text = await fs.readFile(
      new URL('../../../configs/network-work.example.yaml', import.meta.url),
      'utf8',
    )
    const config = parseConfigText(text, 'network-work.example.yaml', nodeConfigSchema)
    assert.equal(config.discovery.network, 'work')
    assert.deepEqual(Object.keys(config.names), ['build'])
  })
})
