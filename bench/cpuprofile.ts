/**
 * Summarises a V8 `.cpuprofile` (what `node --cpu-prof` writes): self time by function and by
 * area (a package, a part of Node, peerup's own sources, the garbage collector), idle left out.
 *
 * @packageDocumentation
 */

import * as fs from 'node:fs'
import * as path from 'node:path'
import type { ProfileRow } from './results.ts'

interface ProfileNode {
  id: number
  callFrame: { functionName: string; url: string; lineNumber: number }
  hitCount?: number
}

interface CpuProfile {
  nodes: ProfileNode[]
  startTime: number
  samples: number[]
  timeDeltas: number[]
}

/** A time window in the profile's clock: CLOCK_MONOTONIC in µs, `process.hrtime` / 1000 on Linux. */
export interface ProfileWindow {
  fromUs: number
  toUs: number
}

/** The area a frame belongs to: a package, a Node module group, peerup's sources, or V8 itself. */
export function areaOf(url: string, functionName: string): string {
  if (url === '') {
    if (functionName.startsWith('(')) {
      return functionName
    }
    return '(native)'
  }
  const nm = url.lastIndexOf('/node_modules/')
  if (nm >= 0) {
    const rest = url.slice(nm + '/node_modules/'.length).split('/')
    return rest[0]?.startsWith('@') === true ? `${rest[0]}/${rest[1]}` : (rest[0] ?? url)
  }
  if (url.startsWith('wasm://')) {
    return '(wasm)'
  }
  if (url.startsWith('node:')) {
    const parts = url.slice('node:'.length).split('/')
    return `node:${parts.slice(0, parts[0] === 'internal' ? 3 : 1).join('/')}`
  }
  const src = url.lastIndexOf('/src/')
  if (src >= 0) {
    const rest = url.slice(src + '/src/'.length).split('/')
    return `peerup src/${rest.length > 1 ? rest[0] : rest.join('/')}`
  }
  return path.basename(url)
}

/** Self time per function and per area of one profile, busiest first. */
export function summarizeProfile(
  file: string,
  window?: ProfileWindow,
  topN = 12,
): { totalMs: number; top: ProfileRow[]; byArea: ProfileRow[] } {
  const profile = JSON.parse(fs.readFileSync(file, 'utf8')) as CpuProfile
  const byId = new Map(profile.nodes.map((n) => [n.id, n]))
  const selfUs = new Map<number, number>()
  let at = profile.startTime
  for (let i = 0; i < profile.samples.length; i++) {
    at += profile.timeDeltas[i] ?? 0
    if (window !== undefined && (at < window.fromUs || at > window.toUs)) {
      continue
    }
    // timeDeltas[i] is the time since the previous sample: the time of sample i-1's frame.
    const dt = profile.timeDeltas[i + 1] ?? 0
    const id = profile.samples[i] as number
    selfUs.set(id, (selfUs.get(id) ?? 0) + Math.max(0, dt))
  }
  const fn = new Map<string, number>()
  const area = new Map<string, number>()
  let total = 0
  for (const [id, us] of selfUs) {
    const node = byId.get(id)
    if (node === undefined) continue
    const { functionName, url, lineNumber } = node.callFrame
    if (functionName === '(idle)') continue
    total += us
    const a = areaOf(url, functionName)
    area.set(a, (area.get(a) ?? 0) + us)
    const where = url === '' ? '' : ` ${shortUrl(url)}:${lineNumber + 1}`
    const key = `${functionName || '(anonymous)'}${where}`
    fn.set(key, (fn.get(key) ?? 0) + us)
  }
  const rows = (m: Map<string, number>): ProfileRow[] =>
    [...m]
      .sort((x, y) => y[1] - x[1])
      .slice(0, topN)
      .map(([name, us]) => ({ name, selfMs: us / 1000, share: total === 0 ? 0 : us / total }))
  return { totalMs: total / 1000, top: rows(fn), byArea: rows(area) }
}

function shortUrl(url: string): string {
  const nm = url.lastIndexOf('/node_modules/')
  if (nm >= 0) return url.slice(nm + '/node_modules/'.length)
  const src = url.lastIndexOf('/src/')
  if (src >= 0) return url.slice(src + 1)
  return url.replace(/^file:\/\//, '')
}
