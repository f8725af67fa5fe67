/**
 * Editing a config file the way a person would: only the touched keys change, comments and key
 * order stay, the result is validated before it is written, and the write is atomic.
 *
 * @packageDocumentation
 */

import * as fs from 'node:fs/promises'
import { type Document, isMap, isSeq, YAMLMap, YAMLSeq } from 'yaml'
import type { z } from 'zod'
import { atomicWriteFile, checkFileMode, withFileLock } from '../util/fs.ts'
import { parseConfigText, parseYaml } from './load.ts'

/**
 * Applies `mutate` to the YAML document of `file` and writes it back atomically, keeping
 * comments. The file must be valid before the edit and the result must be valid after it;
 * otherwise nothing is written.
 */
export async function editConfigFile<S extends z.ZodType, R>(
  file: string,
  schema: S,
  mutate: (doc: Document, current: z.output<S>) => R,
): Promise<{ result: R; config: z.output<S> }> {
  return withFileLock(file, async () => {
    await checkFileMode(file, 'trust')
    const text = await fs.readFile(file, 'utf8')
    const current = parseConfigText(text, file, schema)
    const { doc } = parseYaml(text, file)
    const result = mutate(doc, current)
    const next = doc.toString({ lineWidth: 0, flowCollectionPadding: false })
    const config = parseConfigText(next, file, schema)
    if (next !== text) {
      await atomicWriteFile(file, next)
    }
    return { result, config }
  })
}

/**
 * The mapping at `path`, created (in block style) when it is missing or empty (`services:` with
 * nothing after it, or `services: {}`).
 */
export function ensureMap(doc: Document, path: string[]): YAMLMap {
  const node = doc.getIn(path, true)
  if (isMap(node)) {
    if (node.items.length === 0) {
      node.flow = false
    }
    return node
  }
  const map = new YAMLMap()
  doc.setIn(path, map)
  return map
}

/** The sequence at `path`, created (in block style) when it is missing or empty. */
export function ensureSeq(doc: Document, path: string[]): YAMLSeq {
  const node = doc.getIn(path, true)
  if (isSeq(node)) {
    if (node.items.length === 0) {
      node.flow = false
    }
    return node
  }
  const seq = new YAMLSeq()
  doc.setIn(path, seq)
  return seq
}
