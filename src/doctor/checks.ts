/**
 * The checks of `peerup doctor`, each a function from what was observed to one {@link Check}: ok,
 * warn or fail, a one-line summary, and the fix. Observing (sockets, files, the daemon) happens in
 * src/doctor/run.ts; these functions only judge, so each is tested with its failure text.
 *
 * @packageDocumentation
 */

import { type PathState, type RelayState, relayedReason, shortId, type UpgradeStatus } from '../api/index.ts'
import type { AddonCacheEntry } from '../native/addon.ts'
import type { NatReport } from './nat.ts'

/** How a check came out: `fail` makes `doctor` exit 1. */
export type CheckStatus = 'ok' | 'warn' | 'fail'

/** One line of the report (the `--json` shape is documented in docs/cli.md and stays stable). */
export interface Check {
  /** Stable identifier: `config`, `relay`, `nat`, … (checks about one relay repeat, with `details.relay`). */
  id: string
  status: CheckStatus
  /** One line: what was found and why it matters. */
  summary: string
  /** What to do about it, when there is something to do. */
  fix?: string
  /** What `--fix` changed. */
  fixed?: string
  /** Measured values, for scripts. */
  details?: Record<string, unknown>
}

/** What `doctor --json` prints. */
export interface DoctorReport {
  /** The shape's version; bumped only on an incompatible change. */
  version: 1
  checks: Check[]
}

/** The version of {@link DoctorReport}. */
export const DOCTOR_REPORT_VERSION = 1

/** A clock this far from a relay's is worth a warning: `expires=` in authorized_keys and invite expiries shift by it. */
export const CLOCK_WARN_MS = 10_000

/** A clock this far off breaks invites (10 minutes by default) and expiries outright. */
export const CLOCK_FAIL_MS = 5 * 60_000

/** A check that could not run because the config does not load (the `config` check says why). */
export function notCheckedWithoutConfig(id: string): Check {
  return {
    id,
    status: 'warn',
    summary: 'not checked: the config does not load',
    fix: 'see the config check',
  }
}

// ---- config and files ----

/** `config`: the config loader's own validation (`config validate`), every problem. */
export function configCheck(file: string, problems: string[]): Check {
  if (problems.length === 0) {
    return { id: 'config', status: 'ok', summary: `${file} is valid` }
  }
  return {
    id: 'config',
    status: 'fail',
    summary: `${problems.length === 1 ? 'a problem' : `${problems.length} problems`} in the config: ${problems.join('; ')}`,
    fix: `do what each problem says (edit ${file} for a key), then run \`peerup config validate\``,
    details: { problems },
  }
}

/** A file whose mode was looked at: a secret must be 0600, a trust file not writable by others. */
export interface FileMode {
  file: string
  kind: 'secret' | 'trust'
  /** `stat().mode & 0o777`; undefined when the file does not exist. */
  mode: number | undefined
}

/** The widest mode each kind may have, and the chmod that narrows it. */
const MODE_RULES = {
  secret: { forbidden: 0o077, chmod: '600', what: 'readable' },
  trust: { forbidden: 0o022, chmod: 'go-w', what: 'writable' },
} as const

/** The files whose mode is too wide. */
export function tooWide(files: readonly FileMode[]): FileMode[] {
  return files.filter((f) => f.mode !== undefined && (f.mode & MODE_RULES[f.kind].forbidden) !== 0)
}

/** The mode a too-wide file gets from `--fix`: the secret 0600, the trust file without group/other write. */
export function narrowedMode(f: FileMode): number {
  return f.kind === 'secret' ? 0o600 : (f.mode ?? 0o644) & ~0o022
}

/** `file-modes`: key and cookie private, config and authorized_keys not writable by others. */
export function fileModesCheck(files: readonly FileMode[], fixed: readonly FileMode[] = []): Check {
  const wide = tooWide(files).filter((f) => !fixed.includes(f))
  const octal = (m: number | undefined): string => (m ?? 0).toString(8).padStart(4, '0')
  const done =
    fixed.length === 0
      ? {}
      : { fixed: fixed.map((f) => `chmod ${octal(narrowedMode(f))} ${f.file}`).join('; ') }
  const details = {
    files: files.map((f) => ({
      file: f.file,
      kind: f.kind,
      mode: f.mode === undefined ? null : octal(f.mode),
    })),
  }
  if (wide.length === 0) {
    return {
      id: 'file-modes',
      status: 'ok',
      summary: `${files.filter((f) => f.mode !== undefined).length} files private enough (keys and cookie 0600, config and authorized_keys not writable by others)`,
      ...done,
      details,
    }
  }
  return {
    id: 'file-modes',
    status: 'fail',
    summary: wide
      .map((f) => `${f.file} has mode ${octal(f.mode)}, ${MODE_RULES[f.kind].what} by other users`)
      .join('; '),
    fix: `run \`peerup doctor --fix\`, or: ${wide.map((f) => `chmod ${MODE_RULES[f.kind].chmod} ${f.file}`).join('; ')}`,
    ...done,
    details,
  }
}

