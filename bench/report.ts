/**
 * Renders a run's results: markdown tables (targets, every figure beside its baselines, profiles,
 * run details) and an SVG chart of throughput and latency against the baselines, written by hand
 * so the chart needs no dependency and diffs as text.
 *
 * @packageDocumentation
 */

import { type Figure, fmt, type Results } from './results.ts'

const PATH_ORDER = ['direct', 'relayed']

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/\|/g, '\\|')
}

function range(f: Figure): string {
  return f.values.length === 1 ? '' : `${fmt(f.min)}–${fmt(f.max)}`
}

/** The markdown of a run's results. */
export function renderMarkdown(results: Results): string {
  const out: string[] = []
  const { info } = results
  out.push(
    `Run of ${info.startedAt}${info.durationS === undefined ? '' : ` (${(info.durationS / 60).toFixed(1)} min)`}: \`${info.argv.join(' ')}\`${info.quick ? ' — **quick mode: smaller sizes and ceilings, not for the record**' : ''}.`,
    '',
  )

  out.push('### Targets', '', '| what | target | measured | result | margin |', '|---|---|---|---|---|')
  for (const c of results.checks) {
    const mark = c.met === undefined ? 'n/a' : c.met ? '**met**' : '**missed**'
    out.push(`| ${esc(c.what)} | ${esc(c.target)} | ${esc(c.measured)} | ${mark} | ${esc(c.margin)} |`)
  }
  out.push('')

  const groupTable = (
    title: string,
    ids: (f: Figure) => boolean,
    extra?: { head: string; cell: (f: Figure) => string },
    byPath = true,
  ) => {
    const figs = results.figures.filter(ids)
    if (figs.length === 0) return
    const extraCols = extra === undefined ? 0 : extra.head.split('|').length
    out.push(
      `### ${title}`,
      '',
      `| path | way | median | min–max | runs |${extra === undefined ? '' : ` ${extra.head} |`} notes |`,
      `|---|---|---|---|---|${'---|'.repeat(extraCols)}---|`,
    )
    const sorted = byPath ? [...figs].sort((x, y) => order(x.path) - order(y.path)) : figs
    for (const f of sorted) {
      out.push(
        `| ${f.path} | ${esc(f.label)} | ${fmt(f.median)} ${f.unit} | ${range(f)} | ${f.values.length} |${extra === undefined ? '' : ` ${extra.cell(f)} |`} ${esc(f.note ?? '')} |`,
      )
    }
    out.push('')
  }
  const baselineOf = (f: Figure, kind: 'ssh' | 'raw'): Figure | undefined => {
    const [group, , which] = f.id.split('.')
    const id = `${group}.${kind}-${f.path}${which === undefined ? '' : `.${which}`}`
    return results.get(id)
  }
  groupTable('Throughput, one TCP stream', (f) => f.group === 'throughput', {
    head: '× ssh | × raw',
    cell: (f) => {
      const s = baselineOf(f, 'ssh')
      const r = baselineOf(f, 'raw')
      return `${s === undefined ? '' : `${(f.median / s.median).toFixed(2)}×`} | ${r === undefined ? '' : `${(f.median / r.median).toFixed(3)}×`}`
    },
  })
  groupTable(
    'CPU per MB moved, summed over every process in the lab (client, server, daemons, relay, ssh, sshd)',
    (f) => f.group === 'cpu per MB',
    {
      head: '× ssh',
      cell: (f) => {
        const s = baselineOf(f, 'ssh')
        return s === undefined ? '' : `${(f.median / s.median).toFixed(f.median < s.median ? 2 : 1)}×`
      },
    },
  )
  groupTable(
    'CPU per MB on the relay host alone (the peerup relay; sshd for the ssh tunnels; the raw forwarder)',
    (f) => f.group === 'relay host cpu per MB',
    {
      head: '× sshd',
      cell: (f) => {
        const s = baselineOf(f, 'ssh')
        return s === undefined ? '' : `${(f.median / s.median).toFixed(2)}×`
      },
    },
  )
  const p50s = results.figures
    .filter((f) => f.group === 'latency p50')
    .sort((x, y) => order(x.path) - order(y.path))
  if (p50s.length > 0) {
    out.push(
      '### Request/response latency, 64-byte messages, one connection',
      '',
      '| path | way | p50 median | p50 min–max | p99 median | p99 min–max | runs | p50 above raw |',
      '|---|---|---|---|---|---|---|---|',
    )
    for (const f of p50s) {
      const q = results.get(f.id.replace(/\.p50$/, '.p99'))
      const r = baselineOf(f, 'raw')
      out.push(
        `| ${f.path} | ${esc(f.label)} | ${fmt(f.median)} ms | ${range(f)} | ${q === undefined ? '' : `${fmt(q.median)} ms`} | ${q === undefined ? '' : range(q)} | ${f.values.length} | ${r === undefined || r === f ? '' : `+${fmt(f.median - r.median)} ms`} |`,
      )
    }
    out.push('')
  }
  groupTable(
    'The SOCKS5 gateway against `peerup proxy` on the same path (pairs, order alternating)',
    (f) => f.group === 'gateway',
  )
  groupTable('Time to first byte (SSH banner) of a new connection', (f) => f.group === 'ttfb')
  groupTable(
    'Whole ssh sessions (`ssh … true`: connect, key exchange, log in, run, exit)',
    (f) => f.group === 'ssh session',
  )
  groupTable('`peerup ping`: time to the first reply', (f) => f.group === 'ping')
  groupTable(
    'Time to a direct path (`peerup ping --until-direct --no-daemon` on a: first dial → DIRECT)',
    (f) => f.group === 'direct',
    undefined,
    false,
  )
  groupTable(
    'Resumable sessions: what they cost, how fast data flows again, how fast they move',
    (f) => f.group === 'sessions',
    undefined,
    false,
  )
  groupTable('Memory (RSS)', (f) => f.group === 'memory', undefined, false)
  groupTable('Command wall time', (f) => f.group === 'cli', undefined, false)
  groupTable(
    'Relay capacity (relay2, limits raised in its config)',
    (f) => f.group === 'capacity',
    undefined,
    false,
  )

  if (results.profiles.length > 0) {
    out.push('### CPU profiles (self time, idle excluded)', '')
    for (const p of results.profiles) {
      out.push(
        `**${p.scenario} / ${p.process}** — ${(p.totalMs / 1000).toFixed(1)} s busy. By area: ${p.byArea
          .slice(0, 8)
          .map((r) => `${esc(r.name)} ${(r.share * 100).toFixed(1)} %`)
          .join(', ')}.`,
        '',
        '| function | self ms | share |',
        '|---|---|---|',
        ...p.top
          .slice(0, 8)
          .map((r) => `| \`${esc(r.name)}\` | ${r.selfMs.toFixed(0)} | ${(r.share * 100).toFixed(1)} % |`),
        '',
      )
    }
  }

  if (info.notes.length > 0 || results.failures.length > 0) {
    out.push('### Notes from the run', '')
    for (const n of info.notes) out.push(`- ${esc(n)}`)
    for (const f of results.failures) out.push(`- FAILED: ${esc(f)}`)
    out.push('')
  }

  out.push('### Machine and settings', '', '| | |', '|---|---|')
  for (const [k, v] of Object.entries(info.machine)) out.push(`| ${esc(k)} | ${esc(v)} |`)
  out.push(`| peerup | ${esc(info.peerup)} |`)
  for (const [k, v] of Object.entries(info.settings)) out.push(`| ${esc(k)} | ${esc(String(v))} |`)
  out.push('')
  return out.join('\n')
}

