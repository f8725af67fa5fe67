/**
 * Reading a daemon's or relay's `/metrics` in tests.
 */

import * as http from 'node:http'

/** The Prometheus text `GET http://<address>/metrics` answers. */
export function scrape(address: string): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get(`http://${address}/metrics`, (res) => {
        let body = ''
        res.setEncoding('utf8').on('data', (d: string) => {
          body += d
        })
        res.once('end', () => resolve(body))
      })
      .once('error', reject)
  })
}

/** The value of one sample, e.g. `peerup_proxy_bytes_total{direction="in",service="echo"}`. */
export function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) {
      continue
    }
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) {
      return Number(line.slice(line.lastIndexOf(' ') + 1))
    }
  }
  return undefined
}