// ---- the daemon and its socket ----

/** What the socket file is. */
export type SocketState = 'answers' | 'missing' | 'stale' | 'not-a-socket'

/** `socket`: the daemon's socket answers; a stale one (nobody listening) is removed by `--fix`. */
export function socketCheck(socketPath: string, state: SocketState, removed = false): Check {
  switch (state) {
    case 'answers':
      return { id: 'socket', status: 'ok', summary: `${socketPath} answers` }
    case 'missing':
      return {
        id: 'socket',
        status: 'warn',
        summary: `no socket at ${socketPath}: the daemon is not running`,
        fix: 'start it with `peerup daemon` (or `systemctl --user start peerup`)',
      }
    case 'not-a-socket':
      return {
        id: 'socket',
        status: 'fail',
        summary: `${socketPath} exists and is not a socket: the daemon cannot start here`,
        fix: `move ${socketPath} away; peerup keeps its socket there`,
      }
    case 'stale':
      return removed
        ? {
            id: 'socket',
            status: 'ok',
            summary: `${socketPath} was left by a daemon that is gone; removed`,
            fixed: `removed ${socketPath}`,
          }
        : {
            id: 'socket',
            status: 'warn',
            summary: `${socketPath} is stale: nobody listens on it (a daemon that died)`,
            fix: `run \`peerup doctor --fix\` (or rm ${socketPath}); \`peerup daemon\` also removes it when it starts`,
          }
  }
}

/** What asking the daemon for its status gave. */
export type DaemonAnswer =
  | { running: true; version: string; pid: number; uptimeSeconds: number }
  | { running: false }
  | { running: 'error'; error: string }

/** `daemon`: running, and the same version as this command. */
export function daemonCheck(answer: DaemonAnswer, cliVersion: string): Check {
  if (answer.running === false) {
    return {
      id: 'daemon',
      status: 'warn',
      summary: 'the daemon is not running: no reservation is held and peers cannot reach this node',
      fix: 'start it with `peerup daemon` (or `systemctl --user start peerup`)',
    }
  }
  if (answer.running === 'error') {
    return {
      id: 'daemon',
      status: 'fail',
      summary: `the daemon does not answer properly: ${answer.error}`,
      fix: 'look at its log (`journalctl --user -u peerup`), then restart it',
    }
  }
  const details = { version: answer.version, pid: answer.pid, uptimeSeconds: answer.uptimeSeconds }
  if (answer.version !== cliVersion) {
    return {
      id: 'daemon',
      status: 'warn',
      summary: `the daemon runs peerup ${answer.version}, this command is ${cliVersion}`,
      fix: 'restart the daemon after upgrading (`peerup daemon stop`, then start it again)',
      details,
    }
  }
  return {
    id: 'daemon',
    status: 'ok',
    summary: `running, peerup ${answer.version} (pid ${answer.pid}, up ${answer.uptimeSeconds} s)`,
    details,
  }
}

// ---- relays ----

/** What connecting to one relay's TCP port gave. */
export interface RelayProbe {
  relay: string
  /** `host:port` connected to. */
  target: string
  latencyMs?: number
  error?: string
}

