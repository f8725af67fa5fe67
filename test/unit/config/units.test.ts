import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { formatDurationMs, parseByteSize, parseDurationMs } from '../../../src/config/units.ts'

describe('durations', () => {
  const cases: Array<[string, number | undefined]> = [
    ['0', 0],
    ['500ms', 500],
    ['30s', 30_000],
    ['2m', 120_000],
    ['1h30m', 5_400_000],
    ['1.5h', 5_400_000],
    ['7d', 604_800_000],
    ['', undefined],
    ['10', undefined],
    ['2 m', undefined],
    ['m', undefined],
    ['1x', undefined],
    ['-1s', undefined],
  ]
  for (const [text, ms] of cases) {
    it(`parses ${JSON.stringify(text)}`, () => assert.equal(parseDurationMs(text), ms))
  }
  it('formats what it parses', () => {
    for (const ms of [0, 1, 999, 1000, 61_000, 120_000, 5_400_000, 90_061_001]) {
      assert.equal(parseDurationMs(formatDurationMs(ms)), ms)
    }
  })
})

describe('byte sizes', () => {
  const cases: Array<[string | number, number | undefined]> = [
    [0, 0],
    ['0', 0],
    ['4096', 4096],
    ['128KiB', 131_072],
    ['1MiB', 1_048_576],
    ['1.5GB', 1_500_000_000],
    ['1 GiB', 1_073_741_824],
    ['12XB', undefined],
    ['-1', undefined],
    [1.5, undefined],
  ]
  for (const [text, bytes] of cases) {
    it(`parses ${JSON.stringify(text)}`, () => assert.equal(parseByteSize(text), bytes))
  }
})
