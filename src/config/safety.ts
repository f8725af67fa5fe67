/**
 * Safe config changes (docs/decisions/0000-inherited.md): a last-known-good copy archived by every successful start,
 * `rollback` to it, and commit-confirmed `apply` — the new config goes live at once, and unless
 * `confirm` comes before the deadline the previous one is put back (by the running daemon, or by
 * the next start when the deadline passed while nothing ran).
 *
 * Files beside the config (`config.yaml` stands for its name):
 * - `.config.last-good.yaml` — the config the last successful start ran with;
 * - `.config.previous.yaml` — the config an unconfirmed apply replaced;
 * - `.config.pending.json` — the pending apply: its deadline and the hash of what it wrote.
 * The relay's are `.relay-server.last-good.yaml` and so on. Every write is atomic (temp file,
 * fsync, rename): a crash leaves the old file or the new one, never half of either, and the order of
 * the steps below makes every crash point recoverable.
 *
 * @packageDocumentation
 */

import { createHash } from 'node:crypto'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import { ConflictError, NotFoundError, PeerupError } from '../errors.ts'
import { atomicWriteFile, withFileLock } from '../util/fs.ts'

/** The deadline of an apply passed without a confirmation; the previous config was restored. */
export class ConfigNotConfirmedError extends PeerupError {
  override name = 'ConfigNotConfirmedError'
}

/** The side files of a config file. */
export function safetyFiles(configFile: string): { lastGood: string; previous: string; pending: string } {
  const dir = path.dirname(configFile)
  const stem = path.basename(configFile).replace(/\.ya?ml$/, '')
  return {
    lastGood: path.join(dir, `.${stem}.last-good.yaml`),
    previous: path.join(dir, `.${stem}.previous.yaml`),
    pending: path.join(dir, `.${stem}.pending.json`),
  }
}

export interface PendingApply {
  appliedAt: string
  /** RFC 3339: when the previous config comes back unless confirmed. */
  deadline: string
  /** sha256 of the config the apply wrote. */
  sha256: string
}

/** Runs `validate` on `text` written beside `configFile`, so relative paths in it resolve as they will. */
async function validateBeside(
  configFile: string,
  text: string,
  validate: (candidateFile: string) => Promise<void>,
): Promise<void> {
  const candidate = path.join(path.dirname(configFile), `.${path.basename(configFile)}.candidate`)
  await atomicWriteFile(candidate, text, { mode: 0o600 })
  try {
    await validate(candidate)
  } finally {
    await fs.rm(candidate, { force: true })
  }
}

/** Forgets a pending apply: its file and the config it replaced. */
async function clearPending(configFile: string): Promise<void> {
  const files = safetyFiles(configFile)
  await fs.rm(files.pending, { force: true })
  await fs.rm(files.previous, { force: true })
}

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex')
}

export async function readPending(configFile: string): Promise<PendingApply | undefined> {
  try {
    return JSON.parse(await fs.readFile(safetyFiles(configFile).pending, 'utf8')) as PendingApply
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      return undefined
    }
    // A pending file nobody can read is no apply we can honour: treat it as expired.
    return { appliedAt: new Date(0).toISOString(), deadline: new Date(0).toISOString(), sha256: '' }
  }
}

/** Archives the config a start succeeded with as last-known-good. */
export async function archiveLastGood(configFile: string): Promise<void> {
  const text = await fs.readFile(configFile, 'utf8')
  await atomicWriteFile(safetyFiles(configFile).lastGood, text, { mode: 0o600 })
}

export interface ApplyOptions {
  /** Checks the new config; throws to refuse it. Runs on a temp copy in the config's directory, so relative paths resolve as they will. */
  validate: (candidateFile: string) => Promise<void>
  confirmTimeoutMs: number
  now?: Date
}

/**
 * Validates `newText`, keeps the current config as `.previous`, records the deadline and swaps the
 * new config in. Refused while another apply waits for its confirmation.
 */
