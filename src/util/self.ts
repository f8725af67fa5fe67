/**
 * How to run this same peerup again: the single executable itself, or Node with the dev entry
 * (`bin/peerup.js`). Used for ssh's ProxyCommand and by `peerup demo`, which start peerup as a
 * child process.
 *
 * @packageDocumentation
 */

import * as sea from 'node:sea'

/** The argv prefix that runs this peerup: `[exe]` in the single executable, `[node, entry]` otherwise. */
export function selfCommand(): string[] {
  if (sea.isSea() || process.argv[1] === undefined) {
    return [process.execPath]
  }
  return [process.execPath, process.argv[1]]
}
