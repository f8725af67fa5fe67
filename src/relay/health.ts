/**
 * `/healthz` of the relay, for monitoring (docs/relay-vps.md): status, uptime and connected
 * peers, on loopback by default, and nothing else — no peer ids, no version.
 *
 * @packageDocumentation
 */

import * as http from 'node:http'
import type { AddressInfo } from 'node:net'
import { parseHostPort } from '../util/address.ts'
import type { Component } from '../util/components.ts'
import { closeHttpServer } from '../util/socket.ts'

/** What {@link HealthServer} reports. */
export interface HealthServerComponents {
  /** How many distinct peers are connected now. */
  connectedPeers(): number
}

/** Settings of {@link HealthServer}. */
export interface HealthServerInit {
  /** `host:port` (config `health.listen_address`). */
  listenAddress: string
}

/** The health endpoint: `start()` listens, `stop()` closes the listener and every connection. */
export class HealthServer implements Component {
  readonly #components: HealthServerComponents
  readonly #listen: string
  #server: http.Server | undefined
  #address: { host: string; port: number } | undefined

  constructor(components: HealthServerComponents, init: HealthServerInit) {
    this.#components = components
    this.#listen = init.listenAddress
  }

  /** The bound address (the real port when the config said 0); only once started. */
  get address(): { host: string; port: number } {
    if (this.#address === undefined) {
      throw new Error('the health endpoint is not listening')
    }
    return this.#address
  }

  /** Listens on the configured address; uptime counts from here. */
  async start(): Promise<void> {
    const started = Date.now()
    const { host, port } = parseHostPort(this.#listen)
    const server = http.createServer((req, res) => {
      if (req.method !== 'GET' || req.url !== '/healthz') {
        res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"not found"}\n')
        return
      }
      const body = {
        status: 'ok',
        uptime_seconds: Math.floor((Date.now() - started) / 1000),
        connected_peers: this.#components.connectedPeers(),
      }
      res
        .writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' })
        .end(`${JSON.stringify(body)}\n`)
    })
    server.headersTimeout = 5_000
    server.requestTimeout = 5_000
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(port, host, () => {
        server.off('error', reject)
        resolve()
      })
    })
    const addr = server.address() as AddressInfo
    this.#server = server
    this.#address = { host: addr.address, port: addr.port }
  }

  /** Closes the listener and every connection. */
  async stop(): Promise<void> {
    const server = this.#server
    this.#server = undefined
    if (server === undefined) {
      return
    }
    await closeHttpServer(server)
  }

  /** The same as {@link HealthServer.stop}. */
  close(): Promise<void> {
    return this.stop()
  }
}
