/**
 * Daemons for integration tests: `runDaemon()` in this process on a test node's config, or the
 * real `peerup daemon` as a child process (for kill -9).
 */

import { type ChildProcess, spawn } from 'node:child_process'
import * as http from 'node:http'
import * as path from 'node:path'
import { type DaemonExit, type DaemonReady, runDaemon } from '../../src/daemon/run.ts'
import { type Env, readEnv } from '../../src/env.ts'
import { createLogger } from '../../src/log/index.ts'
import type { ApiLimits } from '../../src/util/local-api.ts'

/** A daemon running in this process. */
export interface TestDaemon {
  ready: DaemonReady
  /** Settles when runDaemon returns (or rejects). */
  done: Promise<DaemonExit>
  stop(): Promise<void>
}

/** Starts `runDaemon()` on `configFile` and resolves once it serves; `apiLimits` shortens the API's timeouts. */
export async function startTestDaemon(
  configFile: string,
  env: Partial<Env> = {},
  options: { apiLimits?: Partial<ApiLimits> } = {},
): Promise<TestDaemon> {
  const controller = new AbortController()
  const { promise: readyP, resolve, reject } = Promise.withResolvers<DaemonReady>()
  const done = runDaemon({
    configFile,
    log: createLogger(`daemon.${path.basename(path.dirname(configFile))}`),
    signal: controller.signal,
    env: { ...readEnv({}), notifySocket: undefined, watchdogUsec: undefined, ...env },
    onReady: resolve,
    ...(options.apiLimits === undefined ? {} : { apiLimits: options.apiLimits }),
  })
  done.catch(reject)
  const ready = await readyP
  return {
    ready,
    done,
    stop: async () => {
      controller.abort(new Error('test done'))
      await done.catch(() => {})
    },
  }
}

/** The real `peerup daemon` in a child process; resolves once its API answers. */
export async function spawnDaemon(configFile: string, env = process.env): Promise<ChildProcess> {
  const entry = path.resolve(import.meta.dirname, '../../bin/peerup.js')
  const child = spawn(process.execPath, [entry, 'daemon', '--config', configFile, '--log-level', 'info'], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env,
  })
  let err = ''
  child.stderr?.setEncoding('utf8').on('data', (d: string) => {
    err += d
  })
  await new Promise<void>((resolve, reject) => {
    const onData = (): void => {
      if (err.includes('"msg":"daemon started"')) {
        child.stderr?.off('data', onData)
        resolve()
      }
    }
    child.stderr?.on('data', onData)
    child.once('exit', (code) => reject(new Error(`daemon exited ${code}: ${err}`)))
  })
  return child
}

/**
 * A raw HTTP request on a Unix socket (or a TCP `host:port`: the dashboard's listener), for the
 * tests of the API's guards.
 */
export function rawRequest(
  target: string | { host: string; port: number },
  options: { method?: string; path: string; headers?: Record<string, string>; body?: string | Buffer },
): Promise<{ status: number; body: string; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        ...(typeof target === 'string' ? { socketPath: target } : target),
        method: options.method ?? 'GET',
        path: options.path,
        headers: {
          ...(options.body === undefined
            ? {}
            : { 'Content-Length': String(Buffer.byteLength(options.body)) }),
          ...options.headers,
        },
      },
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.once('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            body: Buffer.concat(chunks).toString('utf8'),
            headers: res.headers,
          }),
        )
      },
    )
    // The server may answer (413) and close before the whole body is sent.
    req.once('error', (e: NodeJS.ErrnoException) =>
      e.code === 'EPIPE' || e.code === 'ECONNRESET' ? undefined : reject(e),
    )
    req.end(options.body)
  })
}
