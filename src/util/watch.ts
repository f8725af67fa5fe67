/**
 * `watchFile()`: calls back when a file is written or replaced, debounced. Used for the hot reload
 * of authorized_keys (node) and relay_authorized_keys (relay).
 *
 * @packageDocumentation
 */

import * as fs from 'node:fs'
import * as path from 'node:path'

/** How long a burst of changes must be quiet before the callback runs. */
export const DEFAULT_WATCH_DEBOUNCE_MS = 100

export interface FileWatch {
  close(): void
}

/**
 * Watches `file` and calls `onChange` once per burst of changes. The directory is watched, not the
 * file: `peerup auth add`, editors and `mv` replace the file (a new inode), which a watch on the
 * file itself stops seeing after the first rename.
 */
export function watchFile(file: string, onChange: () => void): FileWatch {
  const name = path.basename(file)
  let pending: NodeJS.Timeout | undefined
  const watcher = fs.watch(path.dirname(file), (_event, changed) => {
    // Some platforms do not report the name: reload then too, it is cheap.
    if (changed === null || changed === name) {
      clearTimeout(pending)
      pending = setTimeout(onChange, DEFAULT_WATCH_DEBOUNCE_MS)
      pending.unref()
    }
  })
  // A directory removed under us (a test cleaning up) ends the watch; that is not a crash.
  watcher.on('error', () => watcher.close())
  watcher.unref()
  return {
    close: () => {
      clearTimeout(pending)
      watcher.close()
    },
  }
}
