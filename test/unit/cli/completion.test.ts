/**
 * Shell completion and the man page: what `peerup __complete` offers after the words typed (run
 * in-process, table-driven), then the real scripts loaded into real bash, zsh and fish, each
 * asked to complete a peer name through the executable; and the page rendered by groff and man
 * without a warning. A shell or tool that is not installed is skipped, saying which package has it.
 */

import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { initNodeDir, runCli, tempDir } from '../../helpers/cli.ts'

const PEER = '12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN'
const UNNAMED = '12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK'
const ENTRY = path.resolve(import.meta.dirname, '../../../bin/peerup.js')

/** Whether `cmd` runs here; the tests that need it skip otherwise. */
function installed(cmd: string, args = ['--version']): boolean {
  return spawnSync(cmd, args, { stdio: 'ignore' }).status === 0
}

/** The candidates `__complete` prints for `words` (its first line, the directive, apart). */
async function completeWords(words: string[], home: string, env: Record<string, string> = {}) {
  const r = await runCli(['__complete', '--', ...words], home, { env })
  const [directive = '', ...lines] = r.stdout.split('\n').filter((l) => l !== '')
  return { ...r, directive, words: lines.map((l) => l.split('\t')[0]) }
}

/** A scratch directory for a describe block, removed after it. */
function scratch(): { dir: () => Promise<string> } {
  const cleanups: Array<() => Promise<void>> = []
  after(() => Promise.all(cleanups.map((fn) => fn())))
  return { dir: () => tempDir({ after: (fn) => cleanups.push(fn) }) }
}

describe('peerup __complete', () => {
  const scratchDir = scratch()
  let root: string
  let config: string
  const env = (): Record<string, string> => ({ PEERUP_HOME: path.dirname(config) })

  before(async () => {
    root = await scratchDir.dir()
    config = await initNodeDir(root)
    const steps = [
      ['auth', 'add', PEER, '--name', 'zebra-home'],
      ['auth', 'add', UNNAMED, '--comment', 'the laptop'],
      ['service', 'add', 'ssh', 'localhost:22'],
      ['proxy', 'add', 'home-ssh', 'zebra-home', 'ssh', '0'],
      ['network', 'add', 'lab'],
    ]
    for (const args of steps) {
      const r = await runCli([...args, '--config', config], root)
      assert.equal(r.code, 0, r.stderr)
    }
  })

  const cases: Array<[string, string[], string[], string[]?]> = [
    ['commands at the top', [''], ['ping', 'daemon', 'completion', 'man'], ['__complete']],
    ['a command by its start', ['pi'], ['ping'], ['proxy']],
    ['peer names for <peer>', ['ping', ''], ['zebra-home', UNNAMED]],
    ['a peer name by its start', ['ping', 'zeb'], ['zebra-home'], [UNNAMED]],
    ['the peer after user@', ['ssh', 'me@zeb'], ['me@zebra-home']],
    ['a subcommand or a peer after proxy', ['proxy', ''], ['add', 'list', 'zebra-home']],
    ['services after the peer', ['proxy', 'zebra-home', ''], ['ssh']],
    ['the services of the config', ['service', 'remove', ''], ['ssh']],
    ['the proxies of the config', ['proxy', 'disable', ''], ['home-ssh']],
    ['no name for a new proxy', ['proxy', 'add', ''], [], ['home-ssh', 'zebra-home']],
    ['peers for --peer', ['daemon', 'connect', '--peer', ''], ['zebra-home']],
    [
      'flags of the command, and the global ones',
      ['ping', '--'],
      ['--count', '--until-direct', '--config', '--json'],
      ['--stdio'],
    ],
    ['a value in the same word as its flag', ['daemon', 'connect', '--peer=zeb'], ['--peer=zebra-home']],
    ['the shells', ['completion', ''], ['bash', 'zsh', 'fish']],
    ['daemon subcommands', ['daemon', 'st'], ['status', 'stop', 'start'], ['connect']],
    ['network subcommands', ['network', ''], ['list', 'add', 'remove', 'use', 'start']],
    ['the networks of the node', ['network', 'use', ''], ['default', 'lab']],
    ['networks for --network', ['ping', '--network', ''], ['default', 'lab']],
  ]
  for (const [what, words, want, notWant = []] of cases) {
    it(what, async () => {
      const r = await completeWords(words, root, env())
      assert.equal(r.code, 0, r.stderr)
      assert.equal(r.stderr, '')
      assert.equal(r.directive, 'words')
      for (const w of want) {
        assert.ok(r.words.includes(w), `${words.join(' ')}: ${w} not in ${r.words.join(' ')}`)
      }
      for (const w of notWant) {
        assert.ok(!r.words.includes(w), `${words.join(' ')}: ${w} offered`)
      }
    })
  }

  it('takes the names from the --config on the line', async () => {
    const r = await completeWords(['--config', config, 'ping', ''], root)
    assert.deepEqual(r.words, ['zebra-home', UNNAMED])
  })

  it('leaves files and directories to the shell', async () => {
    assert.equal((await completeWords(['config', 'apply', ''], root)).directive, 'files')
    assert.equal((await completeWords(['ping', '--config', ''], root)).directive, 'files')
    assert.equal((await completeWords(['init', '--dir', ''], root)).directive, 'dirs')
  })

  it('is silent when there is no config, or a broken one', async (t) => {
    const empty = await tempDir(t)
    const none = await completeWords(['ping', ''], empty)
    assert.deepEqual([none.code, none.stdout, none.stderr], [0, 'words\n', ''])
    const broken = path.join(empty, 'config.yaml')
    await fs.writeFile(broken, 'names: [this is: not yaml\n')
    for (const words of [
      ['--config', broken, 'ping', ''],
      ['--config', path.join(empty, 'missing.yaml'), 'ssh', 'x@'],
    ]) {
      const r = await completeWords(words, empty)
      assert.deepEqual([r.code, r.stdout, r.stderr], [0, 'words\n', ''])
    }
    // Still the commands, whatever the config.
    assert.ok((await completeWords(['--config', broken, 'pi'], empty)).words.includes('ping'))
  })

  it('refuses a shell it has no script for, in one line', async () => {
    const r = await runCli(['completion', 'tcsh'], root)
    assert.equal(r.code, 2)
    assert.equal(r.stdout, '')
    assert.equal(r.stderr, 'peerup: no completion for shell "tcsh" — give one of bash, zsh, fish\n')
  })
})

