/**
 * The ssh command line `peerup ssh` runs: the system ssh with peerup as its ProxyCommand.
 *
 * @packageDocumentation
 */

// OpenSSH options that take a value (from ssh(1)'s synopsis): `-l user` consumes the next word.
const SSH_OPTIONS_WITH_VALUE = new Set('BbcDEeFIiJLlmOoPpQRSWw'.split(''))

/** How many words the option at `args[i]` takes: `-l user` two (value in the next word), `-luser` or `-v` one. */
function optionWords(args: string[], i: number): number {
  const arg = args[i] as string
  return arg.length === 2 && SSH_OPTIONS_WITH_VALUE.has(arg[1] as string) && i + 1 < args.length ? 2 : 1
}

/** Quotes a word for the shell ssh runs its ProxyCommand with. */
export function shellQuote(word: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`
}

/**
 * Takes peerup's own `--config FILE` (or `--config=FILE`) out of the ssh options that follow the
 * target, so `peerup ssh home --config x.yaml -p 22 ls` works as people type it. ssh has no long
 * options, so a `--config` among the leading options can only be meant for peerup; once the remote
 * command starts, every word is the command's.
 */
export function takePeerupOptions(args: string[]): {
  config: string | undefined
  network: string | undefined
  args: string[]
} {
  const out: string[] = []
  const own: { config: string | undefined; network: string | undefined } = {
    config: undefined,
    network: undefined,
  }
  let i = 0
  while (i < args.length) {
    const arg = args[i] as string
    if (arg === '--' || !arg.startsWith('-') || arg === '-') {
      break
    }
    const key =
      arg === '--config' || arg.startsWith('--config=')
        ? 'config'
        : arg === '--network' || arg.startsWith('--network=')
          ? 'network'
          : undefined
    if (key !== undefined && arg.includes('=')) {
      own[key] = arg.slice(arg.indexOf('=') + 1)
      i++
      continue
    }
    if (key !== undefined && i + 1 < args.length) {
      own[key] = args[i + 1]
      i += 2
      continue
    }
    const n = optionWords(args, i)
    out.push(...args.slice(i, i + n))
    i += n
  }
  return { ...own, args: [...out, ...args.slice(i)] }
}

export interface SshArgvOptions {
  /** `[user@]peer` */
  target: string
  /** Everything after the target: ssh options first, then the remote command. */
  args: string[]
  configFile: string
  /** How to run peerup itself. */
  self: string[]
  /** ssh's HostKeyAlias; the peer's name by default (`name@network` in a further network). */
  hostKeyAlias?: string
}

/**
 * `[user@]peer[@network]` (docs/cli.md "Several networks"): the last `@` part is a network when it
 * names one of the node's (`isNetwork`) and — with no user before the peer — is not itself the
 * name of a peer of the network commands use (`isPeer`); otherwise it is the peer, as ssh reads
 * `user@host`. `peerup ssh home@work`, `peerup ssh me@home@work`, `peerup ssh me@home`.
 */
export function sshNetworkTarget(
  target: string,
  known: { isNetwork: (name: string) => boolean; isPeer: (name: string) => boolean },
): { user: string | undefined; peer: string; network: string | undefined } {
  const at = target.lastIndexOf('@')
  const last = target.slice(at + 1)
  if (at > 0 && known.isNetwork(last)) {
    const rest = sshTarget(target.slice(0, at))
    if (rest.user !== undefined || !known.isPeer(last)) {
      return { ...rest, network: last }
    }
  }
  return { ...sshTarget(target), network: undefined }
}

/** `[user@]peer` split at its last `@` (a user name may hold one). */
export function sshTarget(target: string): { user: string | undefined; peer: string } {
  const at = target.lastIndexOf('@')
  return at >= 0
    ? { user: target.slice(0, at), peer: target.slice(at + 1) }
    : { user: undefined, peer: target }
}

/**
 * Builds ssh's argv: leading options in `args` go before the destination, the rest is the
 * remote command. The peer's name doubles as the HostKeyAlias, so known_hosts keys the host
 * by its peerup name whatever path reaches it.
 */
export function sshArgv(options: SshArgvOptions): string[] {
  const { user, peer } = sshTarget(options.target)
  const before: string[] = []
  let i = 0
  while (i < options.args.length) {
    const arg = options.args[i] as string
    if (arg === '--') {
      i++
      break
    }
    if (!arg.startsWith('-') || arg === '-') {
      break
    }
    const n = optionWords(options.args, i)
    before.push(...options.args.slice(i, i + n))
    i += n
  }
  const proxy = [...options.self, '--config', options.configFile, 'proxy', '--stdio', peer, 'ssh']
    .map(shellQuote)
    .join(' ')
  return [
    '-o',
    `ProxyCommand=${proxy}`,
    '-o',
    `HostKeyAlias=${options.hostKeyAlias ?? peer}`,
    ...before,
    user === undefined ? peer : `${user}@${peer}`,
    ...options.args.slice(i),
  ]
}