/** `relay`: one per configured relay, TCP connect and its latency; none configured is a failure. */
export function relayChecks(probes: readonly RelayProbe[]): Check[] {
  if (probes.length === 0) {
    return [
      {
        id: 'relay',
        status: 'fail',
        summary: 'no relay configured: peers behind NAT cannot reach this node',
        fix: 'add one with `peerup relay add <multiaddr>` (`peerup relay info` on the relay prints it)',
      },
    ]
  }
  return probes.map((p) =>
    p.latencyMs !== undefined
      ? {
          id: 'relay',
          status: 'ok',
          summary: `relay ${p.target} reachable over TCP in ${p.latencyMs.toFixed(1)} ms`,
          details: { relay: p.relay, latencyMs: p.latencyMs },
        }
      : {
          id: 'relay',
          status: 'fail',
          summary: `relay ${p.target} unreachable: ${p.error ?? 'no answer'}`,
          fix: `check that the relay runs (\`peerup relay serve\`) and that tcp ${p.target} is open in its firewall; or add another relay`,
          details: { relay: p.relay, error: p.error ?? 'no answer' },
        },
  )
}

/** Reasons that mean the relay does not know this node. */
const NOT_AUTHORIZED = /relay_authorized_keys|PERMISSION_DENIED|not authori[sz]ed/i

/**
 * `reservation`: one per relay the daemon knows, held or why not; a refusal because the relay does
 * not know this node comes with the command to run on the relay. Undefined `relays`: no daemon.
 */
export function reservationChecks(
  relays: readonly RelayState[] | undefined,
  peerId: string | undefined,
): Check[] {
  if (relays === undefined) {
    return [
      {
        id: 'reservation',
        status: 'warn',
        summary: 'not checked: reservations are held by the daemon, which is not running',
        fix: 'start it with `peerup daemon`',
      },
    ]
  }
  return relays.map((r) => {
    const details = {
      relay: r.peerId,
      reserved: r.reserved,
      ...(r.reason === undefined ? {} : { reason: r.reason }),
    }
    if (r.reserved) {
      return {
        id: 'reservation',
        status: 'ok',
        summary: `reservation held on relay ${shortId(r.peerId)}`,
        details,
      }
    }
    const why = r.reason ?? r.lastError ?? 'not made yet'
    const authorize = `on the relay, run: peerup relay authorize ${peerId ?? '<this peer id>'}`
    return {
      id: 'reservation',
      status: 'fail',
      summary: `no reservation on relay ${shortId(r.peerId)}: ${why}`,
      fix: NOT_AUTHORIZED.test(why)
        ? authorize
        : r.connected
          ? 'the daemon tries again by itself; see `peerup daemon status`'
          : 'the relay is not reachable: see the relay check above',
      details,
    }
  })
}

// ---- NAT, direct paths, clock ----

/** A NAT mapping in words, for the summaries here and the RELAYED reasons of `paths`. */
export function natWords(nat: NatReport): string {
  switch (nat.mapping) {
    case 'endpoint-independent':
      return nat.behindNat === false
        ? 'no NAT (this machine has the address the relays see)'
        : 'endpoint-independent mapping (cone NAT)'
    case 'endpoint-dependent':
      return 'endpoint-dependent mapping (symmetric NAT)'
    case 'udp-blocked':
      return 'UDP blocked (no STUN answer)'
    case 'unknown':
      return 'mapping unknown (one STUN endpoint only)'
  }
}

function natDetails(nat: NatReport): Record<string, unknown> {
  return {
    mapping: nat.mapping,
    behindNat: nat.behindNat ?? null,
    localPort: nat.localPort,
    probes: nat.probes.map((p) => ({
      endpoint: p.endpoint,
      relay: p.relay,
      alternate: p.alternate,
      mapped: p.answer === undefined ? null : `${p.answer.mapped.address}:${p.answer.mapped.port}`,
    })),
  }
}

/**
 * `nat`: how this node's NAT maps one socket towards two STUN endpoints. Undefined: nothing to
 * ask. `relaysDown`: no relay accepted TCP either, so silence on UDP says nothing about UDP.
 */
