/**
 * `peerup ping|traceroute|proxy|ssh`: reaching peers. With a daemon running on the same config,
 * each goes through the daemon's node (no node start, no DHT warm-up, its warm connections);
 * otherwise, or with `--no-daemon`, it runs a short-lived node of its own. The network code is
 * loaded with a dynamic import so offline commands never load libp2p.
 *
 * @packageDocumentation
 */

import { spawn } from 'node:child_process'
import type { Command } from 'commander'
import type { ApiPath, PingPathChange, PingReply, PingResponse } from '../../api/index.ts'
import { ApiResponseError, isDaemonAbsent, LocalClient } from '../../client/local.ts'
import { parseDurationMs } from '../../config/units.ts'
import { ExitStatus, UsageError } from '../../errors.ts'
import { configureLogging, createLogger, type LogLevel } from '../../log/index.ts'
import { parseListenAddress } from '../../util/address.ts'
import { selfCommand } from '../../util/self.ts'
import { type CliContext, type GlobalOptions, graceful } from '../context.ts'
import {
  loadDiagnostics,
  loadP2pErrors,
  loadPath,
  loadRuntime,
  loadStreamEnd,
  type NodeRuntime,
} from '../lazy.ts'
import { nodeConfigFile } from '../load.ts'
import { emit, note, table } from '../output.ts'
import { globalOpts, withCommonOptions } from '../program.ts'

/** Starts a short-lived node for one command and stops it afterwards, whatever happens. */
async function withNode<T>(
  ctx: CliContext,
  opts: GlobalOptions & { logLevel?: string },
  fn: (rt: NodeRuntime) => Promise<T>,
): Promise<T> {
  configureLogging({
    level: (opts.logLevel as LogLevel | undefined) ?? 'warn',
    format: ctx.stderr.isTTY === true ? 'text' : 'json',
  })
  const configFile = await nodeConfigFile(ctx, opts)
  const { startNodeRuntime } = await loadRuntime()
  // A one-shot client dials out only: no listening, no reservation.
  const rt = await startNodeRuntime({
    configFile,
    log: createLogger('peerup'),
    exposeServices: false,
    listen: [],
  })
  try {
    return await fn(rt)
  } finally {
    await rt.stop()
  }
}

/**
 * Runs `daemon` with a client of the daemon serving this config, or `node` with a short-lived node
 * of our own when no daemon runs (or `--no-daemon`).
 */
/** How long `proxy --stdio` stays after a SIGHUP to end its session in order. */
const HANGUP_GRACE_MS = 2_000

/**
 * Runs a `proxy --stdio` session so that a SIGHUP does not end the process at once. OpenSSH sends
 * its ProxyCommand SIGHUP as it exits (`ssh_kill_proxy_command()` in its cleanup), usually before
 * the session's last bytes and our half-close have left for the peer: dying then turns a session
 * that ended well into a reset at the peer (its log and audit read `reset: true`). ssh has closed
 * our stdin by then, so the session ends by itself within a round trip; if it has not after
 * {@link HANGUP_GRACE_MS}, the process exits (and the peer sees the reset it would have seen).
 */
async function outlastHangup<T>(fn: () => Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const onHup = (): void => {
    timer ??= setTimeout(() => process.exit(129), HANGUP_GRACE_MS)
  }
  process.on('SIGHUP', onHup)
  try {
    return await fn()
  } finally {
    process.off('SIGHUP', onHup)
    clearTimeout(timer)
  }
}

async function withDaemonOrNode<T>(
  ctx: CliContext,
  opts: GlobalOptions & { logLevel?: string; daemon?: boolean },
  daemon: (client: LocalClient) => Promise<T>,
  node: (rt: NodeRuntime) => Promise<T>,
): Promise<T> {
  return graceful(ctx, () => daemonOrNode(ctx, opts, daemon, node))
}

async function daemonOrNode<T>(
  ctx: CliContext,
  opts: GlobalOptions & { logLevel?: string; daemon?: boolean },
  daemon: (client: LocalClient) => Promise<T>,
  node: (rt: NodeRuntime) => Promise<T>,
): Promise<T> {
  if (opts.daemon !== false) {
    const client = new LocalClient({
      configFile: await nodeConfigFile(ctx, opts),
      warn: (message) => note(ctx, message),
    })
    try {
      return await daemon(client)
    } catch (err) {
      if (!isDaemonAbsent(err)) {
        throw err
      }
    }
  }
  return withNode(ctx, opts, node)
}

/** The callbacks of a ping, the same whether the daemon or our own node pings. */
interface PingCallbacks {
  onConnected: (path: ApiPath, via: string, ms: number) => void
  onReply: (reply: PingReply) => void
  onPathChange: (change: PingPathChange) => void
}

