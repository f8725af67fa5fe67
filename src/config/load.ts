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

/** Parses YAML text into a document, turning syntax errors into a {@link ConfigError} with a line. */
export function parseYaml(text: string, file: string): { doc: Document; lines: LineCounter } {
  const lines = new LineCounter()
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true })
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
  return { doc, lines }
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
    throw new ConfigVersionError(
      file,
      [
        {
          line: lineOf(doc, lines, ['version']),
          key: 'version',
          message: `version ${version} is newer than this peerup understands (${CONFIG_VERSION})`,
        },
      ],
      { hint: 'upgrade peerup to read this config' },
    )
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

/** Reads and validates a config file, refusing one that other users can write. */
export async function loadConfigFile<S extends z.ZodType>(
  file: string,
  schema: S,
): Promise<Loaded<z.output<S>>> {
  const abs = path.resolve(file)
  let text: string
  try {
    await checkFileMode(abs, 'trust')
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

/** Loads a node config (`config.yaml`). */
export function loadNodeConfig(file: string): Promise<Loaded<NodeConfig>> {
  return loadConfigFile(file, nodeConfigSchema)
}

/** Loads a relay config (`relay-server.yaml`). */
export function loadRelayConfig(file: string): Promise<Loaded<RelayConfig>> {
  return loadConfigFile(file, relayConfigSchema)
}

/** Resolves a path from a config file (key_file, authorized_keys_file) against the config's directory. */
export function resolveIn(dir: string, file: string): string {
  return path.resolve(dir, file)
}
