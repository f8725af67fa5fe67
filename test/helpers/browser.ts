/**
 * Headless Chromium for the dashboard's tests (Debian's `chromium`, which .ci/run installs), driven
 * over the DevTools protocol with Node's own WebSocket: no browser download, no puppeteer.
 * docs/decisions/0014-web-dashboard.md says why.
 */

import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import * as fs from 'node:fs/promises'
import * as os from 'node:os'
import * as path from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'

/** The browser's command, or undefined when it is not installed. */
export function chromiumCommand(): string | undefined {
  for (const cmd of ['chromium', 'chromium-browser']) {
    if (spawnSync(cmd, ['--version'], { stdio: 'ignore' }).status === 0) {
      return cmd
    }
  }
  return undefined
}

/** How long one wait for the page may take before the test fails with what it waited for. */
const WAIT_MS = 60_000

/** A page of a running browser. */
export interface Page {
  /** Loads `url` and resolves once its `load` event fired. */
  navigate(url: string): Promise<void>
  /** The value of a JavaScript expression in the page (awaited when it is a promise). */
  evaluate<T = unknown>(expression: string): Promise<T>
  /** Resolves with the expression's value once it is truthy, polling the page; fails after `WAIT_MS`. */
  waitFor<T = unknown>(expression: string, what: string): Promise<T>
  /** Sets the viewport, like a window of `width`×`height` CSS pixels. */
  viewport(width: number, height: number): Promise<void>
  /** Saves a PNG of the page (the whole page, beyond the viewport) to `file`. */
  screenshot(file: string): Promise<void>
}

export interface Browser {
  page: Page
  /** Kills the browser and its children and removes its profile. */
  close(): Promise<void>
}

/** A DevTools connection to one target. */
class Cdp {
  readonly #ws: WebSocket
  #next = 1
  readonly #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>()
  readonly #listeners = new Map<string, Array<(params: unknown) => void>>()

  private constructor(ws: WebSocket) {
    this.#ws = ws
    ws.addEventListener('message', (evt) => {
      const msg = JSON.parse(String(evt.data)) as {
        id?: number
        result?: unknown
        error?: { message: string }
        method?: string
        params?: unknown
      }
      if (msg.id !== undefined) {
        const p = this.#pending.get(msg.id)
        this.#pending.delete(msg.id)
        if (msg.error !== undefined) {
          p?.reject(new Error(msg.error.message))
        } else {
          p?.resolve(msg.result)
        }
      } else if (msg.method !== undefined) {
        for (const fn of this.#listeners.get(msg.method) ?? []) {
          fn(msg.params)
        }
      }
    })
    ws.addEventListener('close', () => {
      for (const p of this.#pending.values()) {
        p.reject(new Error('the browser closed the DevTools connection'))
      }
      this.#pending.clear()
    })
  }

  static async connect(url: string): Promise<Cdp> {
    const ws = new WebSocket(url)
    await new Promise<void>((resolve, reject) => {
      ws.addEventListener('open', () => resolve(), { once: true })
      ws.addEventListener('error', () => reject(new Error(`cannot connect to ${url}`)), { once: true })
    })
    return new Cdp(ws)
  }

  send<T = Record<string, unknown>>(method: string, params: Record<string, unknown> = {}): Promise<T> {
    const id = this.#next++
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject })
      this.#ws.send(JSON.stringify({ id, method, params }))
    })
  }

  once(method: string): Promise<unknown> {
    return new Promise((resolve) => {
      const list = this.#listeners.get(method) ?? []
      const fn = (params: unknown): void => {
        list.splice(list.indexOf(fn), 1)
        resolve(params)
      }
      list.push(fn)
      this.#listeners.set(method, list)
    })
  }

  close(): void {
    this.#ws.close()
  }
}

/** Starts headless `command` on a fresh profile and opens a DevTools connection to its page. */
export async function launchBrowser(command: string): Promise<Browser> {
  const profile = await fs.mkdtemp(path.join(os.tmpdir(), 'peerup-chromium-'))
  // Its own process group: the renderers and the GPU process go with it.
  const child: ChildProcess = spawn(
    command,
    [
      '--headless=new',
      '--remote-debugging-port=0',
      '--remote-debugging-address=127.0.0.1',
      `--user-data-dir=${profile}`,
      // Root in a container has no user namespaces for the sandbox.
      ...(process.getuid?.() === 0 ? ['--no-sandbox'] : []),
      '--disable-gpu',
      '--disable-dev-shm-usage',
      '--no-first-run',
      '--no-default-browser-check',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--metrics-recording-only',
      'about:blank',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'], detached: true },
  )
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const close = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
      try {
        process.kill(-child.pid, 'SIGKILL')
      } catch {
        // Gone already.
      }
      await exited
    }
    await fs.rm(profile, { recursive: true, force: true })
  }
  try {
    const endpoint = await new Promise<string>((resolve, reject) => {
      let err = ''
      child.stderr?.setEncoding('utf8').on('data', (d: string) => {
        err += d
        const m = /DevTools listening on (ws:\/\/\S+)/.exec(err)
        if (m?.[1] !== undefined) {
          resolve(m[1])
        }
      })
      child.once('exit', (code) => reject(new Error(`${command} exited ${code}: ${err.slice(-2000)}`)))
      child.once('error', reject)
    })
    child.stderr?.resume()
    const port = new URL(endpoint).port
    const targets = (await (await fetch(`http://127.0.0.1:${port}/json/list`)).json()) as Array<{
      type: string
      webSocketDebuggerUrl: string
    }>
    const target = targets.find((t) => t.type === 'page')
    if (target === undefined) {
      throw new Error('the browser has no page')
    }
    const cdp = await Cdp.connect(target.webSocketDebuggerUrl)
    await cdp.send('Page.enable')
    await cdp.send('Runtime.enable')
    const evaluate = async <T>(expression: string): Promise<T> => {
      const r = await cdp.send<{ result: { value?: T }; exceptionDetails?: { text: string } }>(
        'Runtime.evaluate',
        { expression, returnByValue: true, awaitPromise: true },
      )
      if (r.exceptionDetails !== undefined) {
        throw new Error(`${expression}: ${r.exceptionDetails.text}`)
      }
      return r.result.value as T
    }
    const page: Page = {
      navigate: async (url) => {
        const loaded = cdp.once('Page.loadEventFired')
        await cdp.send('Page.navigate', { url })
        await loaded
      },
      evaluate,
      waitFor: async <T>(expression: string, what: string): Promise<T> => {
        const deadline = Date.now() + WAIT_MS
        for (;;) {
          const value = await evaluate<T>(expression)
          if (value) {
            return value
          }
          if (Date.now() > deadline) {
            throw new Error(`the page did not show ${what} within ${WAIT_MS / 1000} s`)
          }
          await delay(50)
        }
      },
      viewport: async (width, height) => {
        await cdp.send('Emulation.setDeviceMetricsOverride', {
          width,
          height,
          deviceScaleFactor: 1,
          mobile: width < 600,
        })
      },
      screenshot: async (file) => {
        const { data } = await cdp.send<{ data: string }>('Page.captureScreenshot', {
          format: 'png',
          captureBeyondViewport: true,
        })
        await fs.mkdir(path.dirname(file), { recursive: true })
        await fs.writeFile(file, Buffer.from(data, 'base64'))
      },
    }
    return {
      page,
      close: async () => {
        cdp.close()
        await close()
      },
    }
  } catch (err) {
    await close()
    throw err
  }
}
