/** configs/grafana-dashboard.json asks only for metrics that peerup (or Node's defaults) exports. */

import assert from 'node:assert/strict'
import * as fs from 'node:fs/promises'
import { it } from 'node:test'
import { createNodeMetrics, createRelayMetrics } from '../../../src/metrics/index.ts'

it('every metric the dashboard queries exists in the node or relay registry', async () => {
  const dash = JSON.parse(
    await fs.readFile(new URL('../../../configs/grafana-dashboard.json', import.meta.url), 'utf8'),
  )
  const known = new Set<string>()
  for (const registry of [createNodeMetrics().registry, createRelayMetrics().registry]) {
    for (const m of await registry.getMetricsAsJSON()) {
      known.add(m.name)
    }
  }
  const exprs: string[] = dash.panels.flatMap((p: { targets: Array<{ expr: string }> }) =>
    p.targets.map((t) => t.expr),
  )
  assert.ok(exprs.length >= 10)
  for (const expr of exprs) {
    for (const name of expr.match(/\b(peerup_[a-z_]+)/g) ?? []) {
      const base = name.replace(/_(sum|count)$/, (m) => (known.has(name) ? '' : m))
      assert.ok(known.has(name) || known.has(base), `${name} (in ${expr}) is not exported`)
    }
  }
})
