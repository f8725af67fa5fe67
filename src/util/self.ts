/**
 * How to run this same peerup again: the single executable itself, or Node with the dev entry
 * (`bin/peerup.js`). Used for ssh's ProxyCommand and by `peerup demo`, which start peerup as a
 * child process, and by the daemon to run itself again in place.
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

/**
 * Replaces this process with a fresh run of the same command line (execve: the process id stays,
 * so a service manager that watches it sees no exit). Whatever the process held must be released
 * first; descriptors Node opened are close-on-exec.
 */
export function runAgainInPlace(): never {
  const [exe, ...prefix] = selfCommand()
  const execArgv = sea.isSea() ? [] : process.execArgv
  process.execve?.(
    exe as string,
    [exe as string, ...execArgv, ...prefix, ...process.argv.slice(2)],
    process.env,
  )
  throw new Error('this Node cannot replace its process (process.execve)')
}
