/**
 * The gateway: a SOCKS5 listener and an HTTP CONNECT listener in the daemon, for every TCP client
 * that is not ssh. A client names `<service>.<peer>.peerup` (that service, whatever the port) or
 * `<peer>.peerup:<port>` (the service the peer offers on that port); each accepted connection is a
 * session to that service, piped by the same listener and `pipe()` as `peerup proxy`'s
 * (src/pipe/listener.ts) — only the handshake in front differs. A refusal is answered in the
 * client's protocol (a SOCKS reply code, an HTTP status), logged and audited
 * (docs/decisions/0009-gateway-names.md).
 *
 * config.yaml's `socks:` runs one for as long as the daemon does ({@link ConfigGateway}, which
 * follows changes to the file); `peerup socks` holds one for as long as it runs.
 *
 * @packageDocumentation
 */

import * as fs from 'node:fs/promises'
import type { SocksHoldLine } from '../api/index.ts'
import { resolveIn } from '../config/load.ts'
import { isLoopbackHost, type NodeConfig } from '../config/schema.ts'
import { NotFoundError, PeerupError, UsageError } from '../errors.ts'
import type { Logger } from '../log/index.ts'
import type { Observer } from '../metrics/observer.ts'
import { PeerRefusedError, PeerUnreachableError, ServiceRefusedError } from '../p2p/errors.ts'
import { describePath } from '../p2p/path.ts'
import type { NodeRuntime } from '../p2p/runtime.ts'
import type { ByteEnd } from '../pipe/end.ts'
import { ClientToldError } from '../pipe/errors.ts'
import { type Listener, type ListenerInit, startListener } from '../pipe/listener.ts'
import { httpConnectHandshake, httpConnectReply } from '../proxy/http-connect.ts'
import type { HandshakeError } from '../proxy/reader.ts'
import { peerupTarget, SocksReply, type SocksReplyCode, socksHandshake, socksReply } from '../proxy/socks.ts'
import { formatHostPort, type HostPort, parseHostPort, parseListenAddress } from '../util/address.ts'
import type { Component } from '../util/components.ts'
import { checkFileMode } from '../util/fs.ts'
import { proxyCounting } from './proxies.ts'
import type { DaemonComponents } from './run.ts'

/** How long a client has for its handshake (the SOCKS greeting and request, the CONNECT head). */
export const GATEWAY_HANDSHAKE_TIMEOUT_MS = 10_000

/** What a gateway listens on and asks of its clients. */
export interface GatewaySettings {
  /** Where SOCKS5 is served; none when undefined. */
  socks?: HostPort | undefined
  /** Where HTTP CONNECT is served; none when undefined. */
  http?: HostPort | undefined
  /** What clients must log in with; none asked when undefined. Never logged. */
  credentials?: { user: string; password: string } | undefined
}

/** What a gateway's connections report to. */
export interface GatewayDeps {
  rt: NodeRuntime
  log: Logger
  observer: Observer
}

/** A running gateway. */
export interface Gateway {
  /** The bound addresses (the real ports when 0 was asked for). */
  readonly socks: HostPort | undefined
  readonly http: HostPort | undefined
  /** Connections being opened or piped now. */
  readonly connections: number
  /** Stops listening and resets every connection. */
  close(): Promise<void>
}

/** The label of a gateway listener in logs, metrics and audit lines. */
type Kind = 'socks' | 'http'

/** How a refusal is answered: the SOCKS reply code (RFC 1928 §6) and the HTTP status. */
interface Answer {
  socks: SocksReplyCode
  http: number
}

const ANSWERS = {
  /** Not a name under .peerup, or no peer of that name: what a name that does not resolve gets. */
  unknownName: { socks: SocksReply.hostUnreachable, http: 404 },
  /** The peer's gater, or the service's allowed_peers, refuses this node. */
  notAllowed: { socks: SocksReply.notAllowed, http: 403 },
  /** The peer offers no such service (or nothing on that port), or its local address refused. */
  refused: { socks: SocksReply.connectionRefused, http: 502 },
  /** The peer did not answer within proxy.connect_timeout. */
  unreachable: { socks: SocksReply.hostUnreachable, http: 504 },
  failed: { socks: SocksReply.generalFailure, http: 502 },
} satisfies Record<string, Answer>

/** The answer a failure to open the session gets. */
export function answerFor(err: unknown): Answer {
  if (err instanceof NotFoundError) {
    return ANSWERS.unknownName
  }
  if (err instanceof PeerRefusedError) {
    return ANSWERS.notAllowed
  }
  if (err instanceof ServiceRefusedError) {
    return /is not allowed/.test(err.message) ? ANSWERS.notAllowed : ANSWERS.refused
  }
  if (err instanceof PeerUnreachableError) {
    return ANSWERS.unreachable
  }
  return ANSWERS.failed
}

