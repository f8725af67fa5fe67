/**
 * `peerup ping|traceroute|proxy|socks|ssh`: reaching peers. With a daemon running on the same config,
 * each goes through the daemon's node (no node start, no DHT warm-up, its warm connections);
 * otherwise, or with `--no-daemon`, it runs a short-lived node of its own. The network code is
 * loaded with a dynamic import so offline commands never load libp2p.
 *
 * @packageDocumentation
 */

import { spawn } from 'node:child_process'
import type { Command } from 'commander'
import {
  describePath,
  type PingResponse,
  pingLineText,
  pingSummaryText,
  tracerouteText,
} from '../../api/index.ts'
import type { Client } from '../../client/client.ts'
import { loadNodeConfig } from '../../config/load.ts'
import { listNetworks } from '../../config/networks.ts'
import { checkServiceName, resolvePeer } from '../../config/ops.ts'
import type { NodeConfig } from '../../config/schema.ts'
import { parseDurationMs } from '../../config/units.ts'
import { relayedBecause } from '../../doctor/checks.ts'
import { measureNodeNat } from '../../doctor/run.ts'
import { ExitStatus, formatError, PeerupError, UsageError } from '../../errors.ts'
import { createLogger } from '../../log/index.ts'
import { parseListenAddress } from '../../util/address.ts'
import { selfCommand } from '../../util/self.ts'
import { type CliContext, type GlobalOptions, graceful } from '../context.ts'
import { loadInProcessClient, loadP2pErrors } from '../lazy.ts'
import { loadNode, mainConfigFile, nodeConfigFile, viaDaemon } from '../load.ts'
import { type CliCommand, numberFlag, takeNetwork, wholeNumber } from '../options.ts'
import { emit, logToStderr, note } from '../output.ts'
import { registerProxyConfig } from './proxy.ts'

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

/** The options of the commands that reach peers: `--log-level` and `--no-daemon`. */
interface NodeFlags extends GlobalOptions {
  logLevel?: string
  daemon?: boolean
}

/**
 * Runs `fn` with a client of this config's node: the running daemon's, or — when none runs, or
 * with `--no-daemon` — a node started in this process for the command and stopped after it.
 */
async function withClient<T>(
  ctx: CliContext,
  opts: NodeFlags,
  fn: (client: Client) => Promise<T>,
): Promise<T> {
  const alone = async (configFile: string): Promise<T> => {
    logToStderr(ctx, opts.logLevel, 'warn')
    const { startInProcessClient } = await loadInProcessClient()
    const client = await startInProcessClient({ configFile, log: createLogger('peerup') })
    try {
      return await fn(client)
    } finally {
      await client.close()
    }
  }
  return graceful(ctx, async () =>
    opts.daemon === false ? alone(await nodeConfigFile(ctx, opts)) : viaDaemon(ctx, opts, fn, alone),
  )
}

const NO_DAEMON_HELP = 'run a node of its own even when a daemon runs'

const LOG_LEVEL_HELP = 'log level on stderr: debug, info, warn, error'

/** How long `ping --until-direct` waits for the upgrade unless `--deadline` says otherwise. */
const DEFAULT_UNTIL_DIRECT_DEADLINE = '30s'

interface PingFlags extends NodeFlags {
  count: string
  interval: string
  untilDirect?: boolean
  deadline?: string
}

/** `ping`'s flags checked: a usage error names the flag that is wrong. */
function pingRequest(peer: string, opts: PingFlags) {
  const count = numberFlag('count', opts.count, 'give a whole number, 0 for no end', wholeNumber)
  const intervalMs = numberFlag('interval', opts.interval, 'write it like 500ms or 2s', parseDurationMs)
  const untilDirect = opts.untilDirect === true
  const deadline = opts.deadline ?? (untilDirect ? DEFAULT_UNTIL_DIRECT_DEADLINE : undefined)
  const deadlineMs =
    deadline === undefined
      ? undefined
      : numberFlag('deadline', deadline, 'write it like 30s or 2m', parseDurationMs, 1)
  return {
    peer,
    count,
    intervalMs,
    untilDirect,
    deadline,
    ...(deadlineMs === undefined ? {} : { deadlineMs }),
  }
}

