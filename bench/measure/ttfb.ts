/**
 * Time to first byte of a new connection to sshd on b (its banner), through each way in, with and
 * without a daemon; whole `ssh … true` sessions; and `peerup ping`'s first reply with the daemon's
 * node against a node of its own (`--no-daemon`).
 *
 * The listener forms (`peerup proxy` already listening, the tunnels already up, the forwarder) are
 * timed from `connect()`; the command forms (`proxy --stdio`, what ssh's ProxyCommand runs; `peerup
 * ssh`; `ping`) from the spawn of the command, in the client host's namespace.
 *
 * @packageDocumentation
 */

import { type BenchContext, runClient } from '../context.ts'
import { type PeerupNode, PORTS } from '../lab-setup.ts'

/** A command that has not got there after this long is killed and counted as a failed run. */
const SPAWN_TIMEOUT_MS = 20_000

export async function measureTtfb(ctx: BenchContext): Promise<void> {
  const { bl, settings, results, log } = ctx
  const { a, a2 } = bl
  const relayIp = bl.lab.host('relay').ip
  const routerB = bl.lab.host('router-b').ip
  const connectRows: Array<{
    id: string
    label: string
    path: 'direct' | 'relayed'
    node: PeerupNode
    ip: string
    port: number
  }> = [
    {
      id: 'raw-direct',
      label: 'raw TCP (router-b port forward)',
      path: 'direct',
      node: a,
      ip: routerB,
      port: PORTS.dnatSsh,
    },
    {
      id: 'raw-relayed',
      label: 'raw TCP (forwarder on the relay host)',
      path: 'relayed',
      node: a2,
      ip: relayIp,
      port: PORTS.rawRelaySsh,
    },
    {
      id: 'ssh-relayed',
      label: 'ssh -R + ssh -L tunnel (up)',
      path: 'relayed',
      node: a2,
      ip: '127.0.0.1',
      port: PORTS.sshLRelaySsh,
    },
    {
      id: 'peerup-relayed-listener',
      label: 'peerup proxy listener (via daemon)',
      path: 'relayed',
      node: a2,
      ip: '127.0.0.1',
      port: PORTS.proxySshRelayed,
    },
    {
      id: 'peerup-relayed-listener-nodaemon',
      label: 'peerup proxy --no-daemon listener',
      path: 'relayed',
      node: a2,
      ip: '127.0.0.1',
      port: PORTS.proxySshRelayedNoDaemon,
    },
  ]
  for (const row of connectRows) {
    const r = await runClient<{ ms: number[] }>(bl, row.node.host, [
      'ttfb',
      row.ip,
      row.port,
      settings.ttfbRuns,
    ])
    results.add({
      id: `ttfb.${row.id}`,
      group: 'ttfb',
      label: row.label,
      path: row.path,
      unit: 'ms',
      values: r.ms,
      better: 'lower',
    })
  }

  const spawnRows: Array<{
    id: string
    group: string
    label: string
    path: 'direct' | 'relayed'
    node: PeerupNode
    until: string
    cmd: string
    args: string[]
    slow?: boolean
  }> = [
    {
      id: 'peerup-relayed-stdio',
      group: 'ttfb',
      label: 'peerup proxy --stdio (daemon running)',
      path: 'relayed',
      node: a2,
      until: 'first-byte',
      cmd: a2.exe,
      args: ['proxy', '--stdio', 'b', 'ssh', '--config', a2.config],
    },
    {
      id: 'peerup-relayed-stdio-nodaemon',
      group: 'ttfb',
      label: 'peerup proxy --stdio --no-daemon',
      path: 'relayed',
      node: a2,
      until: 'first-byte',
      cmd: a2.exe,
      args: ['proxy', '--stdio', '--no-daemon', 'b', 'ssh', '--config', a2.config],
      slow: true,
    },
    ...(bl.direct.ok
      ? [
          {
            id: 'peerup-direct-stdio',
            group: 'ttfb',
            label: 'peerup proxy --stdio (daemon running)',
            path: 'direct' as const,
            node: a,
            until: 'first-byte',
            cmd: a.exe,
            args: ['proxy', '--stdio', 'b', 'ssh', '--config', a.config],
          },
        ]
      : []),
    {
      id: 'session-peerup-ssh',
      group: 'ssh session',
      label: 'peerup ssh b true (daemon running)',
      path: 'relayed',
      node: a2,
      until: 'exit',
      cmd: a2.exe,
      args: ['ssh', 'b', '--config', a2.config, ...bl.sshdB.sshArgs('b'), 'true'],
    },
    {
      id: 'session-ssh-tunnel',
      group: 'ssh session',
      label: 'ssh true through ssh -R + ssh -L (up)',
      path: 'relayed',
      node: a2,
      until: 'exit',
      cmd: 'ssh',
      args: [...bl.sshdB.sshArgs('b', { port: PORTS.sshLRelaySsh }), '127.0.0.1', 'true'],
    },
    {
      id: 'session-ssh-raw',
      group: 'ssh session',
      label: 'ssh true through the raw forwarder',
      path: 'relayed',
      node: a2,
      until: 'exit',
      cmd: 'ssh',
      args: [...bl.sshdB.sshArgs('b', { port: PORTS.rawRelaySsh }), relayIp, 'true'],
    },
    {
      id: 'ping-relayed-daemon',
      group: 'ping',
      label: 'peerup ping -c 1: first reply (daemon running)',
      path: 'relayed',
      node: a2,
      until: '/seq=1 rtt=/',
      cmd: a2.exe,
      args: ['ping', 'b', '-c', '1', '--config', a2.config],
    },
    {
      id: 'ping-relayed-nodaemon',
      group: 'ping',
      label: 'peerup ping -c 1 --no-daemon: first reply',
      path: 'relayed',
      node: a2,
      until: '/seq=1 rtt=/',
      cmd: a2.exe,
      args: ['ping', 'b', '-c', '1', '--no-daemon', '--config', a2.config],
      slow: true,
    },
    ...(bl.direct.ok
      ? [
          {
            id: 'ping-direct-daemon',
            group: 'ping',
            label: 'peerup ping -c 1: first reply (daemon running)',
            path: 'direct' as const,
            node: a,
            until: '/seq=1 rtt=/',
            cmd: a.exe,
            args: ['ping', 'b', '-c', '1', '--config', a.config],
          },
        ]
      : []),
  ]
  for (const row of spawnRows) {
    const runs = row.slow === true ? settings.ttfbSlowRuns : settings.ttfbRuns
    try {
      const r = await runClient<{ ms: number[]; failures: string[] }>(
        bl,
        row.node.host,
        ['spawn', runs, row.until, SPAWN_TIMEOUT_MS, row.cmd, ...row.args],
        { env: row.node.env, timeoutMs: (SPAWN_TIMEOUT_MS + 5000) * runs },
      )
      const failed =
        r.failures.length === 0
          ? undefined
          : `${r.failures.length} of ${runs} runs failed: ${r.failures.join('; ')}`
      if (failed !== undefined) {
        results.note(`${row.group} ${row.label} [${row.path}]: ${failed}`)
      }
      if (r.ms.length === 0) {
        throw new Error(failed)
      }
      results.add({
        id: `${row.group === 'ttfb' ? 'ttfb' : row.group === 'ping' ? 'ping' : 'session'}.${row.id}`,
        group: row.group,
        label: row.label,
        path: row.path,
        unit: 'ms',
        values: r.ms,
        better: 'lower',
        ...(failed === undefined ? {} : { note: `${r.failures.length} of ${runs} runs failed (see notes)` }),
      })
    } catch (err) {
      results.fail(`${row.group} ${row.label}`, err)
    }
    log(`ttfb: ${row.id} done`)
  }
}
