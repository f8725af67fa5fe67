/**
 * `peerup daemon`: run the agent in the foreground (systemd runs this), and talk to a running one:
 * `status|stop|peers|paths|services|proxies|ping|connect|disconnect`.
 *
 * @packageDocumentation
 */

import type { Command } from 'commander'
import type {
  ApiPath,
  PathState,
  PeerState,
  ProxyState,
  ServiceState,
  StatusResponse,
} from '../../api/index.ts'
import { LocalClient } from '../../client/local.ts'
import { parseDurationMs } from '../../config/units.ts'
import { UsageError } from '../../errors.ts'
import { configureLogging, createLogger, type LogLevel } from '../../log/index.ts'
import { type CliContext, type GlobalOptions, graceful } from '../context.ts'
import { loadDaemon } from '../lazy.ts'
import { loadNode, nodeConfigFile } from '../load.ts'
import { emit, note, table } from '../output.ts'
import { globalOpts, withCommonOptions } from '../program.ts'

/** A client of the daemon serving this invocation's config. */
async function client(ctx: CliContext, opts: GlobalOptions): Promise<LocalClient> {
  return new LocalClient({ configFile: await nodeConfigFile(ctx, opts), warn: (m) => note(ctx, m) })
}

/** `DIRECT (tcp)`, `RELAYED via …`: the same words as `ping`, without loading libp2p. */
export function pathText(path: ApiPath | undefined, names: Record<string, string> = {}): string {
  if (path === undefined) {
    return 'not connected'
  }
  if (path.type === 'DIRECT') {
    return `DIRECT (${path.transport})`
  }
  const relay = path.relay ?? 'unknown relay'
  const name = Object.entries(names).find(([, id]) => id === relay)?.[0]
  return `RELAYED via ${name ?? (relay.length <= 16 ? relay : `${relay.slice(0, 8)}…${relay.slice(-6)}`)}${path.limited ? ' (limited)' : ''}`
}

/** How long ago an RFC 3339 time was, briefly: `42s`, `5m`, `3h`, `2d`. */
export function ago(time: string, now = Date.now()): string {
  const s = Math.max(0, Math.round((now - Date.parse(time)) / 1000))
  return s < 60
    ? `${s}s`
    : s < 3600
      ? `${Math.floor(s / 60)}m`
      : s < 86400
        ? `${Math.floor(s / 3600)}h`
        : `${Math.floor(s / 86400)}d`
}

function renderStatus(s: StatusResponse): string {
  return [
    `daemon    running, pid ${s.pid}, peerup ${s.version}, up ${ago(s.startedAt)}`,
    `peer id   ${s.peerId}`,
    `network   ${s.network === '' ? '(default)' : s.network}`,
    `config    ${s.configFile}`,
    '',
    `relays (${s.relays.length})`,
    ...s.relays.map(
      (r) =>
        `  ${r.peerId}  ${r.reserved ? 'reservation held' : r.connected ? 'connected, no reservation' : `unreachable${r.lastError === undefined ? '' : `: ${r.lastError}`}`} (since ${ago(r.since)})`,
    ),
    '',
    `services (${s.services.length})`,
    ...s.services.map(
      (v) =>
        `  ${v.name.padEnd(12)} ${v.localAddress}  ${v.activeConnections} active${v.source === 'runtime' ? ' (exposed at run time)' : ''}`,
    ),
    '',
    `peers connected ${s.connectedPeers}, proxies ${s.proxies}`,
  ].join('\n')
}

function renderPeers(peers: PeerState[]): string {
  if (peers.length === 0) {
    return 'no peers connected'
  }
  return table([
    ['PEER', 'NAME', 'PATH', 'SINCE', 'AGENT', 'AUTHORIZED'],
    ...peers.map((p) => [
      p.peerId,
      p.name ?? '-',
      pathText(p.path),
      ago(p.since),
      p.agent ?? '?',
      p.authorized ? 'yes' : 'no',
    ]),
  ])
}

