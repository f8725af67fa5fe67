/**
 * `peerup ssh-config`: the `Host` blocks that make plain `ssh home` (and scp, rsync, git, editors'
 * remote SSH) go through peerup, and their installation into ~/.ssh/config between two marker
 * lines, leaving every other byte of the file as it was.
 *
 * The managed section goes at the end of the file, never the top: ssh_config options that come
 * before the first `Host` line apply to every host, and a `Host` block put above them would take
 * them over (the way a generated block broke scp for cloudflared users, cloudflare/cloudflared#574).
 * At the end, a block can only add to what the user wrote; ssh takes the first value it meets for
 * each option, so a user's own `Host home` above ours still wins, as they would expect.
 *
 * @packageDocumentation
 */

import * as fs from 'node:fs/promises'
import { dirname } from 'node:path'
import { PEERUP_DOMAIN } from '../api/names.ts'
import { PeerupError, UsageError } from '../errors.ts'
import { atomicWriteFile } from '../util/fs.ts'

/** The first line of the managed section. */
export const SSH_CONFIG_BEGIN =
  '# >>> peerup ssh-config >>> (written by `peerup ssh-config --install`; edits inside are replaced)'
/** The last line of the managed section. */
export const SSH_CONFIG_END = '# <<< peerup ssh-config <<<'

/** What {@link renderSshConfig} writes. */
export interface SshConfigInput {
  /** The peer names (config.yaml `names:`), one `Host` block each. */
  names: readonly string[]
  /**
   * The command that runs peerup, as ssh should start it: an absolute path, or the words of one
   * (Node and the dev entry, src/util/self.ts).
   */
  exe: string | readonly string[]
  /** The node's config file when it is not the default one: baked into each ProxyCommand. */
  configFile?: string | undefined
}

/** A name ssh can take as a `Host` pattern and a shell as one word: what config.yaml allows. */
const HOST_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]*$/

/**
 * The managed section, markers included: a `Host <name>` block per name with peerup as its
 * ProxyCommand, then `Host *.peerup` for names added later (`ssh home.peerup`).
 */
export function renderSshConfig(input: SshConfigInput): string {
  const command = [
    ...(typeof input.exe === 'string' ? [input.exe] : input.exe).map(path),
    ...(input.configFile === undefined ? [] : ['--config', path(input.configFile)]),
  ]
  const lines = [SSH_CONFIG_BEGIN]
  for (const name of [...new Set(input.names)].sort()) {
    if (!HOST_NAME_RE.test(name)) {
      throw new UsageError(`the name ${JSON.stringify(name)} cannot be an ssh Host`, {
        hint: 'rename it under names: in config.yaml to letters, digits, dots, dashes and underscores',
      })
    }
    lines.push(`Host ${name}`, `  ProxyCommand ${[...command, 'proxy', '--stdio', name, 'ssh'].join(' ')}`)
  }
  // %n is the name as typed on the command line (home.peerup); peerup drops the domain.
  lines.push(
    `Host *.${PEERUP_DOMAIN}`,
    `  ProxyCommand ${[...command, 'proxy', '--stdio', '%n', 'ssh'].join(' ')}`,
    SSH_CONFIG_END,
  )
  return `${lines.join('\n')}\n`
}

/**
 * `text` with its managed section replaced by `section` (or `section` appended, after one empty
 * line, when it has none). Everything outside the markers is kept byte for byte, line endings
 * included. A file whose markers are broken (a begin without an end, two sections) is refused.
 */
export function withSshConfigSection(text: string, section: string): string {
  const begins = markerLines(text, SSH_CONFIG_BEGIN)
  const ends = markerLines(text, SSH_CONFIG_END)
  if (begins.length === 0 && ends.length === 0) {
    const sep = text === '' ? '' : text.endsWith('\n') ? '\n' : '\n\n'
    return `${text}${sep}${section}`
  }
  if (begins.length !== 1 || ends.length !== 1 || (ends[0] as Marker).start < (begins[0] as Marker).start) {
    throw new PeerupError(
      'the peerup section of the ssh config is broken: its marker lines are not one begin and one end',
      {
        hint: `remove the lines from "${SSH_CONFIG_BEGIN.slice(0, 27)}…" to "${SSH_CONFIG_END}" by hand and run the command again`,
      },
    )
  }
  const begin = begins[0] as Marker
  const end = ends[0] as Marker
  return `${text.slice(0, begin.start)}${section}${text.slice(end.end)}`
}

interface Marker {
  /** Offset of the line's first character. */
  start: number
  /** Offset just after the line's end of line (or the end of the text). */
  end: number
}

/** The lines of `text` that are `marker` (trailing blanks and a CR allowed). */
function markerLines(text: string, marker: string): Marker[] {
  const out: Marker[] = []
  let start = 0
  while (start < text.length) {
    const nl = text.indexOf('\n', start)
    const end = nl === -1 ? text.length : nl + 1
    if (text.slice(start, nl === -1 ? end : nl).trimEnd() === marker) {
      out.push({ start, end })
    }
    start = end
  }
  return out
}

/**
 * Writes the managed section into the ssh config `file` (made, with its folder, when missing),
 * atomically; a file that is a symlink (a dotfiles checkout) is written where it points. Returns
 * whether anything changed: a second run with the same names writes nothing.
 */
export async function installSshConfig(
  file: string,
  section: string,
): Promise<{ changed: boolean; file: string }> {
  const target = await fs.realpath(file).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') {
      return file
    }
    throw err
  })
  const before = await fs.readFile(target, 'utf8').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') {
      return undefined
    }
    throw new PeerupError(`cannot read ${target}: ${err.message}`, { hint: 'check its permissions' })
  })
  const after = withSshConfigSection(before ?? '', section)
  if (after === before) {
    return { changed: false, file: target }
  }
  // ssh refuses a config that others can write; a new one gets 0600 in a 0700 folder.
  await fs.mkdir(dirname(target), { recursive: true, mode: 0o700 })
  await atomicWriteFile(target, after)
  return { changed: true, file: target }
}

/**
 * A path as one word of ssh's ProxyCommand: its `%` doubled (ssh expands `%` tokens there first),
 * then as is when the shell that runs it would take it as one word, else single-quoted.
 */
function path(file: string): string {
  const word = file.replaceAll('%', '%%')
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`
}
