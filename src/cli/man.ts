/**
 * The manual page, peerup(1), in roff, written from the command tree at run time: every command
 * with its arguments, flags and their descriptions, as `--help` shows them, and the contract that
 * holds for all of them (docs/cli.md). The executable is the one file peerup ships, so its page
 * comes out of it (`peerup man`) rather than beside it (docs/decisions/0010-completion-and-man-page.md).
 *
 * @packageDocumentation
 */

import type { Argument, Command, Help, Option } from 'commander'

/** What the page's header names. */
export interface ManInfo {
  /** The program's name, `peerup`. */
  name: string
  version: string
  /** `YYYY-MM-DD…` when the build recorded it; anything else leaves the page undated. */
  date?: string
}

/**
 * Text as roff reads it: a backslash escaped, a line that would start with a control character
 * made plain, and every character outside ASCII as its Unicode escape, so that `groff` renders it
 * without being told the input's encoding.
 */
export function roffText(text: string): string {
  return text
    .replace(/\\/g, '\\e')
    .replace(
      /[^\x20-\x7e\n]/gu,
      (c) => `\\[u${(c.codePointAt(0) ?? 0x3f).toString(16).toUpperCase().padStart(4, '0')}]`,
    )
    .replace(/^([.'])/gm, '\\&$1')
}

/** A flag or a command line, where `-` is a minus sign (what people copy), not a hyphen. */
function roffLiteral(text: string): string {
  return roffText(text).replace(/-/g, '\\-')
}

/** One command's section: `peerup proxy add [options] <name> …`, what it does, its arguments and flags. */
function commandSection(cmd: Command, help: Help): string[] {
  const lines = [`.SS "${roffLiteral(help.commandUsage(cmd)).replace(/"/g, '\\(dq')}"`]
  lines.push(roffText(cmd.description() || '(no description)'))
  const args = cmd.registeredArguments.filter((a: Argument) => a.description !== '')
  for (const a of args) {
    lines.push('.TP', `.I ${roffLiteral(a.name())}`, roffText(a.description))
  }
  const options = help.visibleOptions(cmd).filter((o: Option) => o.long !== '--help' && o.long !== '--json')
  for (const o of options) {
    const shown = o.negate || o.defaultValue === undefined ? '' : String(o.defaultValue)
    const dflt = shown === '' ? '' : ` (default: ${shown})`
    lines.push('.TP', `.B ${roffLiteral(o.flags)}`, roffText(`${o.description}${dflt}`))
  }
  return lines
}

/** Every command below `cmd` that a person may type, depth first. */
function commandsBelow(cmd: Command, help: Help): Command[] {
  return cmd.commands
    .filter((sub) => help.visibleCommands(cmd).includes(sub))
    .flatMap((sub) => [sub, ...commandsBelow(sub, help)])
}

/** The parts every command shares, from docs/cli.md. */
const CONTRACT = [
  '.SH OUTPUT',
  'Results go to standard output, and only results; progress, prompts and warnings go to standard error.',
  'With',
  '.B \\-\\-json',
  'a command that reports prints one JSON document, whose field names stay stable once released.',
  'An error is one line:',
  '.IR peerup ": what failed and why \\(em what to do" .',
  '.SH EXIT STATUS',
  '.TP',
  '.B 0',
  'success',
  '.TP',
  '.B 1',
  'the command failed',
  '.TP',
  '.B 2',
  'the command line was wrong (an unknown command or flag, a missing argument, a flag value that cannot be right)',
  '.SH ENVIRONMENT',
  '.TP',
  '.B PEERUP_HOME',
  'the directory holding config.yaml; searched first, and where',
  '.B init',
  'writes by default',
  '.TP',
  '.B PEERUP_DEBUG=1',
  'stack traces and causes with errors',
  '.TP',
  '.B PEERUP_CACHE_DIR',
  'where the executable unpacks its native addon (default $XDG_CACHE_HOME/peerup or ~/.cache/peerup)',
  '.TP',
  '.B PEERUP_INVITE_CODE',
  'the code',
  '.B join',
  'uses when none is given',
  '.TP',
  '.B NO_COLOR',
  'never colour output',
  '.SH FILES',
  'Without',
  '.BR \\-\\-config ,',
  'the first of $PEERUP_HOME/config.yaml, ./peerup.yaml, ~/.config/peerup/config.yaml and',
  '/etc/peerup/config.yaml that exists. Beside it: identity.key (the node\\(aqs private key, 0600),',
  'authorized_keys (the peers it trusts), peerup.sock and .daemon\\-cookie (the running daemon\\(aqs',
  'local API and its cookie).',
]

/** The whole page. */
export function manPage(program: Command, info: ManInfo): string {
  const help = program.createHelp()
  const upper = info.name.toUpperCase()
  const date = /^\d{4}-\d{2}-\d{2}/.test(info.date ?? '') ? (info.date ?? '').slice(0, 10) : ''
  const lines = [
    `.TH ${upper} 1 "${date}" "${info.name} ${roffText(info.version)}" "User Commands"`,
    '.SH NAME',
    `${info.name} \\- ${roffText(program.description())}`,
    '.SH SYNOPSIS',
    `.B ${info.name}`,
    '.I command',
    '.RI [ flags ]',
    '.SH DESCRIPTION',
    `.B ${info.name}`,
    'runs as a daemon on each machine, keeping reservations on your own relays, offering local TCP',
    'services (SSH first) to the peers in its authorized_keys, and forwarding local ports to theirs,',
    'directly when the NATs allow and through a relay otherwise. The same executable is the relay',
    '.RB ( "relay serve" ).',
    'Every command takes',
    '.B \\-h',
    'for its help.',
    '.SH GLOBAL OPTIONS',
  ]
  for (const o of help.visibleOptions(program)) {
    lines.push('.TP', `.B ${roffLiteral(o.flags)}`, roffText(o.description))
  }
  lines.push('.SH COMMANDS')
  for (const cmd of commandsBelow(program, help)) {
    lines.push(...commandSection(cmd, help))
  }
  lines.push(
    ...CONTRACT,
    '.SH SEE ALSO',
    '.BR ssh (1),',
    '.BR ssh_config (5);',
    'the project\\(aqs docs/cli.md and docs/local\\-api.md.',
  )
  return `${lines.join('\n')}\n`
}
