/**
 * Wall time of short commands, from spawn to exit on the client host: `peerup daemon status`
 * (a request to the running daemon), `peerup version`, and `ssh -V` for scale.
 *
 * @packageDocumentation
 */

import { type BenchContext, runClient } from '../context.ts'

export async function measureCli(ctx: BenchContext): Promise<void> {
  const { bl, settings, results } = ctx
  const n = bl.a2
  const rows: Array<{ id: string; label: string; cmd: string; args: string[] }> = [
    {
      id: 'daemon-status',
      label: 'peerup daemon status',
      cmd: n.exe,
      args: ['daemon', 'status', '--config', n.config],
    },
    {
      id: 'daemon-status-json',
      label: 'peerup daemon status --json',
      cmd: n.exe,
      args: ['daemon', 'status', '--json', '--config', n.config],
    },
    { id: 'version', label: 'peerup version', cmd: n.exe, args: ['version'] },
    { id: 'ssh-version', label: 'ssh -V (for scale)', cmd: 'ssh', args: ['-V'] },
  ]
  for (const row of rows) {
    // One untimed start first: the page cache, not the command, would otherwise make run 1 slow.
    await runClient(bl, n.host, ['spawn', 1, 'exit', 10_000, row.cmd, ...row.args], { env: n.env })
    const r = await runClient<{ ms: number[]; codes: number[]; failures: string[] }>(
      bl,
      n.host,
      ['spawn', settings.cliRuns, 'exit', 10_000, row.cmd, ...row.args],
      { env: n.env },
    )
    if (r.failures.length > 0) {
      throw new Error(`${row.label}: ${r.failures.join('; ')}`)
    }
    results.add({
      id: `cli.${row.id}`,
      group: 'cli',
      label: row.label,
      path: 'local',
      unit: 'ms',
      values: r.ms,
      better: 'lower',
    })
  }
}
