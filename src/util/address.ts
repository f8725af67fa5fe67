/**
 * `host:port` addresses as users write them: a service's local address (`localhost:22`,
 * `[::1]:22`), a listen address (`2222`, `127.0.0.1:2222`), the relay's health and STUN addresses.
 *
 * @packageDocumentation
 */

import { UsageError } from '../errors.ts'

export interface HostPort {
  host: string
  port: number
}

/** The host a local listener binds when none is given: never reachable from the network. */
export const DEFAULT_LISTEN_HOST = '127.0.0.1'

/**
 * Splits `host:port` (IPv6 in brackets: `[::1]:22`). Throws a TypeError on anything else: the config
 * schema validates addresses first, so this is a programming error where it is used.
 */
export function parseHostPort(address: string): HostPort {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(address)
  const port = Number(m?.[3])
  const host = m?.[1] ?? m?.[2]
  if (host === undefined || !Number.isInteger(port) || port > 65535) {
    throw new TypeError(`not a host:port address: ${address}`)
  }
  return { host, port }
}

/** Splits `[host:]port` (IPv6 host in brackets); the host defaults to {@link DEFAULT_LISTEN_HOST}. */
export function parseListenAddress(text: string): HostPort {
  const m = /^(?:(\[[^\]]+\]|[^:[\]]+):)?(\d{1,5})$/.exec(text.trim())
  const port = Number(m?.[2])
  if (m === null || port > 65535) {
    throw new UsageError(`invalid listen address ${JSON.stringify(text)}`, {
      hint: 'give [host:]port, like 2222 or 127.0.0.1:2222 (0 picks a free port)',
    })
  }
  return { host: (m[1] ?? DEFAULT_LISTEN_HOST).replace(/^\[|\]$/g, ''), port }
}

/** `host:port`, with an IPv6 host in brackets. */
export function formatHostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`
}
