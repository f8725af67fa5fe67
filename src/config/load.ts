/**
 * Reading config files: YAML parsing, the version gate, schema validation, and errors that name
 * the file, the line and the key path of every problem.
 *
 * @packageDocumentation
 */

import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import { type Document, isMap, isScalar, isSeq, LineCounter, type Node, parseDocument } from 'yaml'
import type { z } from 'zod'
import { checkFileMode } from '../util/fs.ts'
import { ConfigError, type ConfigProblem, ConfigVersionError } from './errors.ts'
import {
  CONFIG_VERSION,
  type NodeConfig,
  nodeConfigSchema,
  type RelayConfig,
  relayConfigSchema,
} from './schema.ts'

/** A validated config together with where it came from. */
export interface Loaded<T> {
  /** Absolute path of the file. */
  file: string
  /** Its directory: everything the node keeps lives here. */
  dir: string
  config: T
}

/**
 * Largest config file read. A real config is a few KB; parsing grows faster than linearly with
 * the number of keys in a mapping (the YAML parser's duplicate-key check), and a 6 MB file of
 * 100,000 services kept `config validate` busy — deaf to SIGTERM — for minutes.
 */
export const MAX_CONFIG_BYTES = 1024 * 1024

/** Refuses a config of `size` bytes, more than {@link MAX_CONFIG_BYTES}. */
export function refuseOversize(file: string, size: number): void {
  if (size > MAX_CONFIG_BYTES) {
    const message = `${size} bytes: larger than any peerup config (at most 1 MiB)`
    throw new ConfigError(file, [{ line: undefined, key: '', message }], {
      hint: 'is this the right file? a config is a few hundred lines (configs/*.example.yaml)',
    })
  }
}

/**
 * Deepest nesting of mappings and lists accepted. Ours is 4 levels deep; the parser recurses once
 * per level, and 50,000 levels overflowed its stack.
 */
export const MAX_CONFIG_DEPTH = 32

/**
 * How deeply `text` nests flow collections (`[`, `{`), read without parsing: the one way to nest
 * thousands of levels in a small file. Quoted text and comments are skipped.
 */
function flowDepth(text: string): { depth: number; offset: number } {
  let depth = 0
  let deepest = { depth: 0, offset: 0 }
  let quote: string | undefined
  for (let i = 0; i < text.length; i++) {
    const c = text[i]
    if (quote !== undefined) {
      if (c === '\\' && quote === '"') {
        i++
      } else if (c === quote) {
        quote = undefined
      }
      continue
    }
    if ((c === '"' || c === "'") && (i === 0 || /[\s[{,:]/.test(text[i - 1] as string))) {
      // A quote opens a scalar only where one can start (`it's` is plain text).
      quote = c
    } else if (c === '#' && (i === 0 || /\s/.test(text[i - 1] as string))) {
      const end = text.indexOf('\n', i)
      i = end === -1 ? text.length : end
    } else if (c === '[' || c === '{') {
      depth++
      if (depth > deepest.depth) {
        deepest = { depth, offset: i }
      }
    } else if ((c === ']' || c === '}') && depth > 0) {
      depth--
    }
  }
  return deepest
}

/** Parses YAML text into a document, turning syntax errors into a {@link ConfigError} with a line. */
export function parseYaml(text: string, file: string): { doc: Document; lines: LineCounter } {
  const lines = new LineCounter()
  const tooDeep = (line: number | undefined): ConfigError =>
    new ConfigError(file, [{ line, key: '', message: `nested more than ${MAX_CONFIG_DEPTH} levels deep` }], {
      hint: 'a peerup config nests 4 levels at most: see configs/*.example.yaml',
    })
  const flow = flowDepth(text)
  if (flow.depth > MAX_CONFIG_DEPTH) {
    throw tooDeep(text.slice(0, flow.offset).split('\n').length)
  }
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true })
  if (doc.errors.some((e) => /call stack/i.test(e.message))) {
    // The parser recursed too deep on nesting the scan above did not see: say what it was.
    throw tooDeep(undefined)
  }
  const problems: ConfigProblem[] = doc.errors.map((e) => ({
    line: e.pos[0] === undefined ? undefined : lines.linePos(e.pos[0]).line,
    key: '',
    message: `invalid YAML: ${yamlMessage(e.message)}`,
  }))
  if (problems.length > 0) {
    throw new ConfigError(file, problems, {
      hint: 'fix the YAML syntax (indentation uses spaces, one key per line)',
    })
  }
  const deep = deepestNode(doc.contents as Node | null)
  if (deep.depth > MAX_CONFIG_DEPTH) {
    throw tooDeep(position(deep.node, lines))
  }
  return { doc, lines }
}