function renderPaths(paths: PathState[]): string {
  if (paths.length === 0) {
    return 'no paths: no peer connected'
  }
  return table([
    ['PEER', 'NAME', 'PATH', 'SINCE', 'BEFORE', 'UPGRADE'],
    ...paths.map((p) => [
      p.peerId,
      p.name ?? '-',
      pathText(p.path),
      ago(p.since),
      p.previous === undefined ? '-' : pathText(p.previous),
      p.upgrade.state === 'none'
        ? '-'
        : `${p.upgrade.state}${p.upgrade.timeToDirectMs === undefined ? '' : ` in ${(p.upgrade.timeToDirectMs / 1000).toFixed(1)} s`}${p.upgrade.lastError === undefined ? '' : `: ${p.upgrade.lastError}`}`,
    ]),
  ])
}

function renderServices(services: ServiceState[]): string {
  if (services.length === 0) {
    return 'no services offered (`peerup service add <name> <host:port>`, then restart the daemon)'
  }
  return table([
    ['NAME', 'LOCAL', 'ALLOWED', 'ACTIVE', 'SOURCE'],
    ...services.map((s) => [
      s.name,
      s.localAddress,
      s.allowedPeers.length === 0 ? 'all authorized' : s.allowedPeers.join(','),
      String(s.activeConnections),
      s.source,
    ]),
  ])
}

function renderProxies(proxies: ProxyState[]): string {
  if (proxies.length === 0) {
    return 'no proxies (`peerup daemon connect --peer P --service S --listen PORT`)'
  }
  return table([
    ['ID', 'LISTEN', 'PEER', 'SERVICE', 'ACTIVE', 'TOTAL', 'IN', 'OUT'],
    ...proxies.map((p) => [
      p.id,
      p.listen,
      p.peer,
      p.service,
      String(p.activeConnections),
      String(p.totalConnections),
      String(p.bytesIn),
      String(p.bytesOut),
    ]),
  ])
}

