/**
 * The shape of src/ that docs/architecture.md promises, checked on every run: each folder imports
 * only the layers below it, the CLI loads the network code only through src/cli/lazy.ts, no two
 * modules import each other (directly or round about), and no function is longer than 120 lines.
 */

import assert from 'node:assert/strict'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { describe, it } from 'node:test'
import ts from 'typescript'

const SRC = path.join(import.meta.dirname, '../../src')

/**
 * The layers, lowest first: a module may import its own folder and the layers below its own, never
 * a folder beside it or above it (docs/architecture.md, "Layers").
 */
export const LAYERS: readonly (readonly string[])[] = [
  ['errors.ts', 'version.ts', 'env.ts'],
  ['api'],
  ['log', 'util'],
  ['auth'],
  ['config'],
  ['metrics', 'native'],
  ['pipe'],
  ['client', 'proxy'],
  ['doctor'],
  ['p2p'],
  ['invite'],
  ['relay'],
  ['daemon'],
  ['demo'],
  ['cli'],
  ['main.ts'],
]

/** What the CLI may not import but through cli/lazy.ts: libp2p and everything built on it. */
const NETWORK = ['daemon', 'p2p', 'proxy', 'relay', 'invite', 'demo']

/** Modules of invite/ that load no network code: the CLI may import them directly. */
const LIGHT_INVITE = [
  'invite/code.ts',
  'invite/errors.ts',
  'invite/names.ts',
  'invite/sas.ts',
  'invite/short-code.ts',
  'invite/words.ts',
]

const LONGEST_FUNCTION_LINES = 120

function sourceFiles(dir = SRC): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const full = path.join(dir, e.name)
    return e.isDirectory()
      ? sourceFiles(full)
      : e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')
        ? [full]
        : []
  })
}

/** The folder (or top-level file) a module of src/ belongs to. */
function unitOf(file: string): string {
  return path.relative(SRC, file).split(path.sep)[0] as string
}

function layerOf(unit: string): number {
  const i = LAYERS.findIndex((l) => l.includes(unit))
  assert.ok(i >= 0, `${unit} is in no layer: add it to LAYERS and to docs/architecture.md`)
  return i
}

interface Import {
  from: string
  to: string
  /** `import('…')`, loaded when called. */
  dynamic: boolean
}

/** The imports of src/ by src/ that exist at run time (`import type` is erased and does not count). */
function imports(files: string[]): Import[] {
  const out: Import[] = []
  for (const file of files) {
    const source = ts.createSourceFile(file, fs.readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, true)
    const add = (specifier: string, dynamic: boolean): void => {
      const to = path.resolve(path.dirname(file), specifier)
      // A file of a package reached by path (src/p2p/punch.ts: a module @libp2p/tcp does not
      // export) is a dependency, not ours.
      if (specifier.startsWith('.') && !to.split(path.sep).includes('node_modules')) {
        out.push({ from: file, to, dynamic })
      }
    }
    const visit = (node: ts.Node): void => {
      if (
        (ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) &&
        node.moduleSpecifier !== undefined &&
        ts.isStringLiteral(node.moduleSpecifier)
      ) {
        const typeOnly = ts.isImportDeclaration(node)
          ? node.importClause?.isTypeOnly === true
          : node.isTypeOnly
        if (!typeOnly) {
          add(node.moduleSpecifier.text, false)
        }
      } else if (
        ts.isCallExpression(node) &&
        node.expression.kind === ts.SyntaxKind.ImportKeyword &&
        node.arguments[0] !== undefined &&
        ts.isStringLiteral(node.arguments[0])
      ) {
        add(node.arguments[0].text, true)
      }
      ts.forEachChild(node, visit)
    }
    visit(source)
  }
  return out
}

