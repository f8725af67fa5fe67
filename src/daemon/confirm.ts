/**
 * Commit-confirmed `config apply` in the daemon (src/config/safety.ts): the new config runs at
 * once, and unless `peerup config confirm` comes before the deadline, the previous one goes back
 * and the daemon goes on running with it — reloaded in place, or, when it differs from what the
 * daemon started with in a key that needs a restart, by the daemon running itself again (same
 * process id, so a service manager sees no exit).
 *
 * @packageDocumentation
 */

import {
  archiveLastGood,
  ConfigNotConfirmedError,
  type PendingApply,
  readPending,
  rollbackConfig,
  safetyFiles,
  settlePendingAtStart,
} from '../config/safety.ts'
import type { Logger } from '../log/index.ts'
import type { Component } from '../util/components.ts'
import { type FileWatch, watchFile } from '../util/watch.ts'
import { publishConfig } from './events.ts'
import type { DaemonComponents } from './run.ts'

/**
 * Before anything loads the config: an apply whose deadline passed while no daemon ran is undone,
 * and one that never reached config.yaml (a crash mid-apply) loses its confirmation.
 */
export async function settleApplyAtStart(configFile: string, log: Logger): Promise<void> {
  const settled = await settlePendingAtStart(configFile)
  if (settled.action === 'reverted') {
    log.error('config apply was not confirmed before its deadline: previous config restored', {
      applied_at: settled.pending.appliedAt,
      deadline: settled.pending.deadline,
    })
  } else if (settled.action === 'cleared') {
    log.warn(
      'a config apply did not complete (config.yaml is not what it wrote): its confirmation was dropped',
    )
  }
}

/** What {@link ApplyConfirmation} uses; read at start and later. */
type ApplyConfirmationComponents = Pick<
  DaemonComponents,
  'runtime' | 'events' | 'configApplier' | 'log' | 'shutdown'
>

/**
 * Waits for the confirmation of a pending apply: `start()` watches the pending file and arms the
 * deadline of an apply that waits. At the deadline the previous config is restored (see
 * {@link ApplyConfirmation.restart}); a confirmation archives the config as the last good one.
 */
export class ApplyConfirmation implements Component {
  readonly #components: ApplyConfirmationComponents
  #watch: FileWatch | undefined
  #deadline: NodeJS.Timeout | undefined
  #restart: string[] | undefined

  constructor(components: ApplyConfirmationComponents) {
    this.#components = components
  }

  /**
   * Set when the restored config needs a restart to run (the keys): the daemon then stops, and
   * runs itself again (src/cli/commands/daemon.ts).
   */
  get restart(): string[] | undefined {
    return this.#restart
  }

  async start(): Promise<void> {
    const configFile = this.#components.runtime.configFile
    this.#watch = watchFile(safetyFiles(configFile).pending, () => this.#pendingChanged())
    try {
      await this.#arm()
    } catch (err) {
      this.stop()
      throw err
    }
  }

  stop(): void {
    this.#watch?.close()
    this.#watch = undefined
    clearTimeout(this.#deadline)
    this.#deadline = undefined
  }

  async #arm(): Promise<void> {
    const { runtime, log } = this.#components
    clearTimeout(this.#deadline)
    this.#deadline = undefined
    const pending = await readPending(runtime.configFile)
    if (pending === undefined) {
      return
    }
    const remaining = Math.max(Date.parse(pending.deadline) - Date.now(), 0)
    log.warn('config apply waiting for `peerup config confirm`', { deadline: pending.deadline })
    this.#deadline = setTimeout(() => {
      this.#expired(pending).catch((err: unknown) =>
        log.error('restoring the previous config failed', { error: err as Error }),
      )
    }, remaining)
  }

  /** The deadline of `pending` passed: unless it was confirmed (or replaced) meanwhile, undo it. */
  async #expired(pending: PendingApply): Promise<void> {
    const { runtime, events, configApplier, log, shutdown } = this.#components
    const still = await readPending(runtime.configFile)
    if (still?.appliedAt !== pending.appliedAt) {
      return
    }
    await rollbackConfig(runtime.configFile)
    // Undefined: the running config is this text already (the apply never got to run).
    const { applied, restartNeeded } = (await configApplier.apply()) ?? { applied: [], restartNeeded: [] }
    const what = `config apply of ${pending.appliedAt} was not confirmed by ${pending.deadline}: previous config restored`
    publishConfig(events, 'reverted', applied, restartNeeded)
    if (restartNeeded.length === 0) {
      log.error(`${what}, and running`, { applied: applied.join(',') })
      return
    }
    log.error(`${what}; the daemon runs itself again to use it`, { keys: restartNeeded.join(',') })
    this.#restart = restartNeeded
    shutdown(new ConfigNotConfirmedError(`${what}; restarting in place`))
  }

  /** The pending file changed: a new apply is armed; a confirmed one archives the config. */
  #pendingChanged(): void {
    const { runtime, events, log } = this.#components
    const wasArmed = this.#deadline !== undefined
    this.#arm()
      .then(async () => {
        if (
          wasArmed &&
          this.#deadline === undefined &&
          (await readPending(runtime.configFile)) === undefined
        ) {
          log.info('config apply confirmed')
          await archiveLastGood(runtime.configFile)
          publishConfig(events, 'confirmed')
        }
      })
      .catch(() => {})
  }
}
