/**
 * `peerup config validate|show|apply|confirm|rollback`.
 *
 * @packageDocumentation
 */

import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import {
  type CheckReport,
  checkNodeFiles,
  checkReplacement,
  effectiveNodeConfigYaml,
} from '../../config/check.ts'
import { ConfigNotFoundError } from '../../config/errors.ts'
import { applyConfig, confirmConfig, readPending, rollbackConfig } from '../../config/safety.ts'
import { parseDurationMs } from '../../config/units.ts'
import { PeerupError } from '../../errors.ts'
import type { CliContext, GlobalOptions } from '../context.ts'
import { loadNode, nodeConfigFile } from '../load.ts'
import { type CliCommand, numberFlag } from '../options.ts'
import { emit } from '../output.ts'

/**
 * A new config named on the command line (`config validate FILE`, `config apply FILE`): read
 * relative to the current directory.
 */
async function readNewConfig(ctx: CliContext, file: string): Promise<string> {
  try {
    return await fs.readFile(path.resolve(ctx.cwd, file), 'utf8')
  } catch (err) {
    throw new PeerupError(`cannot read ${file}: ${(err as Error).message}`, {
      hint: 'give the path of the new config',
    })
  }
}

/** The config in use, or undefined when this machine has none yet. */
async function configInUse(ctx: CliContext, opts: GlobalOptions): Promise<string | undefined> {
  try {
    return await nodeConfigFile(ctx, opts)
  } catch (err) {
    if (err instanceof ConfigNotFoundError && opts.config === undefined) {
      return undefined
    }
    throw err
  }
}

/** Prints every problem of `report` on stderr and throws, naming `file`; nothing when there is none. */
function refuseProblems(ctx: CliContext, report: CheckReport, file: string, hint: string): void {
  if (report.problems.length > 0) {
    for (const p of report.problems) {
      ctx.stderr.write(`${p}\n`)
    }
    const n = report.problems.length
    throw new PeerupError(`${file}: ${n} problem${n === 1 ? '' : 's'}`, { hint })
  }
}

/** `config validate|show`: the config as it is. */
function registerConfigCheck(config: CliCommand, ctx: CliContext): void {
  config
    .command('validate')
    .description('check config.yaml (and the identity and authorized_keys it names) and exit')
    .argument('[file]', 'a new config to check as `config apply` would, instead of the one in use')
    .run(async (opts, file: string | undefined) => {
      let shown: string
      let report: CheckReport
      if (file === undefined) {
        shown = await nodeConfigFile(ctx, opts)
        report = await checkNodeFiles(shown)
      } else {
        // One rule with `config apply FILE`: FILE is read from the current directory and checked as
        // the replacement of the config in use, so what it names resolves where it will be used.
        shown = path.resolve(ctx.cwd, file)
        const text = await readNewConfig(ctx, file)
        const target = await configInUse(ctx, opts)
        // No node here yet: FILE is what would become one, where it is.
        report =
          target === undefined ? await checkNodeFiles(shown) : await checkReplacement(target, text, file)
      }
      refuseProblems(ctx, report, shown, 'fix them and run `peerup config validate` again')
      emit(
        ctx,
        opts,
        { file: shown, valid: true, peerId: report.peerId },
        (r) => `${r.file}: OK (peer id ${r.peerId})`,
      )
    })

  config
    .command('show')
    .description('print the config in effect, with every default filled in')
    .run(async (opts) => {
      const loaded = await loadNode(ctx, opts)
      const pending = await readPending(loaded.file)
      emit(
        ctx,
        opts,
        { file: loaded.file, config: loaded.config, pendingConfirmation: pending ?? null },
        (r) =>
          `# ${r.file}\n${
            pending === undefined
              ? ''
              : `# applied ${pending.appliedAt}, NOT CONFIRMED: restored at ${pending.deadline} unless \`peerup config confirm\`\n`
          }${effectiveNodeConfigYaml(r.config)}`,
      )
    })
}

/** `config apply|confirm|rollback`: commit-confirmed changes. */
function registerConfigChange(config: CliCommand, ctx: CliContext): void {
  config
    .command('apply')
    .description('swap in a new config; unless `config confirm` comes in time, the previous one is restored')
    .argument('<file>', 'the new config')
    .option('--confirm-timeout <duration>', 'how long to wait for `peerup config confirm`', '5m')
    .run(async (opts: GlobalOptions & { confirmTimeout: string }, newFile: string) => {
      const timeoutMs = numberFlag(
        'confirm-timeout',
        opts.confirmTimeout,
        'write it like 5m or 90s',
        parseDurationMs,
        1,
      )
      const target = await nodeConfigFile(ctx, opts)
      const text = await readNewConfig(ctx, newFile)
      const pending = await applyConfig(target, text, {
        confirmTimeoutMs: timeoutMs,
        // The same check as `config validate FILE`.
        validate: async () =>
          refuseProblems(
            ctx,
            await checkReplacement(target, text, newFile),
            newFile,
            'nothing was changed: fix them and apply again',
          ),
      })
      emit(
        ctx,
        opts,
        { file: target, ...pending },
        (r) =>
          `applied ${newFile} to ${r.file}; a running daemon reloads it now.\n` +
          `Run \`peerup config confirm\` before ${r.deadline} to keep it, or it is rolled back.`,
      )
    })

  config
    .command('confirm')
    .description('keep the config applied with `config apply`')
    .run(async (opts) => {
      const target = await nodeConfigFile(ctx, opts)
      const pending = await confirmConfig(target)
      emit(
        ctx,
        opts,
        { file: target, confirmed: pending.appliedAt },
        (r) => `confirmed the config applied at ${r.confirmed}`,
      )
    })

  config
    .command('rollback')
    .description('restore the config before an unconfirmed apply, else the last-known-good one')
    .run(async (opts) => {
      const target = await nodeConfigFile(ctx, opts)
      const source = await rollbackConfig(target, async (candidate) => {
        const report = await checkNodeFiles(candidate)
        if (report.problems.length > 0) {
          throw new PeerupError(`the config to restore has problems: ${report.problems[0]}`, {
            hint: 'fix config.yaml by hand',
          })
        }
      })
      emit(
        ctx,
        opts,
        { file: target, restored: source },
        (r) =>
          `restored the ${r.restored === 'previous' ? 'config before the unconfirmed apply' : 'last-known-good config'} to ${r.file}; a running daemon reloads it now`,
      )
    })
}

export function registerConfig(program: CliCommand, ctx: CliContext): void {
  const config = program.command('config').description('check and show the node config')
  registerConfigCheck(config, ctx)
  registerConfigChange(config, ctx)
}
