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
export function runAgainInPlace(env: NodeJS.ProcessEnv = process.env): never {
  const [exe, ...prefix] = selfCommand()
  const execArgv = sea.isSea() ? [] : process.execArgv
  process.execve?.(exe as string, [exe as string, ...execArgv, ...prefix, ...process.argv.slice(2)], env)
  throw new Error('this Node cannot replace its process (process.execve)')
}

/**
 * How many malloc arenas the long-running commands (`relay serve`, `daemon`) run with unless the
 * environment says otherwise. glibc gives every thread that allocates (V8's GC and libuv's
 * workers do) an arena of its own, up to 8 per core, and keeps what was freed in each: relaying
 * 1 GiB twice left the relay at 171.6 MB with the default and 154.5 MB with two
 * (docs/decisions/0011-malloc-arenas.md). The systemd unit and the Docker image set it too;
 * this covers a relay or a daemon started by hand.
 */
export const MALLOC_ARENAS = '2'

/**
 * The relay's: one arena. Its work is the main thread's (every socket read and write), and one
 * arena shares one pool of freed memory among all threads: relaying 1 GiB twice peaked at
 * 125.9/136.3 and 127.7/138.2 MB with one, against 129.1–144.1/140.1–158.2 MB in four runs with
 * two (docs/decisions/0011-malloc-arenas.md).
 */
export const RELAY_MALLOC_ARENAS = '1'

/**
 * Runs this command again in place (same process id) with `MALLOC_ARENA_MAX` set to `arenas`
 * ({@link MALLOC_ARENAS} unless given) when the environment leaves it unset — glibc reads it only at start.
 * Called first thing, before anything is opened. A no-op where it is set (to any value: the
 * user's choice stands), off Linux, or where Node cannot replace its process.
 */
export function withFewerMallocArenas(arenas: string = MALLOC_ARENAS): void {
  if (
    process.env.MALLOC_ARENA_MAX !== undefined ||
    process.platform !== 'linux' ||
    typeof process.execve !== 'function'
  ) {
    return
  }
  runAgainInPlace({ ...process.env, MALLOC_ARENA_MAX: arenas })
}
