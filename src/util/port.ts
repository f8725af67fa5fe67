/**
 * Whether a local TCP address can be listened on, asked of the kernel by listening a moment:
 * `peerup proxy add` without a daemon checks the port before it records it, and picks a free one
 * when asked to.
 *
 * @packageDocumentation
 */

import * as net from 'node:net'
import { ConflictError, PeerupError, UsageError } from '../errors.ts'
import { formatHostPort, type HostPort } from './address.ts'

/** Why `host:port` cannot be listened on, worded for a person, from the error `listen()` gave. */
export function listenFailure(address: HostPort, err: NodeJS.ErrnoException): PeerupError {
  const where = formatHostPort(address.host, address.port)
  switch (err.code) {
    case 'EADDRINUSE':
      return new ConflictError(`cannot listen on ${where}: the port is in use`, {
        hint: 'choose another port, or stop what is using this one',
        cause: err,
      })
    case 'EADDRNOTAVAIL':
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new UsageError(`cannot listen on ${where}: ${address.host} is not an address of this machine`, {
        hint: 'use 127.0.0.1 (or leave the host out)',
        cause: err,
      })
    case 'EACCES':
      return new UsageError(`cannot listen on ${where}: permission denied`, {
        hint: 'ports below 1024 need privileges: choose a port from 1024 up',
        cause: err,
      })
    default:
      return new PeerupError(`cannot listen on ${where}: ${err.message}`, { cause: err })
  }
}

/**
 * Listens on `address` and closes again at once; resolves with the address and the port the
 * kernel gave (port 0: a free one). Rejects with {@link listenFailure}'s error.
 */
export function probeListen(address: HostPort): Promise<HostPort> {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once('error', (err: NodeJS.ErrnoException) => reject(listenFailure(address, err)))
    server.listen({ host: address.host, port: address.port, exclusive: true }, () => {
      const port = (server.address() as net.AddressInfo).port
      server.close(() => resolve({ host: address.host, port }))
    })
  })
}
