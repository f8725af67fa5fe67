/**
 * `peerup join [relay] [code]`: pair with whoever made the code (`peerup invite`, or a relay's group
 * code). The code comes from the argument, else `PEERUP_INVITE_CODE`, else stdin (a prompt on a
 * terminal). Creates this node's identity and config from the code when there is none. A short code
 * (`7-acorn-zebra`) does not carry its relay: it comes first, or is the one relay this node uses.
 *
 * @packageDocumentation
 */

import * as path from 'node:path'
import { DaemonNotRunningError } from '../../client/local.ts'
import { loadNodeConfig } from '../../config/load.ts'
import { checkNetworkName, listNetworks, NETWORKS_DIR, readSelectedNetwork } from '../../config/networks.ts'
import { checkPeerName, checkRelayAddress, relayPeerId } from '../../config/ops.ts'
import { CONFIG_FILE_NAME, configCandidates, defaultNodeDir } from '../../config/paths.ts'
import { UsageError } from '../../errors.ts'
import { decodeInviteCode } from '../../invite/code.ts'
import { defaultMachineName } from '../../invite/names.ts'
import { looksLikeShortCode, parseShortCode } from '../../invite/short-code.ts'
import { createLogger } from '../../log/index.ts'
import { exists } from '../../util/fs.ts'
import type { CliContext, GlobalOptions } from '../context.ts'
import { loadJoin } from '../lazy.ts'
import { daemonClient, mainConfigFile } from '../load.ts'
import type { CliCommand } from '../options.ts'
import { emit, logToStderr, note } from '../output.ts'
import { canPrompt, Prompter } from '../prompt.ts'

interface JoinFlags {
  name?: string
  nonInteractive?: boolean
  wait: boolean
  logLevel?: string
}

// A code is about 200 characters; stdin beyond this is not a code.
const MAX_STDIN_BYTES = 8192

const NO_CODE_HINT = 'pass it as an argument, in PEERUP_INVITE_CODE, or on stdin'

export function registerJoin(program: CliCommand, ctx: CliContext): void {
  program
    .command('join')
    .description('pair with the machine (or relay group) that made a code; creates this node if needed')
    .argument(
      '[relay]',
      "a short code's relay: its multiaddr (…/p2p/<id>), or the peer id of a relay this node uses (default: this node's only relay)",
    )
    .argument(
      '[code]',
      'the pairing code, long or short (default: $PEERUP_INVITE_CODE, else read from stdin)',
    )
    .option(
      '--name <name>',
      "this machine's name, recorded by the other side under names: (default: the hostname)",
    )
    .option('--non-interactive', 'never prompt: the code comes from the argument, the environment or stdin')
    .option('--no-wait', 'with a relay group code: return once joined, without waiting for the others')
    .option('--log-level <level>', 'log level on stderr: debug, info, warn, error')
    .run(async (opts: GlobalOptions & JoinFlags, first: string | undefined, second: string | undefined) => {
      if (opts.name !== undefined) {
        checkPeerName(opts.name)
      }
      // Two arguments are a short code's relay, then the code; one is the code, unless it is a
      // multiaddr (the code then comes from the environment or stdin, as in scripts).
      const relayArg = second !== undefined || first?.startsWith('/') ? first : undefined
      const text =
        second ??
        (relayArg === undefined ? first : undefined) ??
        ctx.env.inviteCode ??
        (await codeFromStdin(ctx, opts.nonInteractive))
      // Decoded before anything is created or dialled: a typo costs nothing.
      const short = looksLikeShortCode(text) ? parseShortCode(text) : undefined
      if (short === undefined && relayArg !== undefined) {
        throw new UsageError('a long pairing code carries its relay: give the code alone', {
          hint: 'peerup join <code>, or peerup join <relay> <short code> for a code like 12-lemon-ozone',
        })
      }
      logToStderr(ctx, opts.logLevel, 'warn')
      const target = await joinTarget(ctx, opts)
      const code =
        short === undefined
          ? decodeInviteCode(text)
          : ({ kind: 'short', code: short, relay: await shortCodeRelay(relayArg, target) } as const)
      const { runJoin } = await loadJoin()
      const newNetwork = 'network' in target ? target.network : undefined
      const result = await runJoin({
        code,
        target,
        name: opts.name ?? defaultMachineName(),
        log: createLogger('join'),
        signal: ctx.signal,
        waitForGroup: opts.wait,
        onProgress: (m) => note(ctx, m),
      })
      if (newNetwork !== undefined) {
        await startInDaemon(ctx, opts, newNetwork)
      }
      if (result.sponsored !== undefined && !result.sponsored.ok) {
        note(
          ctx,
          `warning: the relay did not authorize this node (${result.sponsored.reason ?? 'refused'}); peers reach it only once the relay operator runs \`peerup relay authorize ${result.peerId}\``,
        )
      }
      if (result.group !== undefined && !result.group.complete && opts.wait) {
        note(
          ctx,
          `warning: the group did not fill before it expired or was revoked; members that join later are not authorized here`,
        )
      }
      emit(ctx, opts, result, (r) => {
        const lines: string[] = []
        if (r.created) {
          lines.push(`created this node (${r.peerId}) in ${path.dirname(r.configFile)}`)
        }
        if (r.group === undefined) {
          const name = r.inviter.name === undefined ? '' : ` as ${r.inviter.name}`
          lines.push(`paired with ${r.inviter.peerId}${name}`)
          if (r.inviter.name !== undefined) {
            lines.push(`reach it with: peerup ssh ${r.inviter.name}`)
          }
        } else {
          lines.push(`joined group ${r.group.id} (${r.group.members.length + 1} of ${r.group.size} members)`)
          for (const m of r.group.members) {
            lines.push(`  ${m.peerId}${m.name === undefined ? '' : `  ${m.name}`}`)
          }
        }
        lines.push(
          'compare the numbers of `peerup verify <peer>` on both machines to be sure nobody else paired',
        )
        return lines.join('\n')
      })
    })
}

