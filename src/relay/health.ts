/**
 * `/healthz` of the relay (docs/decisions/0000-inherited.md): status, uptime and connected peers, on loopback by default,
 * and nothing else — no peer ids, no version.
 *
 * @packageDocumentation
 */

import * as http from 'node:http'
import type { AddressInfo } from 'node:net'
import { parseHostPort } from '../util/address.ts'

/** The running health endpoint. */
export interface HealthServer {
  address: { host: string; port: number }
  close(): Promise<void>
}

/** Starts the endpoint on `listen` (`host:port`). */
export async function startHealthServer(
  listen: string,
  probe: { connectedPeers: () => number },
): Promise<HealthServer> {
  const started = Date.now()
  const { host, port } = parseHostPort(listen)
  const server = http.createServer((req, res) => {
    if (req.method !== 'GET' || req.url !== '/healthz') {
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"not found"}\n')
      return
    }
    const body = {
      status: 'ok',
      uptime_seconds: Math.floor((Date.now() - started) / 1000),
      connected_peers: probe.connectedPeers(),
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
  return {
    address: { host: addr.address, port: addr.port },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}