/** Starts the listeners `settings` asks for; a port that cannot be bound is an error, and none is left listening. */
export async function startGateway(settings: GatewaySettings, deps: GatewayDeps): Promise<Gateway> {
  const listeners: Partial<Record<Kind, Listener>> = {}
  const counts = { totalConnections: 0, bytesIn: 0, bytesOut: 0 }
  try {
    for (const kind of ['socks', 'http'] as const) {
      const at = settings[kind]
      if (at !== undefined) {
        listeners[kind] = await startListener({
          host: at.host,
          port: at.port,
          log: deps.log.child(kind),
          open: opener(kind, settings, deps),
          // The handshake cannot be read twice; the wait for the peer is the session's own.
          retry: { attempts: 1 },
          ...proxyCounting(
            counts,
            {
              rt: deps.rt,
              proxy: `gateway-${kind}`,
              service: () => 'gateway',
              local: () =>
                `${kind === 'socks' ? 'socks5' : 'http-connect'} ${formatHostPort(at.host, at.port)}`,
            },
            deps.observer,
          ),
        })
      }
    }
  } catch (err) {
    await Promise.all(Object.values(listeners).map((l) => l?.close()))
    throw err
  }
  return {
    socks: listeners.socks?.address,
    http: listeners.http?.address,
    get connections() {
      return (listeners.socks?.connections ?? 0) + (listeners.http?.connections ?? 0)
    },
    close: async () => {
      await Promise.all(Object.values(listeners).map((l) => l?.close()))
    },
  }
}

/** Opens the session a gateway client asks for, answering it in its protocol either way. */
function opener(kind: Kind, settings: GatewaySettings, deps: GatewayDeps): ListenerInit['open'] {
  const { rt, log, observer } = deps
  return async (signal, socket): Promise<ByteEnd> => {
    const client = formatHostPort(socket.remoteAddress ?? '?', socket.remotePort ?? 0)
    const refused = (reason: string, target: string, reply: number | undefined, cause?: unknown): never => {
      log.info('gateway refused a client', { listener: kind, client, target, reply, error: reason })
      observer.gatewayRefusal(kind, client, target, reply, reason)
      throw new ClientToldError(reason, { cause })
    }
    const handshake = { signal: AbortSignal.any([signal, AbortSignal.timeout(GATEWAY_HANDSHAKE_TIMEOUT_MS)]) }
    const credentials = settings.credentials === undefined ? {} : { credentials: settings.credentials }
    let request: { host: string; port: number }
    try {
      request = await (kind === 'socks' ? socksHandshake : httpConnectHandshake)(socket, {
        ...handshake,
        ...credentials,
      })
    } catch (err) {
      signal.throwIfAborted()
      const e = err as HandshakeError
      return refused(e.message, '', e.answer, err)
    }
    const target = formatHostPort(request.host, request.port)
    const answer = (a: Answer, message = ''): void =>
      kind === 'socks' ? socksReply(socket, a.socks) : httpConnectReply(socket, a.http, message)
    const to = peerupTarget(request.host, request.port, (name) => rt.config.names[name] !== undefined)
    if (to === undefined) {
      const reason = `${request.host} is not a peer's name: ask for <service>.<peer>.peerup or <peer>.peerup:<port>`
      answer(ANSWERS.unknownName, reason)
      return refused(reason, target, ANSWERS.unknownName[kind])
    }
    try {
      const waitMs = rt.config.proxy.connect_timeout
      const opened = await rt.openSession(to.peer, to.service, { signal, waitMs })
      answer({ socks: SocksReply.succeeded, http: 200 })
      log.info('gateway connection opened', {
        listener: kind,
        client,
        peer: to.peer,
        service: to.service,
        path: describePath(opened.path, rt.config.names),
      })
      return opened.end
    } catch (err) {
      signal.throwIfAborted()
      const a = answerFor(err)
      const reason = err instanceof Error ? err.message : String(err)
      answer(a, reason)
      return refused(reason, target, a[kind], err)
    }
  }
}

/**
 * A gateway held for as long as `signal` is not aborted (`POST /v1/socks/hold`, `peerup socks`):
 * on loopback only and without a login. Yields where it listens; closes it (resetting its
 * connections) when the caller goes away.
 */