export function natCheck(nat: NatReport | undefined, relaysDown = false): Check {
  if (nat === undefined) {
    return {
      id: 'nat',
      status: 'warn',
      summary:
        'not measured: no relay with an IPv4 address and a STUN port (relay.stun_port is 0, or no relay)',
      fix: 'add a relay (`peerup relay add <multiaddr>`) and keep relay.stun_port at the relays’ STUN port (3478)',
    }
  }
  const mapped = nat.probes
    .filter((p) => p.answer !== undefined)
    .map((p) => `${p.endpoint} saw ${p.answer?.mapped.address}:${p.answer?.mapped.port}`)
    .join(', ')
  const details = natDetails(nat)
  if (nat.mapping === 'udp-blocked' && relaysDown) {
    return {
      id: 'nat',
      status: 'warn',
      summary: 'not measured: no relay answers, on TCP or on STUN',
      fix: 'see the relay checks: once a relay is back, run `peerup doctor` again',
      details,
    }
  }
  switch (nat.mapping) {
    case 'endpoint-independent':
      return { id: 'nat', status: 'ok', summary: `${natWords(nat)}: ${mapped}`, details }
    case 'endpoint-dependent':
      return {
        id: 'nat',
        status: 'warn',
        summary: `${natWords(nat)}: a new public port for every destination (${mapped})`,
        fix: 'a direct path needs a cone NAT on at least one side: enable endpoint-independent mapping on the router if it can, or rely on the relay',
        details,
      }
    case 'udp-blocked':
      return {
        id: 'nat',
        status: 'warn',
        summary: `${natWords(nat)} from ${nat.probes.map((p) => p.endpoint).join(', ')}`,
        fix: 'let UDP out to the relays’ STUN port (3478), or check that the relays run their STUN responder (stun.enabled)',
        details,
      }
    case 'unknown':
      return {
        id: 'nat',
        status: 'warn',
        summary: `${natWords(nat)}: ${mapped || 'no answer'}; a second endpoint is needed to compare`,
        fix: 'add a second relay, or set stun.alternate_listen_address in the relay’s relay-server.yaml',
        details,
      }
  }
}

/** `direct`: whether a TCP punch or WebRTC can work from here, from the NAT measured. */
export function directCheck(nat: NatReport | undefined, webrtc: boolean, relaysDown = false): Check {
  const noWebrtc = webrtc ? '' : ' (WebRTC is off: no /webrtc in network.listen_addresses)'
  if (nat === undefined || nat.mapping === 'unknown' || (nat.mapping === 'udp-blocked' && relaysDown)) {
    return {
      id: 'direct',
      status: 'warn',
      summary: `cannot tell whether a direct path can work from here: the NAT was not measured${noWebrtc}`,
      fix: 'see the nat check',
    }
  }
  switch (nat.mapping) {
    case 'endpoint-independent':
      return {
        id: 'direct',
        status: 'ok',
        summary: `direct is possible from here: a TCP punch${webrtc ? ' and WebRTC' : ''} can work (if the peer's side allows it too)${noWebrtc}`,
      }
    case 'endpoint-dependent':
      return {
        id: 'direct',
        status: 'warn',
        summary:
          'direct path unlikely: symmetric NAT on this side; connections stay RELAYED unless the peer is reachable directly',
        fix: 'nothing breaks: traffic goes through the relay; for direct paths, a router with endpoint-independent mapping',
      }
    case 'udp-blocked':
      return {
        id: 'direct',
        status: 'warn',
        summary: 'WebRTC cannot work from here (UDP blocked); only a TCP punch or a LAN path can be direct',
        fix: 'let UDP out (at least to the relays), or rely on the relay',
      }
  }
}

/**
 * The offset of a relay's clock from ours, from one answer: the relay read its clock somewhere
 * between our send and our receive, so the offset is known to ± half the round trip.
 */
export function clockOffsetMs(answer: { serverTimeMs: number; receivedAtMs: number; rttMs: number }): number {
  return answer.serverTimeMs - (answer.receivedAtMs - answer.rttMs / 2)
}

/** `clock`: skew against the relays' clocks (PEERUP-TIME in their STUN answers). */
export function clockCheck(nat: NatReport | undefined): Check {
  const timed = (nat?.probes ?? []).flatMap((p) =>
    p.answer?.serverTimeMs === undefined
      ? []
      : [
          {
            endpoint: p.endpoint,
            offsetMs: clockOffsetMs({ ...p.answer, serverTimeMs: p.answer.serverTimeMs }),
            rttMs: p.answer.rttMs,
          },
        ],
  )
  if (timed.length === 0) {
    return {
      id: 'clock',
      status: 'warn',
      summary: 'not measured: no relay told its time (it answers no STUN here, or runs an older peerup)',
      fix: 'see the nat check; upgrade the relay to tell its clock',
    }
  }
  const worst = timed.reduce((a, b) => (Math.abs(b.offsetMs) > Math.abs(a.offsetMs) ? b : a))
  const s = (ms: number): string => `${(ms / 1000).toFixed(1)} s`
  const how = `${s(Math.abs(worst.offsetMs))} ${worst.offsetMs > 0 ? 'behind' : 'ahead of'} relay ${worst.endpoint} (± ${s(worst.rttMs / 2)})`
  const details = { offsets: timed.map((t) => ({ endpoint: t.endpoint, offsetMs: Math.round(t.offsetMs) })) }
  const status: CheckStatus =
    Math.abs(worst.offsetMs) - worst.rttMs / 2 >= CLOCK_FAIL_MS
      ? 'fail'
      : Math.abs(worst.offsetMs) - worst.rttMs / 2 >= CLOCK_WARN_MS
        ? 'warn'
        : 'ok'
  return status === 'ok'
    ? { id: 'clock', status, summary: `this clock is ${how}`, details }
    : {
        id: 'clock',
        status,
        summary: `this clock is ${how}: invite codes and authorized_keys expiries are off by as much`,
        fix: 'synchronise the clock (e.g. `timedatectl set-ntp true`) here or on the relay',
        details,
      }
}

