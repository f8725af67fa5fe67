/**
 * The services a node offers, each a `/peerup/<name>/1.0.0` protocol handler bridging streams to a
 * local TCP service: the ones from config.yaml and the ones added at run time through the daemon's
 * `expose`. Removing a service resets its sessions before the protocol is unhandled.
 *
 * @packageDocumentation
 */

import type { Libp2p } from '@libp2p/interface'
import { ConflictError, NotFoundError } from '../errors.ts'
import type { Logger } from '../log/index.ts'
import type { Direction, Tracked } from '../pipe/pipe.ts'
import { flowControlledProtocol } from '../pipe/stream.ts'
import { parseHostPort } from '../util/address.ts'
import { SERVICE_HANDLE_OPTIONS } from './constants.ts'
import { ProxyError } from './errors.ts'
import { createServiceHandler, type InboundRoute, type ServiceEvent, type ServiceHandler } from './service.ts'

export function serviceProtocolFor(name: string): string {
  return `/peerup/${name}/1.0.0`
}

export interface ServiceSpec {
  name: string
  localAddress: string
  /** More ports of local address's host it offers (config `ports:`), as sorted ranges. */
  ports?: Array<[number, number]> | undefined
  /** Peer ids (already resolved from names); empty: every authorized peer. */
  allowedPeers: string[]
  source: 'config' | 'runtime'
}

/** An offered service and its live state. */
export interface OfferedService extends ServiceSpec {
  protocol: string
  activeConnections: number
}

export interface ServiceRegistryInit {
  log: Logger
  /**
   * Whether a peer is authorized (authorized_keys, or gating off). Gating already refused the
   * others; this holds even for a peer let in to pair (src/auth/gater.ts `admitRelayed`).
   */
  isAuthorized?: (peerId: string) => boolean
  onConnection?: (event: ServiceEvent) => void
  onBytes?: (service: string, direction: Direction, n: number) => void
  /** A record of each connection to a service, into which its bytes are counted. Must not throw. */
  track?: (connection: { service: ServiceSpec; peer: string; route: InboundRoute }) => Tracked | undefined
}

export class ServiceRegistry {
  readonly #node: Libp2p
  readonly #init: ServiceRegistryInit
  readonly #services = new Map<
    string,
    { spec: ServiceSpec; handler: ServiceHandler; allows: (peer: string) => boolean }
  >()

  constructor(node: Libp2p, init: ServiceRegistryInit) {
    this.#node = node
    this.#init = init
  }

  /** Starts offering a service; a name already offered is a conflict. */
  async expose(spec: ServiceSpec): Promise<OfferedService> {
    if (this.#services.has(spec.name)) {
      throw new ConflictError(`service ${spec.name} is already offered`, {
        hint: `remove it first (\`peerup service remove ${spec.name}\`, or DELETE /v1/expose/${spec.name})`,
      })
    }
    const allowed = new Set(spec.allowedPeers)
    // allowed_peers narrows who may use this service; gating already required authorization.
    const allows = (peer: string): boolean =>
      (this.#init.isAuthorized?.(peer) ?? true) && (allowed.size === 0 || allowed.has(peer))
    const handler = createServiceHandler({
      name: spec.name,
      localAddress: spec.localAddress,
      isAllowed: allows,
      log: this.#init.log.child(`service.${spec.name}`),
      ...(this.#init.onConnection === undefined ? {} : { onConnection: this.#init.onConnection }),
      ...(this.#init.onBytes === undefined
        ? {}
        : { onBytes: (d: Direction, n: number) => this.#init.onBytes?.(spec.name, d, n) }),
      track: (peer, route) => this.#init.track?.({ service: spec, peer, route }),
    })
    this.#services.set(spec.name, { spec, handler, allows })
    try {
      // The same service framed with flow control, for connections without backpressure (WebRTC).
      await this.#node.handle(
        [serviceProtocolFor(spec.name), flowControlledProtocol(spec.name)],
        handler,
        SERVICE_HANDLE_OPTIONS,
      )
    } catch (err) {
      this.#services.delete(spec.name)
      throw err
    }
    this.#init.log.info('service exposed', {
      service: spec.name,
      local: spec.localAddress,
      source: spec.source,
    })
    return this.#describe(spec, handler)
  }

  /** Stops offering a service: its sessions are reset, new streams refused. */
  async unexpose(name: string): Promise<void> {
    const entry = this.#services.get(name)
    if (entry === undefined) {
      throw new NotFoundError(`no service named ${name} is offered`, {
        hint: 'list them with `peerup daemon services`',
      })
    }
    this.#services.delete(name)
    await entry.handler.close()
    await this.#node.unhandle([serviceProtocolFor(name), flowControlledProtocol(name)])
    this.#init.log.info('service removed', { service: name })
  }

  /** The handler of an offered service, if there is one by that name. */
  lookup(name: string): ServiceHandler | undefined {
    return this.#services.get(name)?.handler
  }

  /**
   * What a session asks for, as its ATTACH names it: a service's name, or `port:<n>` — the service
   * offering port n (its local address's, or one of its `ports:`), and that port
   * (docs/decisions/0009-gateway-names.md). Of several such services, the one `peer` may use; when
   * it may use none, one of them, whose `accept()` refuses it the usual way (logged, audited).
   * Throws a {@link ProxyError} saying why when nothing fits.
   */
  find(request: string, peer: string): { handler: ServiceHandler; port: number | undefined } {
    const byPort = /^port:(\d{1,5})$/.exec(request)
    if (byPort === null) {
      const handler = this.lookup(request)
      if (handler === undefined) {
        throw new ProxyError(`no service named ${request}`)
      }
      return { handler, port: undefined }
    }
    const port = Number(byPort[1])
    const offering = [...this.#services.values()].filter(({ spec }) => offersPort(spec, port))
    const usable = offering.filter((e) => e.allows(peer))
    if (usable.length > 1) {
      throw new ProxyError(
        `port ${port} is offered by services ${usable.map((e) => e.spec.name).join(' and ')}: ask for one by name (<service>.<peer>.peerup)`,
      )
    }
    const chosen = usable[0] ?? offering[0]
    if (chosen === undefined) {
      throw new ProxyError(`no service on port ${port}`)
    }
    return { handler: chosen.handler, port }
  }

  list(): OfferedService[] {
    return [...this.#services.values()].map(({ spec, handler }) => this.#describe(spec, handler))
  }

  /** Resets every session of every service (before the node stops). */
  async closeAll(): Promise<void> {
    await Promise.all([...this.#services.values()].map(({ handler }) => handler.close()))
  }

  #describe(spec: ServiceSpec, handler: ServiceHandler): OfferedService {
    return { ...spec, protocol: serviceProtocolFor(spec.name), activeConnections: handler.connections }
  }
}

/** Whether a service offers `port`: its local address's port, or one in its `ports:`. */
function offersPort(spec: ServiceSpec, port: number): boolean {
  return (
    parseHostPort(spec.localAddress).port === port ||
    (spec.ports ?? []).some(([lo, hi]) => port >= lo && port <= hi)
  )
}
