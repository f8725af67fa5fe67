/**
 * The daemon follows its files as they change. `peerup auth add|remove` (and any editor) rewrite
 * authorized_keys: the daemon reloads it at once, and the runtime closes a revoked peer's
 * connections. config.yaml changes (an edit, `service add`, `proxy add`, `auth add --name`,
 * `config apply`, a rollback) apply at once where they can: names, services, relays, proxies, the
 * gateway (`socks:`); the
 * rest is reported for a restart. SIGHUP reloads both.
 *
 * @packageDocumentation
 */

import * as fs from 'node:fs/promises'
import { loadNodeConfig, resolveIn } from '../config/load.ts'
import type { Component } from '../util/components.ts'
import { type FileWatch, watchFile } from '../util/watch.ts'
import { publishConfig } from './events.ts'
import type { DaemonComponents } from './run.ts'

/** What a {@link ConfigApplier} uses (its `persistentProxies` brought in line with config.yaml at each apply). */
type ConfigApplierComponents = Pick<DaemonComponents, 'runtime' | 'persistentProxies' | 'gateway'>

/** What applying config.yaml changed in the running daemon. */
export interface ConfigApplied {
  applied: string[]
  restartNeeded: string[]
}

/**
 * Applies config.yaml to the running daemon, one apply at a time, and only when the file's text is
 * not the text it applied last. Two components apply it: the file watcher ({@link FileFollower}),
 * and the rollback of an unconfirmed `config apply` (src/daemon/confirm.ts), which restores the file
 * and applies it at once — a write the watcher sees too, 100 ms later. Without this the watcher
 * could apply the restored file first (a loaded machine), and the rollback would report that it
 * put nothing back.
 */
export class ConfigApplier {
  readonly #components: ConfigApplierComponents
  #queue: Promise<unknown> = Promise.resolve()
  #text: string | undefined

  constructor(components: ConfigApplierComponents) {
    this.#components = components
  }

  /** Applies config.yaml as it is now; undefined when its text is what was applied last. */
  apply(): Promise<ConfigApplied | undefined> {
    const next = this.#queue.then(async () => {
      const { runtime, persistentProxies, gateway } = this.#components
      const text = await fs.readFile(runtime.configFile, 'utf8')
      if (text === this.#text) {
        return undefined
      }
      const { config } = await loadNodeConfig(runtime.configFile)
      const { applied, restartNeeded } = await runtime.applyConfig(config)
      applied.push(...(await persistentProxies.sync()), ...(await gateway.sync()))
      this.#text = text
      return { applied, restartNeeded }
    })
    this.#queue = next.catch(() => {})
    return next
  }
}

/** What {@link FileFollower} uses; read at start and later. */
type FileFollowerComponents = Pick<DaemonComponents, 'runtime' | 'events' | 'configApplier' | 'log'>

/**
 * `start()` watches authorized_keys and config.yaml and listens for SIGHUP; `stop()` ends all
 * three. Each change is reloaded into the runtime; a file that does not load keeps what runs.
 */
export class FileFollower implements Component {
  readonly #components: FileFollowerComponents
  readonly #watches: FileWatch[] = []
  readonly #onHup = (): void => {
    this.reloadConfig('SIGHUP')
    this.reloadAuthorized('SIGHUP')
  }

  constructor(components: FileFollowerComponents) {
    this.#components = components
  }

  start(): void {
    const rt = this.#components.runtime
    try {
      this.#watches.push(
        watchFile(resolveIn(rt.dir, rt.config.security.authorized_keys_file), () =>
          this.reloadAuthorized('file changed'),
        ),
      )
      this.#watches.push(watchFile(rt.configFile, () => this.reloadConfig('file changed')))
    } catch (err) {
      this.stop()
      throw err
    }
    process.on('SIGHUP', this.#onHup)
  }

  stop(): void {
    process.off('SIGHUP', this.#onHup)
    for (const watch of this.#watches.splice(0).reverse()) {
      watch.close()
    }
  }

  /** Re-reads authorized_keys into the runtime; `why` is logged. */
  reloadAuthorized(why: string): void {
    const { runtime, log } = this.#components
    runtime
      .reloadAuthorized()
      .then(({ added, removed }) => {
        if (added.length > 0 || removed.length > 0 || why === 'SIGHUP') {
          log.info('authorized_keys reloaded', { why, added: added.length, removed: removed.length })
        }
      })
      .catch((err: unknown) =>
        log.error('authorized_keys reload failed; keeping the previous set', { error: err as Error }),
      )
  }

  /** Re-reads config.yaml and applies what can be applied live; `why` is logged. */
  reloadConfig(why: string): void {
    const { events, configApplier, log } = this.#components
    configApplier
      .apply()
      .then((done) => {
        if (done === undefined) {
          if (why === 'SIGHUP') {
            log.info('config reloaded', { why, applied: '' })
          }
          return
        }
        const { applied, restartNeeded } = done
        publishConfig(events, 'reloaded', applied, restartNeeded)
        if (applied.length > 0 || why === 'SIGHUP') {
          log.info('config reloaded', { why, applied: applied.join(',') })
        }
        if (restartNeeded.length > 0) {
          log.warn('config changes that need a restart of the daemon', { keys: restartNeeded.join(',') })
        }
      })
      .catch((err: unknown) =>
        log.error('config.yaml changed but does not load; the running config is kept', {
          error: err as Error,
        }),
      )
  }
}