// ---- paths ----

/** Why a RELAYED path is relayed: this side's NAT when it explains it, then the upgrade's own reason. */
export function relayedBecause(upgrade: UpgradeStatus | undefined, nat: NatReport | undefined): string {
  const side =
    nat?.mapping === 'endpoint-dependent'
      ? 'symmetric NAT on this side; '
      : nat?.mapping === 'udp-blocked'
        ? 'UDP blocked on this side; '
        : ''
  return `${side}${relayedReason(upgrade)}`
}

/** `paths`: every peer the daemon reaches only through a relay, and why. Undefined: no daemon. */
export function pathsCheck(paths: readonly PathState[] | undefined, nat: NatReport | undefined): Check {
  if (paths === undefined) {
    return {
      id: 'paths',
      status: 'warn',
      summary: 'not checked: paths are the daemon’s, which is not running',
      fix: 'start it with `peerup daemon`',
    }
  }
  const relayed = paths.filter((p) => p.path?.type === 'RELAYED')
  const direct = paths.filter((p) => p.path?.type === 'DIRECT').length
  const details = {
    paths: paths.map((p) => ({
      peer: p.peerId,
      name: p.name ?? null,
      path: p.path?.type ?? null,
      ...(p.path?.type === 'RELAYED' ? { why: relayedBecause(p.upgrade, nat) } : {}),
    })),
  }
  if (relayed.length === 0) {
    return {
      id: 'paths',
      status: 'ok',
      summary:
        paths.length === 0
          ? 'no peer connected'
          : `${direct} peer${direct === 1 ? '' : 's'} on a DIRECT path`,
      details,
    }
  }
  return {
    id: 'paths',
    status: 'warn',
    summary: relayed
      .map((p) => `${p.name ?? shortId(p.peerId)} is RELAYED because: ${relayedBecause(p.upgrade, nat)}`)
      .join('; '),
    fix: 'traffic still flows, through the relay; see the nat and direct checks for this side',
    details,
  }
}

// ---- the native addon ----

/** `native-addon`: the cache the single executable unpacks node-datachannel (WebRTC) into. */
export function nativeAddonCheck(entries: readonly AddonCacheEntry[] | undefined): Check {
  if (entries === undefined) {
    return {
      id: 'native-addon',
      status: 'ok',
      summary: 'running from source: node-datachannel loads from node_modules',
    }
  }
  const missing = entries.filter((e) => e.file === undefined)
  const details = {
    addons: entries.map((e) => ({ name: e.name, file: e.file ?? null, problems: e.problems })),
  }
  if (missing.length === 0) {
    return {
      id: 'native-addon',
      status: 'ok',
      summary: entries.map((e) => `${e.name} cached at ${e.file}`).join('; '),
      details,
    }
  }
  const unsafe = missing.some((e) =>
    e.problems.some((p) => /owned by|writable by other|not a directory/.test(p)),
  )
  return {
    id: 'native-addon',
    status: unsafe ? 'fail' : 'warn',
    // The first directory's reason is the one that matters; every directory's is in `details`.
    summary: missing
      .map((e) => `${e.name} not cached: ${e.problems[0] ?? 'no directory to hold it'}`)
      .join('; '),
    fix: unsafe
      ? 'make the cache directory private (`chmod 700` it, owned by you) or set PEERUP_CACHE_DIR to one'
      : 'nothing to do: it is unpacked the first time it is used',
    details,
  }
}
