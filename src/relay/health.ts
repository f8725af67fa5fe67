/**
 * `/healthz` of the relay, for monitoring (docs/relay-vps.md): status, uptime and connected
 * peers, on loopback by default, and nothing else — no peer ids, no version.
 *
 * @packageDocumentation
 */

import { once } from 'node:events'
import * as http from 'node:http'
import { parseHostPort } from '../util/address.ts'
import type { Component } from '../util/components.ts'
import { closeHttpServer } from '../util/socket.ts'

/**
 * The health endpoint: `start()` listens, `stop()` closes the listener and every connection.
 * `connectedPeers` counts the distinct peers connected now; `listenAddress` is `host:port`
 * (config `health.listen_address`).
 */
export class HealthServer implements Component {
  readonly #components: { connectedPeers(): number }
  readonly #listen: string
  #server: http.Server | undefined

  constructor(components: { connectedPeers(): number }, init: { listenAddress: string }) {
    this.#components = components
    this.#listen = init.listenAddress
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
    server.listen(port, host)
    // Rejects with the listen error (a port taken, an address that is not here).
    await once(server, 'listening')
    this.#server = server
  }

  async stop(): Promise<void> {
    const server = this.#server
    this.#server = undefined
    if (server !== undefined) {
      await closeHttpServer(server)
    }
  }
}
