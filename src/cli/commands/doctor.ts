/**
 * `peerup doctor [--fix] [--json]`: checks this node and says, for each thing, ok / warn / fail,
 * why, and what to do (docs/cli.md, "doctor"). Exits 1 when any check fails.
 *
 * @packageDocumentation
 */

import { listNetworks } from '../../config/networks.ts'
import type { Check, DoctorReport } from '../../doctor/checks.ts'
import { runDoctor } from '../../doctor/run.ts'
import { ExitStatus } from '../../errors.ts'
import type { CliContext, GlobalOptions } from '../context.ts'
import { daemonClient, mainConfigFile, nodeConfigFile } from '../load.ts'
import type { CliCommand } from '../options.ts'
import { emit } from '../output.ts'

/** The status as a word that reads without colour: failures and warnings in capitals. */
const LABEL: Record<Check['status'], string> = { ok: 'ok', warn: 'WARN', fail: 'FAIL' }

/** The report as text: a tally, then one line per check with its fix (and what `--fix` did) under it. */
export function doctorText(report: DoctorReport): string {
  const count = (s: Check['status']): number => report.checks.filter((c) => c.status === s).length
  const width = Math.max(...report.checks.map((c) => c.id.length))
  const lines = [`${count('fail')} failed, ${count('warn')} warnings, ${count('ok')} ok`]
  for (const c of report.checks) {
    lines.push(`${LABEL[c.status].padEnd(4)}  ${c.id.padEnd(width)}  ${c.summary}`)
    const indent = ' '.repeat(width + 8)
    if (c.fixed !== undefined) {
      lines.push(`${indent}fixed: ${c.fixed}`)
    }
    if (c.fix !== undefined && c.status !== 'ok') {
      lines.push(`${indent}fix: ${c.fix}`)
    }
  }
  return lines.join('\n')
}

export function registerDoctor(program: CliCommand, ctx: CliContext): void {
  program
    .command('doctor')
    .description(
      'check this node: relays, reservation, NAT, direct paths, clock, files, config, daemon, socket, native addon',
    )
    .option('--fix', 'repair what is safe: file modes, a stale socket file')
    .run(async (opts: GlobalOptions & { fix?: boolean }) => {
      const configFile = await nodeConfigFile(ctx, opts)
      const check = (file: string): Promise<DoctorReport> =>
        runDoctor({
          configFile: file,
          fix: opts.fix === true,
          client: daemonClient(ctx, file),
          signal: ctx.signal,
        })
      const report: DoctorReport & { networks?: Array<{ name: string; report: DoctorReport }> } =
        await check(configFile)
      // Several networks and none named: each one is checked, the selected one first.
      const layout =
        opts.network === undefined ? await listNetworks(await mainConfigFile(ctx, opts)).catch(() => []) : []
      const others = layout.filter((n) => n.configFile !== configFile)
      const first = layout.find((n) => n.configFile === configFile)?.name
      if (others.length > 0) {
        report.networks = []
        for (const n of others) {
          report.networks.push({ name: n.name, report: await check(n.configFile) })
        }
      }
      emit(ctx, opts, report, (r) =>
        [
          ...(r.networks === undefined ? [] : [`network ${first ?? '?'}:`]),
          doctorText(r),
          ...(r.networks ?? []).flatMap((n) => [
            '',
            `network ${n.name} (--network ${n.name}):`,
            doctorText(n.report),
          ]),
        ].join('\n'),
      )
      const all = [report, ...(report.networks ?? []).map((n) => n.report)]
      if (all.some((r) => r.checks.some((c) => c.status === 'fail'))) {
        throw new ExitStatus(1)
      }
    })
}