describe('the completion scripts in real shells', () => {
  const scratchDir = scratch()
  let root: string
  let shellEnv: NodeJS.ProcessEnv

  before(async () => {
    root = await scratchDir.dir()
    const config = await initNodeDir(root)
    assert.equal(
      (await runCli(['auth', 'add', PEER, '--name', 'zebra-home', '--config', config], root)).code,
      0,
    )
    // `peerup` on PATH, as a user has it: the sources run by this Node.
    const bin = path.join(root, 'bin')
    await fs.mkdir(bin)
    await fs.writeFile(
      path.join(bin, 'peerup'),
      `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(ENTRY)} "$@"\n`,
      { mode: 0o755 },
    )
    shellEnv = {
      PATH: `${bin}:${process.env.PATH ?? '/usr/bin:/bin'}`,
      HOME: root,
      PEERUP_HOME: path.dirname(config),
    }
  })

  /** Runs `script` in `shell` (`args` before it) and returns its output, failing on any stderr. */
  const inShell = (shell: string, args: string[], script: string): string => {
    const r = spawnSync(shell, [...args, script], { env: shellEnv, encoding: 'utf8', timeout: 60_000 })
    assert.equal(r.status, 0, `${shell} failed: ${r.stderr}`)
    assert.equal(r.stderr, '', `${shell} wrote to stderr`)
    return r.stdout
  }

  /** Sets what bash sets before it calls a completion function, for `line` (the cursor at its end). */
  const bashLine = (line: string, words: string[]): string =>
    `COMP_LINE=${JSON.stringify(line)}; COMP_POINT=\${#COMP_LINE}; COMP_WORDS=(${words.map((w) => JSON.stringify(w)).join(' ')}); COMP_CWORD=${words.length - 1}`

  it('bash: the script loads, and TAB offers the peer, flags and subcommands', (t) => {
    if (!installed('bash')) {
      t.skip('bash is not installed (Debian package bash)')
      return
    }
    const out = inShell(
      'bash',
      ['--norc', '--noprofile', '-c'],
      `source <(peerup completion bash) || exit 1
complete -p peerup
${bashLine('peerup ping zeb', ['peerup', 'ping', 'zeb'])}; _peerup; echo "ping: \${COMPREPLY[*]}"
${bashLine('peerup daemon dis', ['peerup', 'daemon', 'dis'])}; _peerup; echo "daemon: \${COMPREPLY[*]}"
${bashLine('peerup ssh me@zeb', ['peerup', 'ssh', 'me', '@', 'zeb'])}; _peerup; echo "ssh: \${COMPREPLY[*]}"
${bashLine('peerup daemon connect --peer=zeb', ['peerup', 'daemon', 'connect', '--peer', '=', 'zeb'])}; _peerup; echo "flag=: \${COMPREPLY[*]}"
unset COMP_LINE; COMP_WORDS=(peerup traceroute ''); COMP_CWORD=2; _peerup; echo "words only: \${COMPREPLY[*]}"`,
    )
    assert.match(out, /^complete -F _peerup peerup$/m)
    assert.match(out, /^ping: zebra-home$/m)
    assert.match(out, /^daemon: disconnect$/m)
    // bash breaks words at @ and = (COMP_WORDBREAKS): it replaces only what follows them.
    assert.match(out, /^ssh: zebra-home$/m)
    assert.match(out, /^flag=: zebra-home$/m)
    assert.match(out, /^words only: zebra-home$/m)
  })

  it('bash with bash-completion loaded: the same, through its word splitting', (t) => {
    const lib = '/usr/share/bash-completion/bash_completion'
    if (!installed('bash') || spawnSync('test', ['-r', lib]).status !== 0) {
      t.skip('bash-completion is not installed (Debian package bash-completion)')
      return
    }
    const out = inShell(
      'bash',
      ['--norc', '--noprofile', '-c'],
      `source ${lib}; source <(peerup completion bash) || exit 1
${bashLine('peerup ping zeb', ['peerup', 'ping', 'zeb'])}; _peerup; echo "ping: \${COMPREPLY[*]}"
${bashLine('peerup ssh me@zeb', ['peerup', 'ssh', 'me@zeb'])}; _peerup; echo "ssh: \${COMPREPLY[*]}"
${bashLine('peerup daemon connect --peer=zeb', ['peerup', 'daemon', 'connect', '--peer', '=', 'zeb'])}; _peerup; echo "flag=: \${COMPREPLY[*]}"`,
    )
    assert.match(out, /^ping: zebra-home$/m)
    // bash-completion takes @ out of COMP_WORDBREAKS: the whole word is replaced.
    assert.match(out, /^ssh: me@zebra-home$/m)
    assert.match(out, /^flag=: zebra-home$/m)
  })

  it('zsh: the script loads after compinit, and TAB in an interactive zsh completes the peer', (t) => {
    if (!installed('zsh')) {
      t.skip('zsh is not installed (Debian package zsh)')
      return
    }
    // A real zsh on a pseudo-terminal (zsh/zpty): the line typed, TAB, and what zsh redraws.
    const out = inShell(
      'zsh',
      ['-f', '-c'],
      `zmodload zsh/zpty || exit 1
zpty z 'zsh -f -i'
zpty -w z 'PS1="> "; autoload -U compinit && compinit -u -D && source <(peerup completion zsh) && print "LOADED $_comps[peerup]"RE""ADY'
zpty -r z loaded '*READY*'
print -r -- "\${loaded//[$'\r\n']/ }"
zpty -w -n z $'peerup ping zeb\t'
zpty -r z line '*zebra-home*'
print -r -- "completed: \${line//[^[:print:]]/}"
zpty -d z`,
    )
    assert.match(out, /LOADED _peerupREADY/)
    assert.match(out, /completed: .*peerup ping zebra-home/)
  })

  it('fish: the script loads, and `complete -C` offers the peer', (t) => {
    if (!installed('fish')) {
      t.skip('fish is not installed (Debian package fish)')
      return
    }
    const out = inShell(
      'fish',
      ['--no-config', '-c'],
      `peerup completion fish | source; complete -C 'peerup ping zeb'`,
    )
    assert.match(out, new RegExp(`^zebra-home\\t${PEER}$`, 'm'))
  })
})