/** `ping`: each line as it happens, the summary, and an error when nothing answered or the path stayed relayed. */
async function ping(ctx: CliContext, peer: string, opts: PingFlags): Promise<void> {
  const { deadline, ...request } = pingRequest(peer, opts)
  // The names of this node's config, for rendering paths (the relay's name, say).
  const { config } = await loadNode(ctx, opts)
  const { names } = config
  const report: PingResponse = await withClient(ctx, opts, async (client) => {
    for await (const line of client.lines('ping', request, ctx.signal)) {
      if (line.type === 'done') {
        return line.report
      }
      if (line.type === 'connected' && request.untilDirect && line.path.type !== 'DIRECT') {
        note(ctx, `waiting for a direct path to ${peer}…`)
      }
      if (opts.json !== true) {
        ctx.stdout.write(`${pingLineText(peer, line, names)}\n`)
      }
    }
    // The lines ended without a report: Ctrl+C (the request was closed), or the daemon stopped.
    ctx.signal.throwIfAborted()
    throw new PeerupError('the daemon stopped while pinging')
  })
  const why = await relayedWhy(report, config, opts)
  emit(ctx, opts, report, (r) => pingSummaryText(r, names, why))
  const errors = await loadP2pErrors()
  if (report.received === 0 && report.sent > 0) {
    throw new errors.PeerUnreachableError(`no answer from ${peer}`)
  }
  if (request.untilDirect && report.finalPath.type !== 'DIRECT') {
    const u = report.upgrade
    const why =
      u?.state === 'failed' || u?.state === 'unavailable'
        ? (u.lastError ?? 'unknown error')
        : `not direct within ${deadline}${u?.state === 'upgrading' ? ' (an attempt is still running)' : ''}`
    throw new errors.NoDirectPathError(
      `no direct path to ${peer}: ${why}; traffic stays ${describePath(report.finalPath)}`,
      {
        hint: 'a symmetric NAT (or blocked UDP) on both sides prevents it; the relay keeps carrying the traffic, and the node tries again later',
      },
    )
  }
}

/** How long `ping` waits for the relays' STUN answers when it says why a path is RELAYED. */
const PING_NAT_TIMEOUT_MS = 1_000

/**
 * Why the path of a ping that ended RELAYED is relayed, this side's NAT first (measured here with
 * the relays' STUN, as `doctor` does); undefined when it ended DIRECT, or for `--json`, whose
 * report carries the upgrade already.
 */
async function relayedWhy(
  report: PingResponse,
  config: NodeConfig,
  opts: GlobalOptions,
): Promise<string | undefined> {
  if (opts.json === true || report.finalPath.type !== 'RELAYED' || report.received === 0) {
    return undefined
  }
  const nat = await measureNodeNat(config, { timeoutMs: PING_NAT_TIMEOUT_MS }).catch(() => undefined)
  return relayedBecause(report.upgrade, nat)
}

interface ProxyFlags extends NodeFlags {
  stdio?: boolean
}

/** How long `proxy --stdio` waits for its peer before saying that it waits. */
const STDIO_WAIT_NOTE_MS = 1_000

/**
 * `proxy --stdio`: one connection on stdin/stdout, an ssh ProxyCommand. A peer that does not
 * answer yet (its daemon restarting, its relay reservation not back) is waited for up to
 * `proxy.connect_timeout`, as the connections of a listening proxy are.
 */
