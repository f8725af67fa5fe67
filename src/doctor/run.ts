/**
 * `peerup doctor`: observes this node — its files, its daemon and socket, its relays over TCP and
 * STUN, the native addon's cache — and hands each observation to its check (src/doctor/checks.ts).
 * `fix` repairs only what is safe: file modes, and a socket file nobody listens on. Loads no
 * libp2p: it must work when the daemon cannot start.
 *
 * @packageDocumentation
 */

import { lookup } from 'node:dns/promises'
import * as fs from 'node:fs/promises'
import * as net from 'node:net'
import * as path from 'node:path'
import type { PathState, RelayState } from '../api/index.ts'
import type { Client } from '../client/client.ts'
import { DaemonNotRunningError } from '../client/local.ts'
import { checkNodeFiles } from '../config/check.ts'
import { loadNodeConfig, resolveIn } from '../config/load.ts'
import { locateNetworkConfig } from '../config/networks.ts'
import { NODE_FILES } from '../config/paths.ts'
import type { NodeConfig } from '../config/schema.ts'
import { formatError } from '../errors.ts'
import { addonCacheState } from '../native/addon.ts'
import { multiaddrTarget } from '../util/multiaddr.ts'
import { socketAnswers } from '../util/socket.ts'
import { VERSION } from '../version.ts'
import {
  type Check,
  clockCheck,
  configCheck,
  type DaemonAnswer,
  type DoctorReport,
  daemonCheck,
  directCheck,
  type FileMode,
  fileModesCheck,
  narrowedMode,
  natCheck,
  nativeAddonCheck,
  notCheckedWithoutConfig,
  pathsCheck,
  type RelayProbe,
  relayChecks,
  reservationChecks,
  type SocketState,
  socketCheck,
  tooWide,
} from './checks.ts'
import { measureNat, type NatReport, type StunTarget } from './nat.ts'

/** How long a relay's TCP port has to accept a connection. */
export const RELAY_TCP_TIMEOUT_MS = 3_000

/** Options of {@link runDoctor}. */
export interface DoctorOptions {
  configFile: string
  /** Repair what is safe (file modes, a stale socket). */
  fix: boolean
  /** The daemon's API, asked only when its socket answers. */
  client: Pick<Client, 'call'>
  signal?: AbortSignal
  /** Bound of each STUN exchange (tests shorten it). */
  stunTimeoutMs?: number
}

/** Runs every check (see the module doc) and returns them in the order they are shown. */
export async function runDoctor(options: DoctorOptions): Promise<DoctorReport> {
  const { configFile, fix, signal } = options
  // Modes first: a key readable by others makes the config check fail too, until fixed.
  const modes = await fileModes(configFile, await loadedConfig(configFile))
  const fixedModes: FileMode[] = []
  if (fix) {
    for (const f of tooWide(modes)) {
      await fs.chmod(f.file, narrowedMode(f))
      fixedModes.push(f)
    }
  }
  const checked = await checkNodeFiles(configFile)
  const config = await loadedConfig(configFile)

  // A further network's daemon is the main config's, on its socket (src/config/networks.ts).
  const socketPath = path.join(
    path.dirname(locateNetworkConfig(configFile).mainConfigFile),
    NODE_FILES.socket,
  )
  const socket = await socketState(socketPath)
  let removed = false
  if (fix && socket === 'stale') {
    await fs.rm(socketPath, { force: true })
    removed = true
  }
  const daemon = socket === 'answers' ? await askDaemon(options.client, signal) : undefined

  const relays = config?.relay.addresses ?? []
  const [relayProbes, nat] = await Promise.all([
    Promise.all(relays.map((r) => probeRelayTcp(r, signal))),
    config === undefined
      ? undefined
      : measureNodeNat(config, {
          ...(options.stunTimeoutMs === undefined ? {} : { timeoutMs: options.stunTimeoutMs }),
          ...(signal === undefined ? {} : { signal }),
        }),
  ])
  const webrtc = config?.network.listen_addresses.some((a) => a.split('/').includes('webrtc')) ?? false

  // Silence on STUN from relays that refuse TCP too is their being down, not UDP being blocked.
  const relaysDown = relayProbes.length > 0 && relayProbes.every((p) => p.latencyMs === undefined)
  const checks: Check[] = [
    configCheck(configFile, checked.problems),
    fileModesCheck(modes, fixedModes),
    daemonCheck(daemon?.answer ?? { running: false }, VERSION),
    socketCheck(socketPath, socket, removed),
    ...(config === undefined
      ? ['relay', 'reservation', 'nat', 'direct', 'clock'].map(notCheckedWithoutConfig)
      : [
          ...relayChecks(relayProbes),
          ...reservationChecks(daemon?.relays, checked.peerId),
          natCheck(nat, relaysDown),
          directCheck(nat, webrtc, relaysDown),
          clockCheck(nat),
        ]),
    pathsCheck(daemon?.paths, nat),
    nativeAddonCheck(addonCacheState()),
  ]
  return { version: 1, checks }
}