describe('peerup man', () => {
  it('renders with groff and man without a warning, every command in it', async (t) => {
    const root = await tempDir(t)
    const r = await runCli(['man'], root)
    assert.equal(r.code, 0, r.stderr)
    assert.match(r.stdout, /^\.TH PEERUP 1 /)
    const page = path.join(root, 'peerup.1')
    await fs.writeFile(page, r.stdout)
    if (!installed('groff')) {
      t.skip('groff is not installed (Debian package groff-base)')
      return
    }
    // -P-cbou: plain text, without the overstrikes that make bold and underline.
    const groff = spawnSync('groff', ['-man', '-Tutf8', '-ww', '-P-cbou', page], { encoding: 'utf8' })
    assert.equal(groff.status, 0)
    assert.equal(groff.stderr, '', 'groff warned')
    for (const text of [
      'peerup daemon connections',
      'peerup completion',
      'peerup proxy add',
      'EXIT STATUS',
    ]) {
      assert.ok(groff.stdout.includes(text), `${text} not on the page`)
    }
    if (installed('man', ['--version'])) {
      const man = spawnSync('man', ['--warnings', '-l', page], {
        encoding: 'utf8',
        env: { ...process.env, MANPAGER: 'cat', MANWIDTH: '100' },
      })
      assert.equal(man.status, 0)
      assert.equal(man.stderr, '', 'man warned')
    }
  })
})