async function codeFromStdin(ctx: CliContext, nonInteractive: boolean | undefined): Promise<string> {
  if (ctx.stdin.isTTY === true) {
    if (!canPrompt(ctx, nonInteractive)) {
      throw new UsageError('no pairing code given', { hint: NO_CODE_HINT })
    }
    using prompter = new Prompter(ctx)
    return await prompter.ask('Pairing code')
  }
  let text = ''
  for await (const chunk of ctx.stdin) {
    text += String(chunk)
    if (text.length > MAX_STDIN_BYTES) {
      break
    }
  }
  if (text.trim() === '') {
    throw new UsageError('no pairing code given', { hint: NO_CODE_HINT })
  }
  return text
}

/**
 * The relay a short code's join goes through: the one given (a multiaddr with its peer id, or the
 * peer id of a relay the config has), else the config's only relay.
 */
async function shortCodeRelay(
  given: string | undefined,
  target: { configFile: string } | { createIn: string },
): Promise<string> {
  const relays =
    'configFile' in target ? (await loadNodeConfig(target.configFile)).config.relay.addresses : []
  if (given?.startsWith('/')) {
    return checkRelayAddress(given)
  }
  if (given !== undefined) {
    const known = relays.find((a) => relayPeerId(a) === given)
    if (known === undefined) {
      throw new UsageError(`this node has no relay ${given}`, {
        hint: "give the relay's full address as `peerup invite` printed it (/ip4/…/tcp/…/p2p/…)",
      })
    }
    return known
  }
  const ids = [...new Set(relays.map(relayPeerId))]
  if (ids.length === 1) {
    return relays[0] as string
  }
  throw new UsageError(
    ids.length === 0
      ? 'a short code does not say which relay the inviter waits on'
      : `this node uses ${ids.length} relays, and a short code does not say which one the inviter waits on`,
    { hint: 'give the relay `peerup invite` printed before the code: peerup join <relay> <short code>' },
  )
}

/** Asks a running daemon to start the network a join just created (nothing when none runs). */
async function startInDaemon(ctx: CliContext, opts: GlobalOptions, name: string): Promise<void> {
  try {
    await daemonClient(ctx, await mainConfigFile(ctx, opts)).call('networkAdd', { name })
    note(ctx, `the daemon runs network ${name} now`)
  } catch (err) {
    if (!(err instanceof DaemonNotRunningError)) {
      note(
        ctx,
        `warning: the daemon did not start network ${name}: ${(err as Error).message}; see \`peerup network list\``,
      )
    }
  }
}

/**
 * The config to join with: with `--network` (or `network use`'s choice), that network's —
 * created as `networks/<name>/` beside the main config when there is none yet; else --config or
 * the first found; else where to create one.
 */
async function joinTarget(
  ctx: CliContext,
  opts: GlobalOptions,
): Promise<{ configFile: string } | { createIn: string; network?: string }> {
  const mainFile = await mainConfigFile(ctx, opts).catch(() => undefined)
  const network =
    opts.network ?? (mainFile === undefined ? undefined : await readSelectedNetwork(path.dirname(mainFile)))
  if (network !== undefined) {
    checkNetworkName(network)
    if (mainFile === undefined) {
      throw new UsageError(`no node here yet to add network ${network} to`, {
        hint: 'join without --network first (or `peerup init`), then join other networks with --network',
      })
    }
    const known = await listNetworks(mainFile)
    const found = known.find((n) => n.name === network)
    if (found !== undefined) {
      return { configFile: found.configFile }
    }
    return { createIn: path.join(path.dirname(mainFile), NETWORKS_DIR, network), network }
  }
  const explicit = opts.config
  if (explicit !== undefined) {
    const file = path.resolve(ctx.cwd, explicit)
    if (await exists(file)) {
      return { configFile: file }
    }
    if (path.basename(file) !== CONFIG_FILE_NAME) {
      throw new UsageError(`${file} does not exist`, {
        hint: `to create a node there, name the file ${CONFIG_FILE_NAME} (join writes ${CONFIG_FILE_NAME} beside its key)`,
      })
    }
    return { createIn: path.dirname(file) }
  }
  for (const file of configCandidates(ctx.env, ctx.cwd, 'node')) {
    if (await exists(file)) {
      return { configFile: file }
    }
  }
  return { createIn: defaultNodeDir(ctx.env, ctx.cwd) }
}