/** The config when it loads, else undefined (the config check says why). */
async function loadedConfig(configFile: string): Promise<NodeConfig | undefined> {
  try {
    return (await loadNodeConfig(configFile)).config
  } catch {
    return undefined
  }
}

/** The modes of the files a node keeps: its config's names when it loads, else the defaults. */
async function fileModes(configFile: string, config: NodeConfig | undefined): Promise<FileMode[]> {
  const dir = path.dirname(configFile)
  const files: Array<Omit<FileMode, 'mode'>> = [
    { file: configFile, kind: 'trust' },
    { file: resolveIn(dir, config?.identity.key_file ?? 'identity.key'), kind: 'secret' },
    { file: resolveIn(dir, config?.security.authorized_keys_file ?? 'authorized_keys'), kind: 'trust' },
    {
      file: path.join(path.dirname(locateNetworkConfig(configFile).mainConfigFile), NODE_FILES.cookie),
      kind: 'secret',
    },
  ]
  return Promise.all(
    files.map(async (f) => {
      try {
        return { ...f, mode: (await fs.stat(f.file)).mode & 0o777 }
      } catch {
        return { ...f, mode: undefined }
      }
    }),
  )
}

/** What the socket file is: answering, missing, left behind, or something else entirely. */
async function socketState(socketPath: string): Promise<SocketState> {
  try {
    const st = await fs.lstat(socketPath)
    if (!st.isSocket()) {
      return 'not-a-socket'
    }
  } catch {
    return 'missing'
  }
  return (await socketAnswers(socketPath)) ? 'answers' : 'stale'
}

/** The daemon's status, relays and paths; a daemon that stopped meanwhile counts as not running. */
async function askDaemon(
  client: Pick<Client, 'call'>,
  signal: AbortSignal | undefined,
): Promise<{ answer: DaemonAnswer; relays?: RelayState[]; paths?: PathState[] }> {
  try {
    const [status, paths] = await Promise.all([
      client.call('status', {}, signal),
      client.call('paths', {}, signal),
    ])
    return {
      answer: {
        running: true,
        version: status.version,
        pid: status.pid,
        uptimeSeconds: status.uptimeSeconds,
      },
      relays: status.relays,
      paths,
    }
  } catch (err) {
    if (err instanceof DaemonNotRunningError) {
      return { answer: { running: false } }
    }
    return { answer: { running: 'error', error: formatError(err) } }
  }
}

/** Connects to a relay's TCP port and times it (the TCP handshake only: no libp2p). */
export function probeRelayTcp(relay: string, signal?: AbortSignal): Promise<RelayProbe> {
  const target = multiaddrTarget(relay)
  if (target?.tcpPort === undefined) {
    return Promise.resolve({
      relay,
      target: relay,
      error: 'the address has no host and TCP port to connect to',
    })
  }
  const shown =
    target.family === 6 ? `[${target.host}]:${target.tcpPort}` : `${target.host}:${target.tcpPort}`
  return new Promise((resolve) => {
    const started = performance.now()
    const socket = net.connect({ host: target.host, port: target.tcpPort as number })
    const done = (probe: Omit<RelayProbe, 'relay' | 'target'>): void => {
      clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
      socket.destroy()
      resolve({ relay, target: shown, ...probe })
    }
    const onAbort = (): void => done({ error: 'aborted' })
    const timer = setTimeout(
      () => done({ error: `no answer within ${RELAY_TCP_TIMEOUT_MS / 1000} s` }),
      RELAY_TCP_TIMEOUT_MS,
    )
    signal?.addEventListener('abort', onAbort, { once: true })
    socket.once('connect', () => done({ latencyMs: performance.now() - started }))
    socket.once('error', (err: NodeJS.ErrnoException) => done({ error: err.code ?? err.message }))
  })
}

/**
 * This node's NAT measured against its relays' STUN responders (src/doctor/nat.ts), or undefined
 * when there is none to ask (no relay, `relay.stun_port: 0`, IPv6 relays only).
 */
export async function measureNodeNat(
  config: NodeConfig,
  options: { timeoutMs?: number; signal?: AbortSignal } = {},
): Promise<NatReport | undefined> {
  const targets = await stunTargets(config.relay.addresses, config.relay.stun_port)
  return targets.length === 0 ? undefined : measureNat(targets, options)
}

/** The IPv4 STUN endpoint of each relay (a DNS name resolved), on `port`; none when `port` is 0. */
async function stunTargets(relays: readonly string[], port: number): Promise<StunTarget[]> {
  if (port === 0) {
    return []
  }
  const out: StunTarget[] = []
  for (const relay of relays) {
    const target = multiaddrTarget(relay)
    if (target === undefined || target.family === 6) {
      continue
    }
    try {
      const address = target.family === 4 ? target.host : (await lookup(target.host, { family: 4 })).address
      out.push({ relay, address: { address, port } })
    } catch {
      // A name that does not resolve: the relay check reports it.
    }
  }
  return out
}
