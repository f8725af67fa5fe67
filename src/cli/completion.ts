/**
 * Shell completion from the command tree itself: `peerup completion bash|zsh|fish` prints a small
 * script that, on each TAB, asks the executable (`peerup __complete -- <words>`) what may come
 * next — subcommands, flags, and the peer, service and proxy names of the user's config as they
 * are at that moment, so a name added later completes without a new script
 * (docs/decisions/0010-completion-and-man-page.md). What it prints: a first line saying what to
 * complete (`words`, `files` or `dirs`), then one candidate a line, `word<TAB>description`.
 *
 * @packageDocumentation
 */

import * as path from 'node:path'
import type { Argument, Command, Option } from 'commander'
import { loadAuthorizedKeys } from '../auth/authorized-keys.ts'
import { loadNodeConfig, resolveIn } from '../config/load.ts'
import { listNetworks, locateNetworkConfig } from '../config/networks.ts'
import { findConfigFile } from '../config/paths.ts'
import type { NodeConfig } from '../config/schema.ts'
import type { Env } from '../env.ts'

/** The shells `peerup completion` writes a script for. */
export const SHELLS = ['bash', 'zsh', 'fish'] as const

export type Shell = (typeof SHELLS)[number]

/** What a value on the command line is, for what to offer in its place. */
type Kind = 'peer' | 'service' | 'proxy' | 'relay' | 'network' | 'file' | 'dir' | 'shell' | 'level' | 'none'

/** What the shell is to complete: these words, or file or directory names (the shell knows those). */
export interface Completion {
  directive: 'words' | 'files' | 'dirs'
  /** `word` or `word\tdescription`, already narrowed to those starting with what was typed. */
  candidates: string[]
}

/** Where the config is looked for when the command line names none. */
export interface CompletionContext {
  env: Env
  cwd: string
}

/** Values of flags whose name says what they hold (`--peer home`, `--config FILE`). */
const OPTION_KINDS: Record<string, Kind> = {
  config: 'file',
  dir: 'dir',
  peer: 'peer',
  allow: 'peer',
  service: 'service',
  network: 'network',
  logLevel: 'level',
}

const LOG_LEVELS = ['debug', 'info', 'warn', 'error']

/** Names (`<name>`) that stand for something that exists, by the noun and verb they follow. */
const NAME_KINDS: Record<string, Kind> = {
  'service remove': 'service',
  'service enable': 'service',
  'service disable': 'service',
  'proxy remove': 'proxy',
  'proxy enable': 'proxy',
  'proxy disable': 'proxy',
  'network remove': 'network',
  'network use': 'network',
  'network start': 'network',
}

/** What the argument `arg` of `cmd` holds. */
function argumentKind(cmd: Command, arg: Argument): Kind {
  switch (arg.name()) {
    case 'peer':
      return 'peer'
    case 'service':
      return 'service'
    case 'file':
      return 'file'
    case 'shell':
      return 'shell'
    case 'multiaddr-or-peer-id':
      return 'relay'
    case 'name':
      return NAME_KINDS[`${cmd.parent?.name()} ${cmd.name()}`] ?? 'none'
    default:
      return 'none'
  }
}

/** The option of `cmd` (or of a command above it) that `flag` names. */
function findOption(cmd: Command, flag: string): Option | undefined {
  for (let c: Command | null = cmd; c !== null; c = c.parent) {
    const found = c.options.find((o) => o.long === flag || o.short === flag)
    if (found !== undefined) {
      return found
    }
  }
  return undefined
}

/** Where the words before the one being completed left the parse. */
interface Position {
  cmd: Command
  /** Positional arguments of `cmd` already given. */
  args: number
  /** An option whose value is the word being completed. */
  pending: Option | undefined
  /** `--config` as given on the command line. */
  config: string | undefined
}

/** Walks `words` down the command tree, as commander would parse them. */
function locate(program: Command, words: string[]): Position {
  const at: Position = { cmd: program, args: 0, pending: undefined, config: undefined }
  let operands = false
  for (const word of words) {
    if (at.pending !== undefined) {
      if (at.pending.long === '--config') {
        at.config = word
      }
      at.pending = undefined
    } else if (word === '--' && !operands) {
      operands = true
    } else if (word.startsWith('-') && word.length > 1 && !operands) {
      const [flag = word, value] = word.split(/=(.*)/s)
      const option = findOption(at.cmd, flag)
      if (option?.long === '--config' && value !== undefined) {
        at.config = value
      }
      // A flag that takes a value takes the next word, unless it came with `=`.
      at.pending = option?.required === true && value === undefined ? option : undefined
    } else {
      const sub = at.args === 0 ? subcommand(at.cmd, word) : undefined
      if (sub === undefined) {
        at.args++
      } else {
        at.cmd = sub
      }
    }
  }
  return at
}

function subcommand(cmd: Command, word: string): Command | undefined {
  return cmd.commands.find((c) => c.name() === word || c.aliases().includes(word))
}

/** Subcommands a person may type (not `__complete`), and the `help` commander adds. */
function visibleCommands(cmd: Command): Command[] {
  return cmd.createHelp().visibleCommands(cmd)
}

