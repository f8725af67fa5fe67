/**
 * What a benchmark run found: figures (a median over several runs, with min and max) and checks
 * against the targets (bench/targets.ts), each printed as soon as it is known.
 *
 * @packageDocumentation
 */

/** Median of a non-empty list. */
export function median(values: readonly number[]): number {
  const s = [...values].sort((x, y) => x - y)
  const mid = Math.floor(s.length / 2)
  return s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2
}

/** The `p`-th percentile (0..100), nearest rank. */
export function percentile(values: readonly number[], p: number): number {
  const s = [...values].sort((x, y) => x - y)
  const rank = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))
  return s[rank] as number
}

/** One measured quantity. */
export interface Figure {
  /** `<group>.<path id>[.<what>]`, stable across runs. */
  id: string
  group: string
  label: string
  /** `direct`, `relayed`, or a free word for figures that are on no path. */
  path: string
  unit: string
  values: number[]
  median: number
  min: number
  max: number
  /** Figures higher is better for (throughput) or lower (latency, memory, time). */
  better: 'higher' | 'lower'
  note?: string
}

/** A target and how this run did. */
export interface Check {
  what: string
  target: string
  measured: string
  /** Undefined when it could not be measured. */
  met: boolean | undefined
  /** By how much it is missed (or passed), in words. */
  margin: string
}

/** What the machine and the run were. */
export interface RunInfo {
  startedAt: string
  finishedAt?: string
  durationS?: number
  quick: boolean
  argv: string[]
  machine: Record<string, string>
  peerup: string
  settings: Record<string, string | number>
  notes: string[]
}

/** The figures and checks of one run, printed as they come. */
export class Results {
  readonly figures: Figure[] = []
  readonly checks: Check[] = []
  readonly profiles: Array<{
    process: string
    scenario: string
    totalMs: number
    top: ProfileRow[]
    byArea: ProfileRow[]
  }> = []
  readonly info: RunInfo
  readonly failures: string[] = []
  readonly #print: (line: string) => void

  constructor(info: RunInfo, print: (line: string) => void) {
    this.info = info
    this.#print = print
  }

  /** Adds a figure from its per-run values and prints it. */
  add(f: Omit<Figure, 'median' | 'min' | 'max'>): Figure {
    if (f.values.length === 0) {
      throw new Error(`figure ${f.id} has no values`)
    }
    const fig: Figure = {
      ...f,
      median: median(f.values),
      min: Math.min(...f.values),
      max: Math.max(...f.values),
    }
    this.figures.push(fig)
    this.#print(
      `  ${fig.group.padEnd(11)} ${`${fig.label} [${fig.path}]`.padEnd(58)} ${fmt(fig.median).padStart(9)} ${fig.unit.padEnd(5)} (min ${fmt(fig.min)}, max ${fmt(fig.max)}; n=${fig.values.length})${fig.note === undefined ? '' : ` — ${fig.note}`}`,
    )
    return fig
  }

  get(id: string): Figure | undefined {
    return this.figures.find((f) => f.id === id)
  }

  check(c: Check): void {
    this.checks.push(c)
    const mark = c.met === undefined ? 'n/a ' : c.met ? 'MET ' : 'MISS'
    this.#print(`  [${mark}] ${c.what}: ${c.measured} (target ${c.target}; ${c.margin})`)
  }

  fail(what: string, err: unknown): void {
    const msg = `${what}: ${(err as Error).message ?? String(err)}`
    this.failures.push(msg)
    this.#print(`  FAILED ${msg}`)
  }

  note(text: string): void {
    this.info.notes.push(text)
    this.#print(`  note: ${text}`)
  }
}

/** One row of a profile summary. */
export interface ProfileRow {
  name: string
  selfMs: number
  share: number
}

/** A number with a precision that suits its size. */
export function fmt(x: number): string {
  if (!Number.isFinite(x)) {
    return String(x)
  }
  const a = Math.abs(x)
  if (a >= 1000) {
    return x.toFixed(0)
  }
  if (a >= 100) {
    return x.toFixed(1)
  }
  if (a >= 10) {
    return x.toFixed(2)
  }
  return x.toFixed(3)
}