export async function applyConfig(
  configFile: string,
  newText: string,
  options: ApplyOptions,
): Promise<PendingApply> {
  const files = safetyFiles(configFile)
  return withFileLock(configFile, async () => {
    const existing = await readPending(configFile)
    if (existing !== undefined) {
      throw new ConflictError(`an apply is already waiting for confirmation (until ${existing.deadline})`, {
        hint: '`peerup config confirm` keeps it, `peerup config rollback` undoes it',
      })
    }
    await validateBeside(configFile, newText, options.validate)
    const current = await fs.readFile(configFile, 'utf8')
    const now = options.now ?? new Date()
    const pending: PendingApply = {
      appliedAt: now.toISOString(),
      deadline: new Date(now.getTime() + options.confirmTimeoutMs).toISOString(),
      sha256: sha256(newText),
    }
    // Order matters for a crash at any point: the previous config is safe first, then the promise
    // to restore it, then the swap. A crash before the swap leaves a pending file whose hash does
    // not match config.yaml: nothing to undo, and it is cleared at the next start.
    await atomicWriteFile(files.previous, current, { mode: 0o600 })
    await atomicWriteFile(files.pending, `${JSON.stringify(pending, null, 2)}\n`, { mode: 0o600 })
    await atomicWriteFile(configFile, newText)
    return pending
  })
}

/** Keeps the applied config: the pending apply is done. */
export async function confirmConfig(configFile: string): Promise<PendingApply> {
  return withFileLock(configFile, async () => {
    const pending = await readPending(configFile)
    if (pending === undefined) {
      throw new NotFoundError('no apply is waiting for confirmation', {
        hint: 'apply one with `peerup config apply <file> --confirm-timeout 5m`',
      })
    }
    await clearPending(configFile)
    return pending
  })
}

export type RestoreSource = 'previous' | 'last-good'

/**
 * Puts a config back: the one an unconfirmed apply replaced when an apply is pending, else the
 * last-known-good. Returns what was restored.
 */
export async function rollbackConfig(
  configFile: string,
  validate?: (candidateFile: string) => Promise<void>,
): Promise<RestoreSource> {
  const files = safetyFiles(configFile)
  return withFileLock(configFile, async () => {
    const pending = await readPending(configFile)
    const source: RestoreSource = pending !== undefined ? 'previous' : 'last-good'
    const from = source === 'previous' ? files.previous : files.lastGood
    let text: string
    try {
      text = await fs.readFile(from, 'utf8')
    } catch {
      throw source === 'previous'
        ? new NotFoundError(`the config to restore (${from}) is missing`, { hint: 'fix config.yaml by hand' })
        : new NotFoundError('no last-known-good config yet', {
            hint: 'it is archived by every successful start of the daemon',
          })
    }
    if (validate !== undefined) {
      await validateBeside(configFile, text, validate)
    }
    await atomicWriteFile(configFile, text)
    await clearPending(configFile)
    return source
  })
}

/** What {@link settlePendingAtStart} did. */
export type StartDecision =
  | { action: 'none' }
  | { action: 'reverted' | 'cleared'; pending: PendingApply }
  | { action: 'armed'; pending: PendingApply; remainingMs: number }

/**
 * Settles a pending apply when a daemon (or relay) starts: past its deadline the previous config is
 * restored before anything loads it; an apply that never reached config.yaml (a crash mid-apply) is
 * cleared; one still within its deadline is left for the caller to arm a timer for.
 */
export async function settlePendingAtStart(configFile: string, now = new Date()): Promise<StartDecision> {
  const pending = await readPending(configFile)
  if (pending === undefined) {
    return { action: 'none' }
  }
  const current = await fs.readFile(configFile, 'utf8')
  if (pending.sha256 !== '' && sha256(current) !== pending.sha256) {
    // config.yaml is not what the apply wrote: it crashed before the swap, or someone edited the
    // file since. Either way the apply's promise no longer refers to this file.
    await withFileLock(configFile, () => clearPending(configFile))
    return { action: 'cleared', pending }
  }
  const remainingMs = Date.parse(pending.deadline) - now.getTime()
  if (!(remainingMs > 0)) {
    await rollbackConfig(configFile)
    return { action: 'reverted', pending }
  }
  return { action: 'armed', pending, remainingMs }
}