/** The flags `cmd` takes, its own and the global ones, each with its description. */
function flagCandidates(cmd: Command): string[] {
  const help = cmd.createHelp()
  const options = [...help.visibleOptions(cmd), ...help.visibleGlobalOptions(cmd)]
  const seen = new Set<string>()
  const out: string[] = []
  for (const o of options) {
    for (const flag of [o.long, o.short]) {
      if (flag !== undefined && !seen.has(flag)) {
        seen.add(flag)
        out.push(`${flag}\t${o.description}`)
      }
    }
  }
  return out
}

/**
 * What may take the place of the last word of `words` (the words after the program's name, the
 * last one being completed, possibly empty). Never throws: a config that cannot be read gives no
 * names, and the rest still completes.
 */
export async function complete(
  program: Command,
  words: string[],
  ctx: CompletionContext,
): Promise<Completion> {
  const typed = words.at(-1) ?? ''
  const at = locate(program, words.slice(0, -1))
  const names = (kind: Kind): Promise<Completion> => valuesOf(kind, at.config, ctx)
  // What comes before the value being completed: `--peer=` (a flag's value in the same word), or
  // `me@` (`peerup ssh me@ho`: the peer comes after the user).
  const [flag = '', value] = typed.startsWith('--') ? typed.split(/=(.*)/s) : ['']
  const option = value === undefined ? undefined : findOption(at.cmd, flag)
  const prefix =
    option?.required === true
      ? `${flag}=`
      : typed.includes('@') && !typed.startsWith('-')
        ? typed.slice(0, typed.indexOf('@') + 1)
        : ''
  const current = typed.slice(prefix.length)
  let result: Completion
  if (at.pending !== undefined || option?.required === true) {
    const name = (at.pending ?? option)?.attributeName() ?? ''
    result = await names(Object.hasOwn(OPTION_KINDS, name) ? (OPTION_KINDS[name] ?? 'none') : 'none')
    if (prefix !== '' && result.directive !== 'words') {
      // The shell completes file names in a word of their own, not after `--config=`.
      result = { directive: 'words', candidates: [] }
    }
  } else if (current.startsWith('-')) {
    result = { directive: 'words', candidates: flagCandidates(at.cmd) }
  } else {
    const subs = at.args === 0 ? visibleCommands(at.cmd).map((c) => `${c.name()}\t${c.description()}`) : []
    const declared = at.cmd.registeredArguments
    const arg = declared[at.args] ?? (declared.at(-1)?.variadic === true ? declared.at(-1) : undefined)
    const values = arg === undefined ? undefined : await names(argumentKind(at.cmd, arg))
    result =
      values !== undefined && values.directive !== 'words' && subs.length === 0
        ? values
        : { directive: 'words', candidates: [...subs, ...(values?.candidates ?? [])] }
  }
  return {
    directive: result.directive,
    candidates: result.candidates.filter((c) => c.startsWith(current)).map((c) => prefix + c),
  }
}

/** The candidates for a value of `kind`, the names read from the config (nothing when it cannot be read). */
async function valuesOf(kind: Kind, config: string | undefined, ctx: CompletionContext): Promise<Completion> {
  const words = (candidates: string[]): Completion => ({ directive: 'words', candidates })
  switch (kind) {
    case 'file':
      return { directive: 'files', candidates: [] }
    case 'dir':
      return { directive: 'dirs', candidates: [] }
    case 'shell':
      return words([...SHELLS])
    case 'level':
      return words(LOG_LEVELS)
    case 'none':
      return words([])
  }
  const loaded = await loadConfigQuietly(config, ctx)
  if (loaded === undefined) {
    return words([])
  }
  const { config: c, dir, file } = loaded
  switch (kind) {
    case 'peer':
      return words(await peerCandidates(c, dir))
    case 'service':
      return words(Object.entries(c.services).map(([name, s]) => `${name}\t${s.local_address}`))
    case 'proxy':
      return words(Object.entries(c.proxies).map(([name, p]) => `${name}\t${p.peer}/${p.service}`))
    case 'relay':
      return words(c.relay.addresses)
    case 'network':
      return words(
        (await listNetworks(locateNetworkConfig(file).mainConfigFile).catch(() => [])).map(
          (n) => `${n.name}\t${n.main ? 'main network' : n.dir}`,
        ),
      )
  }
}

/** Names under `names:`, then the authorized peers that have none, by peer id. */
async function peerCandidates(config: NodeConfig, dir: string): Promise<string[]> {
  const named = Object.entries(config.names).map(([name, id]) => `${name}\t${id}`)
  const withName = new Set(Object.values(config.names))
  try {
    const keys = await loadAuthorizedKeys(resolveIn(dir, config.security.authorized_keys_file))
    const unnamed = keys
      .entries()
      .filter((e) => !withName.has(e.peerId))
      .map((e) => (e.comment === undefined ? e.peerId : `${e.peerId}\t${e.comment}`))
    return [...named, ...unnamed]
  } catch {
    return named
  }
}