/** Pings through the daemon, replies streamed as they come. */
async function pingViaDaemon(
  client: LocalClient,
  req: { peer: string; count: number; intervalMs: number; untilDirect: boolean; deadlineMs?: number },
  cb: PingCallbacks,
  signal: AbortSignal,
): Promise<PingResponse> {
  for await (const line of client.pingStream(req, signal)) {
    if (line.type === 'connected') {
      cb.onConnected(line.path, line.via, line.connectMs)
    } else if (line.type === 'reply') {
      cb.onReply(line.reply)
    } else if (line.type === 'path-changed') {
      cb.onPathChange(line.change)
    } else if (line.type === 'done') {
      return line.report
    } else if (line.type === 'error') {
      throw new ApiResponseError(line.status, line.error, line.hint === undefined ? {} : { hint: line.hint })
    }
  }
  // The stream ended without a report: Ctrl+C (the request was closed), or the daemon stopped.
  signal.throwIfAborted()
  throw new ApiResponseError(502, 'the daemon stopped while pinging')
}

const NO_DAEMON_HELP = 'run a node of its own even when a daemon runs'

/** The names of this node's config, for rendering paths (the relay's name, say). */
async function loadNames(ctx: CliContext, opts: GlobalOptions): Promise<Record<string, string>> {
  const { loadNode } = await import('../load.ts')
  return (await loadNode(ctx, opts)).config.names
}

const LOG_LEVEL_HELP = 'log level on stderr: debug, info, warn, error'

/** How long `ping --until-direct` waits for the upgrade unless `--deadline` says otherwise. */
const DEFAULT_UNTIL_DIRECT_DEADLINE = '30s'

/** The data plane's light parts (no libp2p): ends, pipe, listener. */
async function loadPipe() {
  const [{ pipe }, { stdioEnd }, { framedEnd }, { startListener }] = await Promise.all([
    import('../../pipe/pipe.ts'),
    import('../../pipe/node.ts'),
    import('../../pipe/framed.ts'),
    import('../../pipe/listener.ts'),
  ])
  return { pipe, stdioEnd, framedEnd, startListener }
}