function order(p: string): number {
  const i = PATH_ORDER.indexOf(p)
  return i < 0 ? PATH_ORDER.length : i
}

const COLORS: Record<string, string> = { peerup: '#2b6cb0', ssh: '#c05621', raw: '#718096' }

function kindOf(f: Figure): string {
  const way = f.id.split('.')[1] ?? ''
  return way.split('-')[0] ?? ''
}

/** The SVG chart: throughput (log scale) and p50/p99 latency per way, direct and relayed. */
export function renderSvg(results: Results): string {
  const tput = results.figures
    .filter((f) => f.group === 'throughput')
    .sort((x, y) => order(x.path) - order(y.path))
  const lat = results.figures
    .filter((f) => f.group === 'latency p50')
    .sort((x, y) => order(x.path) - order(y.path))
  const rowH = 22
  const labelW = 330
  const barW = 360
  const width = labelW + barW + 120
  const parts: string[] = []
  // Grid lines go under the bars.
  const grid: string[] = []
  let y = 30
  const title = (text: string) => {
    parts.push(`<text x="10" y="${y}" font-size="15" font-weight="bold">${esc(text)}</text>`)
    y += 14
  }
  const axis = (ticks: number[], pos: (v: number) => number, unit: string, top: number, bottom: number) => {
    for (const t of ticks) {
      const x = labelW + pos(t)
      grid.push(`<line x1="${x}" y1="${top}" x2="${x}" y2="${bottom}" stroke="#e2e8f0"/>`)
      grid.push(
        `<text x="${x}" y="${bottom + 14}" font-size="10" text-anchor="middle" fill="#4a5568">${t}${unit}</text>`,
      )
    }
  }

  // Throughput, log scale: raw TCP is an order of magnitude above the rest.
  title('Throughput of one TCP stream, MB/s (log scale; bar = median, whisker = min–max)')
  const tMax = Math.max(10, ...tput.map((f) => f.max))
  const decades = Math.ceil(Math.log10(tMax))
  const tPos = (v: number) => (Math.log10(Math.max(v, 1)) / decades) * barW
  const tTop = y
  for (const f of tput) {
    y += rowH
    const w = tPos(f.median)
    parts.push(
      `<text x="${labelW - 8}" y="${y - 6}" font-size="11" text-anchor="end">${esc(`${f.path}: ${f.label}`)}</text>`,
    )
    parts.push(
      `<rect x="${labelW}" y="${y - rowH + 5}" width="${w.toFixed(1)}" height="${rowH - 8}" fill="${COLORS[kindOf(f)] ?? '#a0aec0'}"/>`,
    )
    parts.push(
      `<line x1="${(labelW + tPos(f.min)).toFixed(1)}" y1="${y - rowH / 2 + 1}" x2="${(labelW + tPos(f.max)).toFixed(1)}" y2="${y - rowH / 2 + 1}" stroke="#1a202c"/>`,
    )
    parts.push(
      `<text x="${(labelW + Math.max(w, tPos(f.max)) + 6).toFixed(1)}" y="${y - 6}" font-size="11">${fmt(f.median)}</text>`,
    )
  }
  axis(
    Array.from({ length: decades + 1 }, (_, i) => 10 ** i),
    tPos,
    '',
    tTop + 4,
    y + 2,
  )
  y += 40

  title('Request/response latency, 64 B, ms (bar = median p50, tick = median p99)')
  const p99 = (f: Figure) => results.get(f.id.replace(/\.p50$/, '.p99'))
  const lMax = Math.max(0.5, ...lat.map((f) => p99(f)?.median ?? f.median))
  const step = lMax > 8 ? 2 : lMax > 4 ? 1 : lMax > 2 ? 0.5 : 0.25
  const lScale = Math.ceil(lMax / step) * step
  const lPos = (v: number) => (v / lScale) * barW
  const lTop = y
  for (const f of lat) {
    y += rowH
    const w = lPos(f.median)
    parts.push(
      `<text x="${labelW - 8}" y="${y - 6}" font-size="11" text-anchor="end">${esc(`${f.path}: ${f.label}`)}</text>`,
    )
    parts.push(
      `<rect x="${labelW}" y="${y - rowH + 5}" width="${w.toFixed(1)}" height="${rowH - 8}" fill="${COLORS[kindOf(f)] ?? '#a0aec0'}"/>`,
    )
    const q = p99(f)
    if (q !== undefined) {
      const x = labelW + lPos(q.median)
      parts.push(
        `<line x1="${x.toFixed(1)}" y1="${y - rowH + 4}" x2="${x.toFixed(1)}" y2="${y - 2}" stroke="#1a202c" stroke-width="2"/>`,
      )
    }
    parts.push(
      `<text x="${(labelW + Math.max(w, q === undefined ? 0 : lPos(q.median)) + 6).toFixed(1)}" y="${y - 6}" font-size="11">${fmt(f.median)}${q === undefined ? '' : ` / ${fmt(q.median)}`}</text>`,
    )
  }
  axis(
    Array.from({ length: Math.round(lScale / step) + 1 }, (_, i) => Number((i * step).toFixed(2))),
    lPos,
    '',
    lTop + 4,
    y + 2,
  )
  y += 36
  let lx = 10
  for (const [k, c] of Object.entries(COLORS)) {
    parts.push(`<rect x="${lx}" y="${y - 10}" width="12" height="12" fill="${c}"/>`)
    parts.push(
      `<text x="${lx + 16}" y="${y}" font-size="11">${k === 'raw' ? 'raw TCP' : k === 'ssh' ? 'OpenSSH' : 'peerup'}</text>`,
    )
    lx += 100
  }
  parts.push(
    `<text x="${width - 10}" y="${y}" font-size="10" text-anchor="end" fill="#4a5568">${esc(results.info.startedAt)}${results.info.quick ? ' (quick)' : ''}</text>`,
  )
  y += 14
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${y}" viewBox="0 0 ${width} ${y}" font-family="sans-serif" role="img" aria-labelledby="title">`,
    '<title id="title">peerup benchmarks: throughput and latency against raw TCP and OpenSSH</title>',
    `<rect width="100%" height="100%" fill="white"/>`,
    ...grid,
    ...parts,
    '</svg>',
    '',
  ].join('\n')
}