async function proxyStdio(ctx: CliContext, opts: ProxyFlags, peer: string, service: string): Promise<void> {
  const { config } = await loadNode(ctx, opts)
  resolvePeer(config, peer)
  const waitMs = config.proxy.connect_timeout
  return outlastHangup(() =>
    withClient(ctx, opts, async (client) => {
      // Said once the wait is noticeable: ssh shows a ProxyCommand's stderr.
      const slow = setTimeout(
        () => note(ctx, `waiting for ${peer} to answer (up to ${waitMs / 1000} s)…`),
        STDIO_WAIT_NOTE_MS,
      )
      const far = await client.dial(peer, service, ctx.signal, { waitMs }).finally(() => clearTimeout(slow))
      // The data plane's parts (no libp2p): the pipe and the stdio end.
      const [{ pipe }, { stdioEnd }] = await Promise.all([
        import('../../pipe/pipe.ts'),
        import('../../pipe/node.ts'),
      ])
      const result = await pipe(stdioEnd(ctx.stdin, ctx.stdout), far, { log: createLogger('proxy') })
      if (result.reset && result.error !== undefined) {
        throw result.error
      }
    }),
  )
}

/**
 * Tells, once, whether the peer of a `proxy` answers now and by which path — or why not, and
 * that connections wait for it. On stderr; the listener does not wait for it.
 */
async function tellReach(
  ctx: CliContext,
  client: Client,
  target: { peer: string; names: Record<string, string>; waitMs: number },
  signal: AbortSignal,
): Promise<void> {
  const { peer } = target
  try {
    const reached = await client.call('ping', { peer, count: 1, intervalMs: 0 }, signal)
    note(ctx, `${peer} answers: ${describePath(reached.path, target.names)}`)
  } catch (err) {
    if (!signal.aborted) {
      note(
        ctx,
        `${peer} does not answer now (${formatError(err)}); each connection waits up to ${target.waitMs / 1000} s for it`,
      )
    }
  }
}

/**
 * `proxy PEER SERVICE [host:]port`: a local listener until Ctrl+C. It listens at once, whether the
 * peer answers or not: each connection waits for the peer up to `proxy.connect_timeout`
 * (src/p2p/wait.ts). A peer name that is not in names: (nor a peer id) fails now.
 */
async function proxyListen(
  ctx: CliContext,
  opts: ProxyFlags,
  target: { peer: string; service: string; listen: string },
): Promise<void> {
  const { peer, service, listen } = target
  parseListenAddress(listen)
  checkServiceName(service)
  const { config } = await loadNode(ctx, opts)
  resolvePeer(config, peer)
  const waitMs = config.proxy.connect_timeout
  await withClient(ctx, opts, async (client) => {
    // The first call to the client: with no daemon it fails here, and a node of our own is started.
    await client.call('resolve', { name: peer }, ctx.signal)
    // The listener is the node's — the daemon's, or our own node's in this process — held until
    // Ctrl+C: the bytes cross no process of their own (docs/decisions/0008-proxy-in-the-daemon.md).
    const lines = client.lines('connectHold', { peer, service, listen }, ctx.signal)
    const first = await lines.next()
    if (first.done === true || first.value.type !== 'listening') {
      ctx.signal.throwIfAborted()
      throw new PeerupError('the daemon stopped before the proxy listened')
    }
    const telling = new AbortController()
    try {
      const where = first.value.proxy.listen
      note(ctx, `forwarding ${where} → ${peer}/${service}; Ctrl+C to stop`)
      emit(ctx, opts, { listen: where, peer, service }, (r) => r.listen)
      void tellReach(ctx, client, { peer, names: config.names, waitMs }, telling.signal)
      for await (const line of lines) {
        if (line.type === 'failed') {
          note(ctx, `a connection to ${peer}/${service} failed: ${line.error}`)
        }
      }
      if (!ctx.signal.aborted) {
        throw new PeerupError('the daemon stopped: the proxy no longer listens', {
          hint: 'start the daemon again, then the proxy',
        })
      }
    } finally {
      telling.abort()
      // Closed before the command returns, so that the port is free for the next one at once
      // (the daemon would close it too, a moment after it sees the request end).
      await client.call('connectRemove', { id: first.value.proxy.id }).catch(() => {})
      await lines.return(undefined)
    }
  })
}