/** The node config the command line would use, or undefined when there is none or it is broken. */
async function loadConfigQuietly(
  explicit: string | undefined,
  ctx: CompletionContext,
): Promise<{ config: NodeConfig; dir: string; file: string } | undefined> {
  try {
    // The shell passes `~/x` as typed: it expands a tilde only in the words it runs.
    const given = explicit?.startsWith('~/') === true ? path.join(ctx.env.home, explicit.slice(2)) : explicit
    const file = await findConfigFile(given, ctx.env, ctx.cwd, 'node')
    return await loadNodeConfig(file)
  } catch {
    return undefined
  }
}

/** The lines `peerup __complete` prints for `c`. */
export function completionLines(c: Completion): string {
  return [c.directive, ...c.candidates].map((l) => `${l}\n`).join('')
}

/**
 * The script `peerup completion <shell>` prints. Each one asks `<the command as typed> __complete`
 * on every TAB and never shows what that prints on stderr: a broken config gives no names, never
 * an error in the middle of the line being typed.
 */
export function completionScript(shell: Shell, program: string): string {
  const fn = `_${program.replace(/[^A-Za-z0-9_]/g, '_')}`
  return SCRIPTS[shell](program, fn)
}

const SCRIPTS: Record<Shell, (program: string, fn: string) => string> = {
  bash: (program, fn) => `# bash completion for ${program}. Load it with:
#   source <(${program} completion bash)
# or save it as /etc/bash_completion.d/${program} (or ~/.local/share/bash-completion/completions/${program}).
${fn}() {
  local cur words cword
  if declare -F _get_comp_words_by_ref >/dev/null 2>&1; then
    # bash-completion: host:port, --flag=value and user@peer stay one word.
    _get_comp_words_by_ref -n =:@ cur words cword
  elif [[ -n \${COMP_LINE-} ]]; then
    # The line as typed, split at blanks only, for the same reason.
    local typed=\${COMP_LINE:0:COMP_POINT}
    read -ra words <<< "$typed"
    [[ \${#words[@]} -eq 0 || $typed == *[[:space:]] ]] && words+=('')
    cword=$((\${#words[@]} - 1))
    cur=\${words[cword]}
  else
    cur=\${COMP_WORDS[COMP_CWORD]}
    words=("\${COMP_WORDS[@]}")
    cword=$COMP_CWORD
  fi
  local exe=\${words[0]}
  [[ $exe == '~/'* ]] && exe=$HOME/\${exe#'~/'}
  local -a lines
  mapfile -t lines < <("$exe" __complete -- "\${words[@]:1:cword-1}" "$cur" 2>/dev/null)
  COMPREPLY=()
  case \${lines[0]-} in
    files) compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
    dirs) compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -d -- "$cur") ;;
    words)
      local line
      for line in "\${lines[@]:1}"; do
        COMPREPLY+=("\${line%%$'\\t'*}")
      done
      ;;
  esac
  # bash replaces only the part of the word after its last break character (: = …): drop what comes before.
  local keep=\${cur##*[$COMP_WORDBREAKS]}
  local drop=\${cur:0:\${#cur}-\${#keep}}
  if [[ -n $drop ]]; then
    local i
    for i in "\${!COMPREPLY[@]}"; do
      COMPREPLY[i]=\${COMPREPLY[i]#"$drop"}
    done
  fi
  return 0
}
complete -F ${fn} ${program}
`,
  zsh: (program, fn) => `#compdef ${program}
# zsh completion for ${program}. Load it with (after compinit):
#   source <(${program} completion zsh)
# or save it as ${fn} in a directory of $fpath.
${fn}() {
  local -a lines candidates
  local line exe=\${words[1]}
  [[ $exe == '~/'* ]] && exe=$HOME/\${exe#'~/'}
  lines=("\${(@f)$("$exe" __complete -- "\${(@)words[2,CURRENT]}" 2>/dev/null)}")
  case \${lines[1]} in
    files) _files; return ;;
    dirs) _files -/; return ;;
    words) ;;
    *) return 1 ;;
  esac
  for line in "\${(@)lines[2,-1]}"; do
    [[ -n $line ]] || continue
    if [[ $line == *$'\\t'* ]]; then
      candidates+=("\${\${line%%$'\\t'*}//:/\\\\:}:\${line#*$'\\t'}")
    else
      candidates+=("\${line//:/\\\\:}")
    fi
  done
  (( \${#candidates} )) && _describe -t values ${program} candidates
}
if [[ \${funcstack[1]-} == ${fn} ]]; then
  ${fn} "$@"
else
  compdef ${fn} ${program}
fi
`,
  fish: (program, fn) => `# fish completion for ${program}. Load it with:
#   ${program} completion fish | source
# or save it as ~/.config/fish/completions/${program}.fish
function _${fn}
    set -l words (commandline -opc)
    set -l current (commandline -ct)
    set -l out ($words[1] __complete -- $words[2..-1] $current 2>/dev/null)
    or return
    switch "$out[1]"
        case files
            __fish_complete_path $current
        case dirs
            __fish_complete_directories $current
        case words
            printf '%s\\n' $out[2..-1]
    end
end
complete -c ${program} -f -a '(_${fn})'
`,
}