/** The deepest collection under `root`, and its depth (walked without recursion). */
function deepestNode(root: Node | null): { depth: number; node: Node | null } {
  let deepest = { depth: 0, node: root }
  const stack: Array<{ node: unknown; depth: number }> = [{ node: root, depth: 0 }]
  for (let top = stack.pop(); top !== undefined; top = stack.pop()) {
    const { node, depth } = top
    if (!isMap(node) && !isSeq(node)) {
      continue
    }
    if (depth + 1 > deepest.depth) {
      deepest = { depth: depth + 1, node: node as Node }
    }
    if (deepest.depth > MAX_CONFIG_DEPTH) {
      break
    }
    for (const item of node.items) {
      if (isMap(node)) {
        const pair = item as { key: unknown; value: unknown }
        stack.push({ node: pair.key, depth: depth + 1 }, { node: pair.value, depth: depth + 1 })
      } else {
        stack.push({ node: item, depth: depth + 1 })
      }
    }
  }
  return deepest
}

function yamlMessage(message: string): string {
  const first = message.split('\n')[0] ?? message
  return first.replace(/ at line \d+, column \d+:?$/, '').trim()
}

/** Validates YAML text against a schema; every problem is reported with its line and key path. */
export function parseConfigText<S extends z.ZodType>(text: string, file: string, schema: S): z.output<S> {
  const { doc, lines } = parseYaml(text, file)
  let data: unknown
  try {
    data = doc.toJS({ maxAliasCount: 100 })
  } catch (err) {
    throw new ConfigError(file, [{ line: undefined, key: '', message: (err as Error).message }])
  }
  if (data === null || typeof data !== 'object' || Array.isArray(data)) {
    throw new ConfigError(file, [
      { line: 1, key: '', message: 'the config must be a mapping of keys, starting with `version: 1`' },
    ])
  }
  const version = (data as Record<string, unknown>).version
  if (typeof version === 'number' && version > CONFIG_VERSION) {
    const message = `version ${version} is newer than this peerup understands (${CONFIG_VERSION})`
    throw new ConfigVersionError(file, [{ line: lineOf(doc, lines, ['version']), key: 'version', message }], {
      hint: 'upgrade peerup to read this config',
    })
  }
  if (version === undefined) {
    throw new ConfigError(file, [{ line: 1, key: 'version', message: 'missing' }], {
      hint: `add \`version: ${CONFIG_VERSION}\` as the first line`,
    })
  }
  const result = schema.safeParse(data, { reportInput: true })
  if (result.success) {
    return result.data
  }
  const problems = result.error.issues.flatMap((issue) => toProblems(issue, doc, lines))
  problems.sort((a, b) => (a.line ?? 0) - (b.line ?? 0))
  throw new ConfigError(file, problems, {
    hint: 'see `peerup config validate` and configs/*.example.yaml for every key',
  })
}

type Issue = z.core.$ZodIssue

function toProblems(issue: Issue, doc: Document, lines: LineCounter): ConfigProblem[] {
  const at = issue.path.map((p) => (typeof p === 'symbol' ? String(p) : p))
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((key) => ({
      line: lineOf(doc, lines, [...at, key]),
      key: dotted([...at, key]),
      message: 'unknown key',
    }))
  }
  return [{ line: lineOf(doc, lines, at), key: dotted(at), message: describeIssue(issue) }]
}

