/**
 * `peerup daemon`: run the agent in the foreground (systemd runs this), and talk to a running one:
 * `status|stop|peers|paths|services|proxies|ping|connect|disconnect`.
 *
 * @packageDocumentation
 */

import {
  type Input,
  type Output,
  pathsText,
  peersText,
  pingReportText,
  proxiesText,
  servicesText,
  statusText,
} from '../../api/index.ts'
import type { LocalClient } from '../../client/local.ts'
import { loadNodeConfig } from '../../config/load.ts'
import { parseDurationMs } from '../../config/units.ts'
import { UsageError } from '../../errors.ts'
import { createLogger } from '../../log/index.ts'
import { type CliContext, type GlobalOptions, graceful } from '../context.ts'
import { loadDaemon } from '../lazy.ts'
import { daemonClient, mainConfigFile, nodeConfigFile } from '../load.ts'
import { type CliCommand, numberFlag } from '../options.ts'
import { emit, logToStderr } from '../output.ts'
import { registerDaemonConnections } from './connections.ts'

/** A client of the daemon serving this invocation's config. */
async function client(ctx: CliContext, opts: GlobalOptions): Promise<LocalClient> {
  return daemonClient(ctx, await nodeConfigFile(ctx, opts))
}

/** `daemon [start]`: the daemon itself, in the foreground. */
function registerDaemonRun(daemon: CliCommand, ctx: CliContext): void {
  daemon
    .command('start', { isDefault: true })
    .description('run the daemon in the foreground (what `peerup daemon` does)')
    .option('--log-level <level>', 'debug, info, warn, error (default: log.level in the config)')
    .run(
      async (opts: GlobalOptions & { logLevel?: string }) => {
        if (opts.network !== undefined) {
          throw new UsageError('the daemon runs every network of the node: --network does not apply to it', {
            hint: 'start it with `peerup daemon` (the main config); `peerup network list` shows what it runs',
          })
        }
        // The main config, whatever `network use` chose: the daemon runs all the networks beside it.
        const { file, config } = await loadNodeConfig(await mainConfigFile(ctx, opts))
        // Before anything is opened: this may start the command again in place.
        const { withFewerMallocArenas } = await import('../../util/self.ts')
        withFewerMallocArenas()
        logToStderr(ctx, opts.logLevel, config.log.level)
        const { runDaemon } = await loadDaemon()
        const exit = await graceful(ctx, () =>
          runDaemon({ configFile: file, log: createLogger('daemon'), signal: ctx.signal, env: ctx.env }),
        )
        if (exit.restart !== undefined) {
          // The config an unconfirmed apply replaced is back, and part of it needs a fresh start.
          const { runAgainInPlace } = await import('../../util/self.ts')
          runAgainInPlace()
        }
      },
      { json: false },
    )
}

/** `daemon status|stop|peers|paths|services|proxies`: what the running daemon is doing. */
function registerDaemonQueries(daemon: CliCommand, ctx: CliContext): void {
  // A command that prints one route's answer, which takes no input.
  const query = <K extends 'status' | 'paths' | 'services' | 'connectList'>(
    name: string,
    description: string,
    route: K,
    text: (data: Output<K>) => string,
  ): void => {
    daemon
      .command(name)
      .description(description)
      .run(async (opts) => emit(ctx, opts, await (await client(ctx, opts)).call(route, {} as Input<K>), text))
  }
  query('status', 'what the running daemon is doing', 'status', statusText)

  daemon
    .command('stop')
    .description('stop the running daemon (in order, like SIGTERM)')
    .run(async (opts) => {
      const c = await client(ctx, opts)
      const status = await c.call('status', {})
      await c.call('shutdown', {})
      emit(ctx, opts, { stopping: true, pid: status.pid }, (r) => `daemon (pid ${r.pid}) is stopping`)
    })

  daemon
    .command('peers')
    .description('connected peers (peerup nodes and relays; --all for every libp2p peer)')
    .option('--all', 'every connected peer')
    .run(async (opts: GlobalOptions & { all?: boolean }) => {
      emit(ctx, opts, await (await client(ctx, opts)).call('peers', { all: opts.all === true }), peersText)
    })

  query('paths', 'the path to each peer (DIRECT or RELAYED), since when, and upgrades', 'paths', pathsText)
  query('services', 'the services the daemon offers', 'services', servicesText)
  query('proxies', 'the proxy listeners the daemon runs (`daemon connect`)', 'connectList', proxiesText)
}

/** `daemon ping|connect|disconnect`: asking the running daemon to do something. */
function registerDaemonActions(daemon: CliCommand, ctx: CliContext): void {
  daemon
    .command('ping')
    .description('ping a peer through the daemon')
    .argument('<peer>', 'a name from names: or a peer id')
    .option('-c, --count <n>', 'number of pings', '4')
    .option('--interval <duration>', 'time between pings', '1s')
    .run(async (opts: GlobalOptions & { count: string; interval: string }, peer: string) => {
      // The API checks the count (1 to 1000 pings in one answer) and says so as a usage error.
      const count = Number(opts.count)
      const intervalMs = numberFlag('interval', opts.interval, 'write it like 500ms or 2s', parseDurationMs)
      const report = await (await client(ctx, opts)).call('ping', { peer, count, intervalMs }, ctx.signal)
      emit(ctx, opts, report, (r) => pingReportText(r))
    })

  daemon
    .command('connect')
    .description("make the daemon forward a local port to a peer's service until `daemon disconnect`")
    .requiredOption('--peer <peer>', 'a name from names: or a peer id')
    .requiredOption('--service <name>', 'the service on that peer, like ssh')
    .requiredOption('--listen <[host:]port>', 'where to listen (host 127.0.0.1 by default; port 0 picks one)')
    .run(async (opts: GlobalOptions & { peer: string; service: string; listen: string }) => {
      const { peer, service, listen } = opts
      const proxy = await (await client(ctx, opts)).call('connectAdd', { peer, service, listen })
      emit(ctx, opts, proxy, (p) => `${p.id} ${p.listen} → ${p.peer}/${p.service}`)
    })

  daemon
    .command('disconnect')
    .description('stop a proxy listener of the daemon')
    .argument('<id>', 'the id `daemon connect` printed')
    .run(async (opts, id: string) => {
      const r = await (await client(ctx, opts)).call('connectRemove', { id })
      emit(ctx, opts, r, (x) => `removed proxy ${x.removed}`)
    })
}

export function registerDaemon(program: CliCommand, ctx: CliContext): void {
  const daemon = program.command('daemon').description('the long-running agent, and talking to it')
  registerDaemonRun(daemon, ctx)
  registerDaemonQueries(daemon, ctx)
  registerDaemonConnections(daemon, ctx)
  registerDaemonActions(daemon, ctx)
}
