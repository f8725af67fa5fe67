/**
 * `runDaemon()`: the long-running agent in the foreground. It assembles the node runtime with
 * the config's services, keeps relay reservations, reloads authorized_keys when it changes (or on
 * SIGHUP), and stops in reverse order when its signal fires.
 *
 * @packageDocumentation
 */

import { resolveIn } from '../config/load.ts'
import type { Logger } from '../log/index.ts'
import { startNodeRuntime } from '../p2p/runtime.ts'
import { watchFile } from '../util/watch.ts'

/** Options of {@link runDaemon}. */
export interface DaemonOptions {
  configFile: string
  log: Logger
  /** Stops the daemon when aborted (the CLI's first SIGINT/SIGTERM). */
  signal: AbortSignal
  /** Called once the node is up, with what a person needs to know. */
  onReady?: (info: { peerId: string; addresses: string[]; services: string[] }) => void
}

/** Runs the daemon until `signal` fires. */
export async function runDaemon(options: DaemonOptions): Promise<void> {
  const { log } = options
  const rt = await startNodeRuntime({ configFile: options.configFile, log, exposeServices: true })
  const reload = (why: string): void => {
    rt.reloadAuthorized()
      .then(({ added, removed }) => {
        if (added.length > 0 || removed.length > 0 || why === 'SIGHUP') {
          log.info('authorized_keys reloaded', { why, added: added.length, removed: removed.length })
        }
      })
      .catch((err: unknown) =>
        log.error('authorized_keys reload failed; keeping the previous set', { error: err as Error }),
      )
  }
  // `peerup auth add|remove` (and any editor) rewrite the file: the daemon follows at once, and a
  // revoked peer's connections are closed by the runtime's change listener.
  const watcher = watchFile(resolveIn(rt.dir, rt.config.security.authorized_keys_file), () =>
    reload('file changed'),
  )
  const onHup = (): void => reload('SIGHUP')
  process.on('SIGHUP', onHup)
  try {
    const services = Object.entries(rt.config.services)
      .filter(([, s]) => s.enabled)
      .map(([n]) => n)
    log.info('daemon started', { peer: rt.peerId, services: services.join(',') })
    options.onReady?.({ peerId: rt.peerId, addresses: rt.node.getMultiaddrs().map(String), services })
    if (!options.signal.aborted) {
      await new Promise<void>((resolve) =>
        options.signal.addEventListener('abort', () => resolve(), { once: true }),
      )
    }
    log.info('daemon stopping')
  } finally {
    process.off('SIGHUP', onHup)
    watcher.close()
    await rt.stop()
  }
}