/** The cycles among static imports (Tarjan's strongly connected components larger than one). */
function cycles(edges: Import[]): string[][] {
  const next = new Map<string, string[]>()
  for (const e of edges.filter((x) => !x.dynamic)) {
    next.set(e.from, [...(next.get(e.from) ?? []), e.to])
  }
  const index = new Map<string, number>()
  const low = new Map<string, number>()
  const stack: string[] = []
  const onStack = new Set<string>()
  const found: string[][] = []
  let counter = 0
  const connect = (v: string): void => {
    index.set(v, counter)
    low.set(v, counter++)
    stack.push(v)
    onStack.add(v)
    for (const w of next.get(v) ?? []) {
      if (!index.has(w)) {
        connect(w)
        low.set(v, Math.min(low.get(v) as number, low.get(w) as number))
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v) as number, index.get(w) as number))
      }
    }
    if (low.get(v) === index.get(v)) {
      const component: string[] = []
      for (let w = stack.pop(); w !== undefined; w = stack.pop()) {
        onStack.delete(w)
        component.push(path.relative(SRC, w))
        if (w === v) {
          break
        }
      }
      if (component.length > 1) {
        found.push(component.sort())
      }
    }
  }
  for (const v of next.keys()) {
    if (!index.has(v)) {
      connect(v)
    }
  }
  return found
}

/** Every function, method and arrow function of src/ longer than the limit. */
function longFunctions(files: string[]): string[] {
  const out: string[] = []
  for (const file of files) {
    const source = ts.createSourceFile(file, fs.readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, true)
    const visit = (node: ts.Node): void => {
      if (ts.isFunctionLike(node) && 'body' in node && node.body !== undefined) {
        const first = source.getLineAndCharacterOfPosition(node.getStart()).line
        const last = source.getLineAndCharacterOfPosition(node.getEnd()).line
        if (last - first + 1 > LONGEST_FUNCTION_LINES) {
          out.push(`${path.relative(SRC, file)}:${first + 1} (${last - first + 1} lines)`)
        }
      }
      ts.forEachChild(node, visit)
    }
    visit(source)
  }
  return out
}

describe('the architecture of src/', () => {
  const files = sourceFiles()
  const edges = imports(files)

  it('every module imports only its own folder and the layers below it', () => {
    const wrong = edges
      .filter((e) => {
        const from = unitOf(e.from)
        const to = unitOf(e.to)
        return from !== to && layerOf(to) >= layerOf(from)
      })
      .map((e) => `${path.relative(SRC, e.from)} → ${path.relative(SRC, e.to)}`)
    assert.deepEqual(wrong, [])
  })

  it('api/ imports nothing else of ours', () => {
    const wrong = edges.filter((e) => unitOf(e.from) === 'api' && unitOf(e.to) !== 'api')
    assert.deepEqual(
      wrong.map((e) => path.relative(SRC, e.from)),
      [],
    )
  })

  it('the CLI loads the network code only through cli/lazy.ts, so `peerup status` never loads libp2p', () => {
    const wrong = edges
      .filter((e) => unitOf(e.from) === 'cli' && !e.dynamic && NETWORK.includes(unitOf(e.to)))
      .filter((e) => !LIGHT_INVITE.includes(path.relative(SRC, e.to)))
      .filter((e) => path.relative(SRC, e.from) !== path.join('cli', 'lazy.ts') || !e.dynamic)
      .map((e) => `${path.relative(SRC, e.from)} → ${path.relative(SRC, e.to)}`)
    assert.deepEqual(wrong, [])
  })

  it('has no import cycle', () => {
    assert.deepEqual(cycles(edges), [])
  })

  it(`has no function over ${LONGEST_FUNCTION_LINES} lines`, () => {
    assert.deepEqual(longFunctions(files), [])
  })

  it('finds what it checks (the checks are not vacuous)', () => {
    assert.ok(files.length > 100, `${files.length} files`)
    assert.ok(edges.filter((e) => !e.dynamic).length > 300)
    assert.ok(edges.some((e) => e.dynamic && path.relative(SRC, e.from) === path.join('cli', 'lazy.ts')))
    assert.deepEqual(
      cycles([
        { from: path.join(SRC, 'a.ts'), to: path.join(SRC, 'b.ts'), dynamic: false },
        { from: path.join(SRC, 'b.ts'), to: path.join(SRC, 'a.ts'), dynamic: false },
      ]),
      [['a.ts', 'b.ts']],
    )
  })
})
