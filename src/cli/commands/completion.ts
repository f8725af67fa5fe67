/**
 * `peerup completion bash|zsh|fish` (a script for the shell), `peerup man` (the manual page, in
 * roff), and the hidden `peerup __complete` the scripts call on each TAB — all three read from
 * the command tree itself, so they never fall behind it (docs/decisions/0010-completion-and-man-page.md).
 *
 * @packageDocumentation
 */

import type { Command } from 'commander'
import { UsageError } from '../../errors.ts'
import { buildInfo } from '../../version.ts'
import { complete, completionLines, completionScript, SHELLS, type Shell } from '../completion.ts'
import type { CliContext } from '../context.ts'
import { manPage } from '../man.ts'
import type { CliCommand } from '../options.ts'

export function registerCompletion(program: CliCommand, ctx: CliContext): void {
  program
    .command('completion')
    .description(
      'print the shell completion script for bash, zsh or fish (`source <(peerup completion bash)`)',
    )
    .argument('<shell>', SHELLS.join(', '))
    .run(
      (_opts, shell: string) => {
        if (!(SHELLS as readonly string[]).includes(shell)) {
          throw new UsageError(`no completion for shell ${JSON.stringify(shell)}`, {
            hint: `give one of ${SHELLS.join(', ')}`,
          })
        }
        ctx.stdout.write(completionScript(shell as Shell, ctx.programName))
      },
      { json: false },
    )

  program
    .command('man')
    .description('print the manual page, in roff (`peerup man | man -l -`, or `peerup man > peerup.1`)')
    .run(
      () => {
        const { version, buildDate } = buildInfo()
        ctx.stdout.write(manPage(program, { name: ctx.programName, version, date: buildDate }))
      },
      { json: false },
    )

  // What the completion scripts call: the words typed so far, the last one being completed. It
  // prints nothing at all on any failure, and exits 0, whatever was typed.
  program
    .command('__complete', { hidden: true })
    .argument('[words...]')
    .helpOption(false)
    .allowUnknownOption()
    .action(async (words: string[], _flags: object, _cmd: Command) => {
      try {
        const found = await complete(program, words.length === 0 ? [''] : words, ctx)
        ctx.stdout.write(completionLines(found))
      } catch {
        // Silent on purpose: the person is pressing TAB, not asking for a diagnosis.
      }
    })
}
