/**
 * Parsers for the human units config files use: durations (`90s`, `2m`, `1h30m`) and byte sizes
 * (`128KiB`, `1GiB`, `0`).
 *
 * @packageDocumentation
 */

const DURATION_UNITS_MS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
}

const DURATION_PART = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/y

/**
 * Parses a Go-style duration (`500ms`, `45s`, `2m`, `1h30m`, `7d`; `0` alone means zero) into
 * milliseconds, or returns undefined when the text is not a duration.
 */
export function parseDurationMs(text: string): number | undefined {
  const s = text.trim()
  if (s === '0') {
    return 0
  }
  if (s === '') {
    return undefined
  }
  let total = 0
  DURATION_PART.lastIndex = 0
  while (DURATION_PART.lastIndex < s.length) {
    const m = DURATION_PART.exec(s)
    if (m === null) {
      return undefined
    }
    total += Number(m[1]) * (DURATION_UNITS_MS[m[2] as string] as number)
  }
  return Math.round(total)
}

/** Formats milliseconds as the shortest duration string that {@link parseDurationMs} reads back. */
export function formatDurationMs(ms: number): string {
  if (ms === 0) {
    return '0'
  }
  const parts: string[] = []
  let rest = ms
  // Largest unit first.
  for (const [unit, size] of Object.entries(DURATION_UNITS_MS).reverse()) {
    if (rest >= size) {
      const n = Math.floor(rest / size)
      parts.push(`${n}${unit}`)
      rest -= n * size
    }
  }
  return parts.join('')
}

const SIZE_UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  kb: 1000,
  mb: 1000 ** 2,
  gb: 1000 ** 3,
  tb: 1000 ** 4,
  kib: 1024,
  mib: 1024 ** 2,
  gib: 1024 ** 3,
  tib: 1024 ** 4,
}

/** Parses a byte size (`0`, `4096`, `128KiB`, `1.5GB`) into bytes, or undefined when it is not one. */
export function parseByteSize(text: string | number): number | undefined {
  if (typeof text === 'number') {
    return Number.isSafeInteger(text) && text >= 0 ? text : undefined
  }
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text)
  if (m === null) {
    return undefined
  }
  const unit = SIZE_UNITS[(m[2] as string).toLowerCase()]
  if (unit === undefined) {
    return undefined
  }
  const bytes = Math.round(Number(m[1]) * unit)
  return Number.isSafeInteger(bytes) ? bytes : undefined
}
