/**
 * The one module that reads environment variables. Everything else receives an {@link Env}, so
 * tests can run commands with an environment of their own.
 *
 * @packageDocumentation
 */

import * as os from 'node:os'
import * as path from 'node:path'

/** The environment peerup's behaviour depends on. */
export interface Env {
  /** `PEERUP_HOME`: the directory holding config.yaml, checked first. */
  peerupHome: string | undefined
  /** `PEERUP_DEBUG=1`: print stack traces with errors. */
  debug: boolean
  /** `PEERUP_INVITE_CODE`: the code `join` uses when none is given. */
  inviteCode: string | undefined
  /** The user's home directory. */
  home: string
  /** `XDG_CONFIG_HOME` or `~/.config`. */
  configHome: string
  /** `PEERUP_CACHE_DIR`, else `XDG_CACHE_HOME/peerup` or `~/.cache/peerup`: where native addons are unpacked. */
  cacheDir: string
  /** `NOTIFY_SOCKET`: systemd's notification socket, when run as a `Type=notify` service. */
  notifySocket: string | undefined
  /** `WATCHDOG_USEC`, when `WATCHDOG_PID` is unset or this process: systemd's watchdog period in µs. */
  watchdogUsec: number | undefined
  /**
   * `PEERUP_SESSIONS=off` (internal, undocumented for users): proxied connections this node opens
   * are plain service streams, not resumable sessions — what a peer without sessions gets. The
   * benchmark's baseline for what resumability costs (bench/measure/sessions.ts).
   */
  sessions: boolean
  /**
   * `PEERUP_PUNCH=off` (internal, undocumented for users): this node does not try to punch TCP to
   * a peer (it still answers a peer's punch), so its direct path is WebRTC — how the NAT-lab tests
   * and the benchmark keep measuring the fallback (docs/decisions/0007-direct-path-transport.md).
   */
  punch: boolean
  /**
   * `PEERUP_BULK=off` (internal, undocumented for users): sessions this node opens stay on their
   * libp2p stream however much they carry, never moving to a bulk link of their own
   * (src/p2p/bulk.ts) — the benchmark's baseline for what bulk links gain.
   */
  bulk: boolean
}

/** Reads {@link Env} from a process environment (by default the real one). */
export function readEnv(vars: NodeJS.ProcessEnv = process.env): Env {
  const home = nonEmpty(vars.HOME) ?? safeHomedir()
  return {
    peerupHome: nonEmpty(vars.PEERUP_HOME),
    debug: vars.PEERUP_DEBUG === '1' || vars.PEERUP_DEBUG === 'true',
    inviteCode: nonEmpty(vars.PEERUP_INVITE_CODE),
    home,
    configHome: nonEmpty(vars.XDG_CONFIG_HOME) ?? path.join(home, '.config'),
    cacheDir:
      nonEmpty(vars.PEERUP_CACHE_DIR) ??
      path.join(nonEmpty(vars.XDG_CACHE_HOME) ?? path.join(home, '.cache'), 'peerup'),
    notifySocket: nonEmpty(vars.NOTIFY_SOCKET),
    watchdogUsec: watchdog(vars),
    sessions: vars.PEERUP_SESSIONS !== 'off',
    punch: vars.PEERUP_PUNCH !== 'off',
    bulk: vars.PEERUP_BULK !== 'off',
  }
}

// sd_watchdog_enabled(3): the watchdog is ours only when WATCHDOG_PID is unset or names us.
function watchdog(vars: NodeJS.ProcessEnv): number | undefined {
  const usec = Number(nonEmpty(vars.WATCHDOG_USEC))
  const pid = nonEmpty(vars.WATCHDOG_PID)
  if (!Number.isInteger(usec) || usec <= 0 || (pid !== undefined && Number(pid) !== process.pid)) {
    return undefined
  }
  return usec
}

// os.homedir() throws when HOME is unset and the uid has no passwd entry (`docker run --user 65533`);
// a command must still be able to say what is wrong instead of crashing before it starts.
function safeHomedir(): string {
  try {
    return os.homedir()
  } catch {
    return os.tmpdir()
  }
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === '' ? undefined : value
}