export async function* holdGateway(
  req: { listen: string; http?: string | undefined },
  deps: GatewayDeps,
  signal: AbortSignal,
): AsyncGenerator<SocksHoldLine> {
  const socks = parseListenAddress(req.listen)
  const http = req.http === undefined ? undefined : parseListenAddress(req.http)
  for (const at of [socks, http]) {
    if (at !== undefined && !isLoopbackHost(at.host)) {
      throw new UsageError(`${formatHostPort(at.host, at.port)} is not a loopback address`, {
        hint: 'peerup socks listens on this machine only; for a gateway other machines use, set socks: in config.yaml with a username and password_file',
      })
    }
  }
  const gateway = await startGateway({ socks, http }, deps)
  try {
    yield {
      type: 'listening',
      socks: addressText(gateway.socks),
      ...(gateway.http === undefined ? {} : { http: addressText(gateway.http) }),
    }
    if (!signal.aborted) {
      await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }))
    }
  } finally {
    await gateway.close()
  }
}

/** The gateway config.yaml's `socks:` asks for: undefined when it is off. */
export async function configGatewaySettings(
  config: NodeConfig,
  dir: string,
): Promise<GatewaySettings | undefined> {
  const s = config.socks
  if (!s.enabled) {
    return undefined
  }
  let credentials: GatewaySettings['credentials']
  if (s.password_file !== '') {
    const file = resolveIn(dir, s.password_file)
    await checkFileMode(file, 'secret')
    // One line; the newline an editor or `echo` adds is not part of it.
    const password = (await fs.readFile(file, 'utf8')).replace(/\r?\n$/, '')
    if (password === '' || Buffer.byteLength(password) > 255) {
      throw new PeerupError(`${file} must hold the gateway's password, 1 to 255 bytes`, {
        hint: 'write the password alone into it (mode 0600)',
      })
    }
    credentials = { user: s.username, password }
  }
  return {
    socks: parseHostPort(s.listen_address),
    http: s.http_listen_address === '' ? undefined : parseHostPort(s.http_listen_address),
    credentials,
  }
}

/** What {@link ConfigGateway} uses; read at start and later. */
type ConfigGatewayComponents = Pick<DaemonComponents, 'runtime' | 'log' | 'observer'>

/**
 * The gateway of config.yaml's `socks:`: `start()` runs it as the file says, {@link sync} brings
 * it in line with the file after a change (the daemon's reload), `stop()` closes it. A gateway that
 * cannot start (its port in use, its password file unreadable) is logged, and does not stop the
 * daemon; the next change of the file tries again.
 */
export class ConfigGateway implements Component {
  readonly #components: ConfigGatewayComponents
  #gateway: Gateway | undefined
  /** The `socks:` section applied last (the password file's text is read again at each sync). */
  #applied: string | undefined
  #queue: Promise<unknown> = Promise.resolve()

  constructor(components: ConfigGatewayComponents) {
    this.#components = components
  }

  /** The running gateway, if any. */
  get gateway(): Gateway | undefined {
    return this.#gateway
  }

  async start(): Promise<void> {
    await this.sync()
  }

  async stop(): Promise<void> {
    await this.#serial(async () => {
      this.#applied = undefined
      await this.#gateway?.close()
      this.#gateway = undefined
    })
  }

  /** Restarts the gateway when config.yaml's `socks:` changed; returns `['socks']` then. */
  sync(): Promise<string[]> {
    return this.#serial(async () => {
      const { runtime: rt, log, observer } = this.#components
      const section = JSON.stringify(rt.config.socks)
      if (section === this.#applied) {
        return []
      }
      this.#applied = section
      await this.#gateway?.close()
      this.#gateway = undefined
      try {
        const settings = await configGatewaySettings(rt.config, rt.dir)
        if (settings !== undefined) {
          this.#gateway = await startGateway(settings, { rt, log: log.child('gateway'), observer })
          log.info('gateway listening', {
            socks: addressText(this.#gateway.socks),
            http: addressText(this.#gateway.http),
            login: settings.credentials !== undefined,
            loopback: [this.#gateway.socks, this.#gateway.http].every(
              (a) => a === undefined || isLoopbackHost(a.host),
            ),
          })
        }
      } catch (err) {
        // Tried again when the file changes next, even back to this same section.
        this.#applied = undefined
        log.error('the gateway (socks: in config.yaml) does not listen', { error: err as Error })
      }
      return ['socks']
    })
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn, fn)
    this.#queue = run.catch(() => {})
    return run
  }
}

function addressText(a: HostPort | undefined): string {
  return a === undefined ? '' : formatHostPort(a.host, a.port)
}