interface SocksFlags extends NodeFlags {
  http?: string
}

/**
 * `socks [[host:]port] [--http [host:]port]`: a SOCKS5 gateway (and HTTP CONNECT beside it) on
 * loopback until Ctrl+C — the node's, the daemon's or our own, as `proxy` listens
 * (src/daemon/gateway.ts).
 */
async function socks(ctx: CliContext, opts: SocksFlags, listen: string): Promise<void> {
  parseListenAddress(listen)
  if (opts.http !== undefined) {
    parseListenAddress(opts.http)
  }
  await withClient(ctx, opts, async (client) => {
    const request = { listen, ...(opts.http === undefined ? {} : { http: opts.http }) }
    const lines = client.lines('socksHold', request, ctx.signal)
    const first = await lines.next()
    if (first.done === true) {
      ctx.signal.throwIfAborted()
      throw new PeerupError('the daemon stopped before the gateway listened')
    }
    const { socks: at, http } = first.value
    note(
      ctx,
      `SOCKS5 on ${at}${http === undefined ? '' : `, HTTP CONNECT on ${http}`}: names like web.home.peerup or home.peerup:8080; Ctrl+C to stop`,
    )
    emit(ctx, opts, { socks: at, http }, (r) => r.socks)
    // One line only; the request ends when the daemon stops or we do.
    while ((await lines.next()).done !== true) {}
    if (!ctx.signal.aborted) {
      throw new PeerupError('the daemon stopped: the gateway no longer listens', {
        hint: 'start the daemon again, then peerup socks',
      })
    }
  })
}

/**
 * The config file and ssh target of `peerup ssh [user@]peer[@network]`: the network a target's
 * `@network` names, else `--network`, else the one `network use` chose, else the main one.
 */
async function sshTargetIn(
  ctx: CliContext,
  opts: GlobalOptions,
  target: string,
): Promise<{ configFile: string; user: string | undefined; peer: string; alias: string }> {
  const { sshNetworkTarget } = await import('../ssh.ts')
  const networks = await listNetworks(await mainConfigFile(ctx, opts)).catch(() => [])
  const usual = (await loadNodeConfig(await nodeConfigFile(ctx, opts))).config
  const t = sshNetworkTarget(target, {
    isNetwork: (n) => networks.length > 1 && networks.some((x) => x.name === n),
    isPeer: (n) => Object.hasOwn(usual.names, n),
  })
  const chosen =
    t.network === undefined ? opts : { ...opts, network: takeNetworkOf(opts, `${t.peer}@${t.network}`) }
  const configFile = await nodeConfigFile(ctx, chosen)
  const network = networks.find((n) => n.configFile === configFile)
  // known_hosts keys a further network's host apart from a namesake in another network.
  const alias = network === undefined || network.main ? t.peer : `${t.peer}@${network.name}`
  return { configFile, user: t.user, peer: t.peer, alias }
}

/** The network `ref`'s `@network` names, checked against `--network`. */
function takeNetworkOf(opts: GlobalOptions, ref: string): string | undefined {
  const copy = { ...opts }
  takeNetwork(copy, ref)
  return copy.network
}