/** Registers `daemon` and its subcommands. */
export function registerDaemon(program: Command, ctx: CliContext): void {
  const daemon = program.command('daemon').description('the long-running agent, and talking to it')
  withCommonOptions(
    daemon
      .command('start', { isDefault: true })
      .description('run the daemon in the foreground (what `peerup daemon` does)')
      .option('--log-level <level>', 'debug, info, warn, error (default: log.level in the config)'),
    { json: false },
  ).action(async (_flags: object, cmd: Command) => {
    const opts = globalOpts<{ logLevel?: string }>(cmd)
    const { file, config } = await loadNode(ctx, opts)
    configureLogging({
      level: (opts.logLevel as LogLevel | undefined) ?? config.log.level,
      format: ctx.stderr.isTTY === true ? 'text' : 'json',
    })
    const { runDaemon } = await loadDaemon()
    await graceful(ctx, () =>
      runDaemon({ configFile: file, log: createLogger('daemon'), signal: ctx.signal, env: ctx.env }),
    )
  })

  withCommonOptions(daemon.command('status').description('what the running daemon is doing')).action(
    async (_flags: object, cmd: Command) => {
      const opts = globalOpts(cmd)
      emit(ctx, opts, await (await client(ctx, opts)).status(), renderStatus)
    },
  )

  withCommonOptions(
    daemon.command('stop').description('stop the running daemon (in order, like SIGTERM)'),
  ).action(async (_flags: object, cmd: Command) => {
    const opts = globalOpts(cmd)
    const c = await client(ctx, opts)
    const status = await c.status()
    await c.shutdown()
    emit(ctx, opts, { stopping: true, pid: status.pid }, (r) => `daemon (pid ${r.pid}) is stopping`)
  })

  withCommonOptions(
    daemon
      .command('peers')
      .description('connected peers (peerup nodes and relays; --all for every libp2p peer)')
      .option('--all', 'every connected peer'),
  ).action(async (_flags: object, cmd: Command) => {
    const opts = globalOpts<{ all?: boolean }>(cmd)
    emit(ctx, opts, await (await client(ctx, opts)).peers(opts.all === true), renderPeers)
  })

  withCommonOptions(
    daemon
      .command('paths')
      .description('the path to each peer (DIRECT or RELAYED), since when, and upgrades'),
  ).action(async (_flags: object, cmd: Command) => {
    const opts = globalOpts(cmd)
    emit(ctx, opts, await (await client(ctx, opts)).paths(), renderPaths)
  })

  withCommonOptions(daemon.command('services').description('the services the daemon offers')).action(
    async (_flags: object, cmd: Command) => {
      const opts = globalOpts(cmd)
      emit(ctx, opts, await (await client(ctx, opts)).services(), renderServices)
    },
  )

  withCommonOptions(
    daemon.command('proxies').description('the proxy listeners the daemon runs (`daemon connect`)'),
  ).action(async (_flags: object, cmd: Command) => {
    const opts = globalOpts(cmd)
    emit(ctx, opts, await (await client(ctx, opts)).proxies(), renderProxies)
  })

  withCommonOptions(
    daemon
      .command('ping')
      .description('ping a peer through the daemon')
      .argument('<peer>', 'a name from names: or a peer id')
      .option('-c, --count <n>', 'number of pings', '4')
      .option('--interval <duration>', 'time between pings', '1s'),
  ).action(async (peer: string, _flags: object, cmd: Command) => {
    const opts = globalOpts<{ count: string; interval: string }>(cmd)
    const count = Number(opts.count)
    const intervalMs = parseDurationMs(opts.interval)
    if (!Number.isInteger(count) || count < 1 || count > 1000) {
      throw new UsageError(`invalid --count ${JSON.stringify(opts.count)}`, {
        hint: 'give a whole number from 1 to 1000',
      })
    }
    if (intervalMs === undefined) {
      throw new UsageError(`invalid --interval ${JSON.stringify(opts.interval)}`, {
        hint: 'write it like 500ms or 2s',
      })
    }
    const report = await (await client(ctx, opts)).ping({ peer, count, intervalMs }, ctx.signal)
    emit(ctx, opts, report, (r) =>
      [
        `PING ${r.peer}: ${pathText(r.path)}, connected in ${r.connectMs.toFixed(0)} ms (${r.via})`,
        ...r.replies.map((x) =>
          x.rttMs === undefined
            ? `seq=${x.seq} error: ${x.error}`
            : `seq=${x.seq} rtt=${x.rttMs.toFixed(1)} ms path=${pathText(x.path)}`,
        ),
        `--- ${r.peer}: ${r.sent} sent, ${r.received} received`,
      ].join('\n'),
    )
  })

  withCommonOptions(
    daemon
      .command('connect')
      .description("make the daemon forward a local port to a peer's service until `daemon disconnect`")
      .requiredOption('--peer <peer>', 'a name from names: or a peer id')
      .requiredOption('--service <name>', 'the service on that peer, like ssh')
      .requiredOption(
        '--listen <[host:]port>',
        'where to listen (host 127.0.0.1 by default; port 0 picks one)',
      ),
  ).action(async (_flags: object, cmd: Command) => {
    const opts = globalOpts<{ peer: string; service: string; listen: string }>(cmd)
    const proxy = await (await client(ctx, opts)).connect({
      peer: opts.peer,
      service: opts.service,
      listen: opts.listen,
    })
    emit(ctx, opts, proxy, (p) => `${p.id} ${p.listen} → ${p.peer}/${p.service}`)
  })

  withCommonOptions(
    daemon
      .command('disconnect')
      .description('stop a proxy listener of the daemon')
      .argument('<id>', 'the id `daemon connect` printed'),
  ).action(async (id: string, _flags: object, cmd: Command) => {
    const opts = globalOpts(cmd)
    const r = await (await client(ctx, opts)).disconnect(id)
    emit(ctx, opts, r, (x) => `removed proxy ${x.removed}`)
  })
}