function describeIssue(issue: Issue): string {
  switch (issue.code) {
    case 'invalid_type':
      if (issue.input === undefined) {
        return `missing (a ${issue.expected} is required)`
      }
      return `expected a ${issue.expected}, got ${describeValue(issue.input)}`
    case 'invalid_value':
      return `must be ${issue.values.map((v) => JSON.stringify(v)).join(' or ')}, got ${describeValue(issue.input)}`
    case 'invalid_key':
      return issue.issues[0]?.message ?? issue.message
    case 'too_small':
      return `must be at least ${String(issue.minimum)}, got ${describeValue(issue.input)}`
    case 'too_big':
      return `must be at most ${String(issue.maximum)}, got ${describeValue(issue.input)}`
    case 'invalid_union':
      return `has the wrong type: ${describeValue(issue.input)}`
    default:
      return issue.message
  }
}

function describeValue(value: unknown): string {
  if (value === null) {
    return 'an empty value'
  }
  if (Array.isArray(value)) {
    return 'a list'
  }
  if (typeof value === 'object') {
    return 'a mapping'
  }
  if (typeof value === 'string') {
    return `the text ${JSON.stringify(value.length > 60 ? `${value.slice(0, 57)}...` : value)}`
  }
  return `${typeof value} ${String(value)}`
}

function dotted(pathParts: Array<string | number>): string {
  return pathParts.map((p, i) => (typeof p === 'number' ? `[${p}]` : i === 0 ? p : `.${p}`)).join('')
}

/**
 * The line of the node at `pathParts`, or of its nearest existing ancestor (a missing key is
 * reported where its section is). For a mapping key, the line of the key itself.
 */
export function lineOf(
  doc: Document,
  lines: LineCounter,
  pathParts: Array<string | number>,
): number | undefined {
  let node: unknown = doc.contents
  let line = position(node as Node | null, lines) ?? 1
  for (const part of pathParts) {
    if (isMap(node)) {
      const pair = node.items.find(
        (p) => (isScalar(p.key) ? String(p.key.value) : String(p.key)) === String(part),
      )
      if (pair === undefined) {
        break
      }
      line = position(pair.key as Node, lines) ?? line
      node = pair.value
    } else if (isSeq(node) && typeof part === 'number') {
      const item = node.items[part]
      if (item === undefined) {
        break
      }
      line = position(item as Node, lines) ?? line
      node = item
    } else {
      break
    }
  }
  return line
}

function position(node: Node | null | undefined, lines: LineCounter): number | undefined {
  const start = node?.range?.[0]
  return start === undefined ? undefined : lines.linePos(start).line
}

/**
 * Reads and validates a config file, refusing one that other users can write or that sits in a
 * directory they can write (everything the node keeps lives beside it: they could replace the
 * file, or plant an authorized_keys or an identity key before the node makes its own).
 */
export async function loadConfigFile<S extends z.ZodType>(
  file: string,
  schema: S,
): Promise<Loaded<z.output<S>>> {
  const abs = path.resolve(file)
  let text: string
  try {
    await checkFileMode(abs, 'trust')
    await checkFileMode(path.dirname(abs), 'trust')
    refuseOversize(abs, (await fs.stat(abs)).size)
    text = await fs.readFile(abs, 'utf8')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT') {
      throw new ConfigError(abs, [{ line: undefined, key: '', message: 'no such file' }], {
        hint: 'check the path, or create one with `peerup init`',
      })
    }
    if (code === 'EACCES') {
      throw new ConfigError(abs, [{ line: undefined, key: '', message: 'permission denied' }])
    }
    throw err
  }
  return { file: abs, dir: path.dirname(abs), config: parseConfigText(text, abs, schema) }
}

export function loadNodeConfig(file: string): Promise<Loaded<NodeConfig>> {
  return loadConfigFile(file, nodeConfigSchema)
}

export function loadRelayConfig(file: string): Promise<Loaded<RelayConfig>> {
  return loadConfigFile(file, relayConfigSchema)
}

/** Resolves a path from a config file (key_file, authorized_keys_file) against the config's directory. */
export function resolveIn(dir: string, file: string): string {
  return path.resolve(dir, file)
}