/** Registers the network commands. */
export function registerNet(program: Command, ctx: CliContext): void {
  withCommonOptions(
    program
      .command('ping')
      .description('round-trip time to a peer, and the path (DIRECT or RELAYED via which relay)')
      .argument('<peer>', 'a name from names: or a peer id')
      .option('-c, --count <n>', 'number of pings (0 = until Ctrl+C)', '4')
      .option('--interval <duration>', 'time between pings', '1s')
      .option(
        '--until-direct',
        'keep pinging until the path is DIRECT; exit 1 if the upgrade fails or the deadline passes',
      )
      .option('-w, --deadline <duration>', 'stop after this long (default with --until-direct: 30s)')
      .option('--no-daemon', NO_DAEMON_HELP)
      .option('--log-level <level>', LOG_LEVEL_HELP),
  ).action(async (peer: string, _flags: object, cmd: Command) => {
    const opts = globalOpts<{
      count: string
      interval: string
      untilDirect?: boolean
      deadline?: string
      logLevel?: string
      daemon?: boolean
    }>(cmd)
    const count = Number(opts.count)
    const intervalMs = parseDurationMs(opts.interval)
    if (!Number.isInteger(count) || count < 0) {
      throw new UsageError(`invalid --count ${JSON.stringify(opts.count)}`, {
        hint: 'give a whole number, 0 for no end',
      })
    }
    if (intervalMs === undefined) {
      throw new UsageError(`invalid --interval ${JSON.stringify(opts.interval)}`, {
        hint: 'write it like 500ms or 2s',
      })
    }
    const untilDirect = opts.untilDirect === true
    const deadlineText = opts.deadline ?? (untilDirect ? DEFAULT_UNTIL_DIRECT_DEADLINE : undefined)
    const deadlineMs = deadlineText === undefined ? undefined : parseDurationMs(deadlineText)
    if (deadlineText !== undefined && (deadlineMs === undefined || deadlineMs <= 0)) {
      throw new UsageError(`invalid --deadline ${JSON.stringify(opts.deadline)}`, {
        hint: 'write it like 30s or 2m',
      })
    }
    const human = opts.json !== true
    const { describePath } = await loadPath()
    let names: Record<string, string> = {}
    const callbacks: PingCallbacks = {
      onConnected: (path, via, ms) => {
        if (human) {
          ctx.stdout.write(
            `PING ${peer}: ${describePath(path, names)}, connected in ${ms.toFixed(0)} ms (${via})\n`,
          )
        }
        if (untilDirect && path.type !== 'DIRECT') {
          note(ctx, `waiting for a direct path to ${peer}…`)
        }
      },
      onPathChange: (c) => {
        if (human) {
          ctx.stdout.write(
            `path changed: ${describePath(c.from, names)} → ${describePath(c.to, names)} after ${(c.afterMs / 1000).toFixed(1)} s\n`,
          )
        }
      },
      onReply: (r) => {
        if (human) {
          ctx.stdout.write(
            r.rttMs === undefined
              ? `seq=${r.seq} error: ${r.error} path=${describePath(r.path, names)}\n`
              : `seq=${r.seq} rtt=${r.rttMs.toFixed(1)} ms path=${describePath(r.path, names)}\n`,
          )
        }
      },
    }
    const report: PingResponse = await withDaemonOrNode(
      ctx,
      opts,
      async (client) => {
        names = await loadNames(ctx, opts)
        return pingViaDaemon(
          client,
          { peer, count, intervalMs, untilDirect, ...(deadlineMs === undefined ? {} : { deadlineMs }) },
          callbacks,
          ctx.signal,
        )
      },
      async (rt) => {
        names = rt.config.names
        const { pingPeer } = await loadDiagnostics()
        return pingPeer(rt, peer, {
          count,
          intervalMs,
          signal: ctx.signal,
          untilDirect,
          ...(deadlineMs === undefined ? {} : { deadlineMs }),
          ...callbacks,
        })
      },
    )
    emit(ctx, opts, report, (r) => {
      const loss = r.sent === 0 ? 0 : Math.round(((r.sent - r.received) / r.sent) * 100)
      const stats =
        r.received === 0
          ? ''
          : `, rtt min/avg/max ${r.minMs?.toFixed(1)}/${r.avgMs?.toFixed(1)}/${r.maxMs?.toFixed(1)} ms`
      return `--- ${r.peer}: ${r.sent} sent, ${r.received} received, ${loss}% loss${stats}`
    })
    const errors = await loadP2pErrors()
    if (report.received === 0 && report.sent > 0) {
      throw new errors.PeerUnreachableError(`no answer from ${peer}`)
    }
    if (untilDirect && report.finalPath.type !== 'DIRECT') {
      const u = report.upgrade
      const why =
        u?.state === 'failed' || u?.state === 'unavailable'
          ? (u.lastError ?? 'unknown error')
          : `not direct within ${deadlineText}${u?.state === 'upgrading' ? ' (an attempt is still running)' : ''}`
      throw new errors.NoDirectPathError(
        `no direct path to ${peer}: ${why}; traffic stays ${describePath(report.finalPath)}`,
        {
          hint: 'a symmetric NAT (or blocked UDP) on both sides prevents it; the relay keeps carrying the traffic, and the node tries again later',
        },
      )
    }
  })

  withCommonOptions(
    program
      .command('traceroute')
      .description('the path to a peer hop by hop (relay, peer) with round-trip times')
      .argument('<peer>', 'a name from names: or a peer id')
      .option('--no-daemon', NO_DAEMON_HELP)
      .option('--log-level <level>', LOG_LEVEL_HELP),
  ).action(async (peer: string, _flags: object, cmd: Command) => {
    const opts = globalOpts<{ logLevel?: string; daemon?: boolean }>(cmd)
    const report = await withDaemonOrNode(
      ctx,
      opts,
      (client) => client.traceroute(peer, ctx.signal),
      async (rt) => (await loadDiagnostics()).traceroutePeer(rt, peer, ctx.signal),
    )
    emit(ctx, opts, report, (r) =>
      [
        `traceroute to ${r.peer} (${r.peerId}): ${r.summary}`,
        table(
          r.hops.map((h) => [
            String(h.hop),
            h.role,
            h.peerId,
            h.rttMs === undefined ? `error: ${h.error}` : `${h.rttMs.toFixed(1)} ms`,
            h.address,
          ]),
        ),
      ].join('\n'),
    )
  })

  withCommonOptions(
    program
      .command('proxy')
      .description(
        "forward local TCP connections to a peer's service (or one connection on stdin/stdout with --stdio)",
      )
      .argument('<peer>', 'a name from names: or a peer id')
      .argument('<service>', 'the service name on that peer, like ssh')
      .argument('[listen]', '[host:]port to listen on (default host 127.0.0.1); not with --stdio')
      .option('--stdio', 'proxy one connection over stdin/stdout (an ssh ProxyCommand)')
      .option('--no-daemon', NO_DAEMON_HELP)
      .option('--log-level <level>', LOG_LEVEL_HELP),
  ).action(
    async (peer: string, service: string, listen: string | undefined, _flags: object, cmd: Command) => {
      const opts = globalOpts<{ stdio?: boolean; logLevel?: string; daemon?: boolean }>(cmd)
      if (opts.stdio === true) {
        if (listen !== undefined) {
          throw new UsageError('--stdio takes no listen address', {
            hint: `peerup proxy --stdio ${peer} ${service}`,
          })
        }
        await outlastHangup(() =>
          withDaemonOrNode(
            ctx,
            opts,
            async (client) => {
              const { socket, head } = await client.dial(peer, service, ctx.signal)
              const { pipe, stdioEnd, framedEnd } = await loadPipe()
              const result = await pipe(stdioEnd(ctx.stdin, ctx.stdout), framedEnd(socket, head))
              if (result.reset && result.error !== undefined) {
                throw result.error
              }
            },
            async (rt) => {
              const { pipe, stdioEnd } = await loadPipe()
              const { serviceStreamEnd } = await loadStreamEnd()
              const { stream } = await rt.openService(peer, service, { signal: ctx.signal })
              const result = await pipe(stdioEnd(ctx.stdin, ctx.stdout), serviceStreamEnd(stream), {
                log: createLogger('proxy'),
              })
              if (result.reset && result.error !== undefined) {
                throw result.error
              }
            },
          ),
        )
        return
      }
      if (listen === undefined) {
        throw new UsageError('missing listen address', {
          hint: `peerup proxy ${peer} ${service} 2222 (or --stdio)`,
        })
      }
      const { host, port } = parseListenAddress(listen)
      const { describePath } = await loadPath()
      const forwarding = async (
        where: string,
        path: ApiPath,
        names: Record<string, string>,
      ): Promise<void> => {
        note(ctx, `forwarding ${where} → ${peer}/${service} (${describePath(path, names)}); Ctrl+C to stop`)
        emit(ctx, opts, { listen: where, peer, service, path }, (r) => r.listen)
        await new Promise<void>((resolve) => {
          if (ctx.signal.aborted) resolve()
          ctx.signal.addEventListener('abort', () => resolve(), { once: true })
        })
      }
      await withDaemonOrNode(
        ctx,
        opts,
        async (client) => {
          // Reach the peer once up front: a wrong name or a refusal is reported now, not at the first connection.
          const reached = await client.ping({ peer, count: 1, intervalMs: 0 }, ctx.signal)
          const { startListener, framedEnd } = await loadPipe()
          const listener = await startListener({
            host,
            port,
            log: createLogger('proxy'),
            open: async (signal) => {
              const { socket, head } = await client.dial(peer, service, signal)
              return framedEnd(socket, head)
            },
            // The daemon retried already: its answer is final.
            retry: { attempts: 1 },
          })
          try {
            await forwarding(
              `${listener.address.host}:${listener.address.port}`,
              reached.path,
              await loadNames(ctx, opts),
            )
          } finally {
            await listener.close()
          }
        },
        async (rt) => {
          const { startListener } = await loadPipe()
          const { serviceStreamEnd } = await loadStreamEnd()
          const reached = await rt.reach(peer, ctx.signal)
          const listener = await startListener({
            host,
            port,
            log: createLogger('proxy'),
            open: async (signal) =>
              serviceStreamEnd((await rt.openService(peer, service, { signal })).stream),
          })
          try {
            await forwarding(
              `${listener.address.host}:${listener.address.port}`,
              reached.path,
              rt.config.names,
            )
          } finally {
            await listener.close()
          }
        },
      )
    },
  )

  program
    .command('ssh')
    .description('run ssh to a peer through peerup (ProxyCommand), passing the rest of the arguments to ssh')
    .argument('<peer>', '[user@]peer: a name from names: or a peer id')
    .argument('[args...]', 'ssh options and the remote command')
    .option('--config <file>', 'peerup config file')
    .passThroughOptions()
    .allowUnknownOption()
    .action(async (target: string, args: string[], _flags: object, cmd: Command) => {
      const { sshArgv, takePeerupOptions } = await import('../ssh.ts')
      const own = takePeerupOptions(args)
      const opts = globalOpts(cmd)
      const configFile = await nodeConfigFile(
        ctx,
        own.config === undefined ? opts : { ...opts, config: own.config },
      )
      const argv = sshArgv({ target, args: own.args, configFile, self: selfCommand() })
      const code = await new Promise<number>((resolve, reject) => {
        const child = spawn('ssh', argv, { stdio: 'inherit' })
        child.once('error', (err) =>
          reject(new UsageError(`cannot run ssh: ${err.message}`, { hint: 'install the OpenSSH client' })),
        )
        child.once('exit', (c, sig) => resolve(c ?? (sig === null ? 1 : 128)))
      })
      if (code !== 0) {
        throw new ExitStatus(code)
      }
    })
}