/** `ssh [user@]peer[@network] [args…]`: the system ssh with `proxy --stdio` as its ProxyCommand. */
async function ssh(ctx: CliContext, cmd: Command, target: string, args: string[]): Promise<void> {
  const { sshArgv, takePeerupOptions } = await import('../ssh.ts')
  const own = takePeerupOptions(args)
  const global: GlobalOptions = cmd.optsWithGlobals()
  const opts: GlobalOptions = {
    ...global,
    config: own.config ?? global.config,
    ...(own.network === undefined ? {} : { network: own.network }),
  }
  const { configFile, user, peer, alias } = await sshTargetIn(ctx, opts, target)
  // The peer is looked up before ssh runs: inside ssh's ProxyCommand an unknown name would be
  // reported all the same, but followed by ssh's own lines ("kex_exchange_identification:
  // Connection closed by remote host") and ssh's exit status 255.
  resolvePeer((await loadNodeConfig(configFile)).config, peer)
  const argv = sshArgv({
    target: user === undefined ? peer : `${user}@${peer}`,
    args: own.args,
    configFile,
    self: selfCommand(),
    hostKeyAlias: alias,
  })
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
}

export function registerNet(program: CliCommand, ctx: CliContext): void {
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
    .option('--log-level <level>', LOG_LEVEL_HELP)
    .run((opts: PingFlags, peer: string) => ping(ctx, peer, opts))

  program
    .command('traceroute')
    .description('the path to a peer hop by hop (relay, peer) with round-trip times')
    .argument('<peer>', 'a name from names: or a peer id')
    .option('--no-daemon', NO_DAEMON_HELP)
    .option('--log-level <level>', LOG_LEVEL_HELP)
    .run(async (opts: NodeFlags, peer: string) => {
      const report = await withClient(ctx, opts, (client) => client.call('traceroute', { peer }, ctx.signal))
      emit(ctx, opts, report, tracerouteText)
    })

  const proxy = program
    .command('proxy')
    .description(
      "forward local TCP connections to a peer's service (or one connection on stdin/stdout with --stdio)",
    )
    .argument('<peer>', 'a name from names: or a peer id')
    .argument('<service>', 'the service name on that peer, like ssh')
    .argument('[listen]', '[host:]port to listen on (default host 127.0.0.1); not with --stdio')
    .option('--stdio', 'proxy one connection over stdin/stdout (an ssh ProxyCommand)')
    .option('--no-daemon', NO_DAEMON_HELP)
    .option('--log-level <level>', LOG_LEVEL_HELP)
    .run(async (opts: ProxyFlags, peer: string, service: string, listen: string | undefined) => {
      if (opts.stdio === true) {
        if (listen !== undefined) {
          throw new UsageError('--stdio takes no listen address', {
            hint: `peerup proxy --stdio ${peer} ${service}`,
          })
        }
        return proxyStdio(ctx, opts, peer, service)
      }
      if (listen === undefined) {
        throw new UsageError('missing listen address', {
          hint: `peerup proxy ${peer} ${service} 2222 (or --stdio)`,
        })
      }
      return proxyListen(ctx, opts, { peer, service, listen })
    })
  registerProxyConfig(proxy, ctx)

  program
    .command('socks')
    .description(
      "a SOCKS5 gateway to peers' services until Ctrl+C (curl --socks5-hostname 127.0.0.1:1080 http://web.home.peerup/)",
    )
    .argument('[listen]', '[host:]port on loopback (default 127.0.0.1:1080)', '127.0.0.1:1080')
    .option('--http <listen>', 'also serve HTTP CONNECT on this [host:]port (curl -x)')
    .option('--no-daemon', NO_DAEMON_HELP)
    .option('--log-level <level>', LOG_LEVEL_HELP)
    .run((opts: SocksFlags, listen: string) => socks(ctx, opts, listen))

  program
    .command('ssh')
    .description('run ssh to a peer through peerup (ProxyCommand), passing the rest of the arguments to ssh')
    .argument('<peer>', '[user@]peer[@network]: a name from names: or a peer id')
    .argument('[args...]', 'ssh options and the remote command')
    .option('--config <file>', 'peerup config file')
    .option('--network <name>', 'which of the node’s networks')
    .passThroughOptions()
    .allowUnknownOption()
    .action((target: string, args: string[], _flags: object, cmd: Command) => ssh(ctx, cmd, target, args))
}
