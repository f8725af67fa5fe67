/**
 * The telemetry of a daemon or a relay (`telemetry:` in its config, opt-in): its metrics
 * registry and audit log, and the {@link Observer} the other components report through.
 *
 * @packageDocumentation
 */

import { resolveIn } from '../config/load.ts'
import type { Component } from '../util/components.ts'
import { type AuditSink, openAuditLog } from './audit.ts'
import type { NodeMetrics, RelayMetrics } from './index.ts'
import { createObserver, NO_OBSERVER, type Observer } from './observer.ts'

export interface TelemetryInit {
  /** The daemon's metric families, when metrics are on. */
  node?: NodeMetrics | undefined
  /** The relay's metric families, when metrics are on. */
  relay?: RelayMetrics | undefined
  /** `telemetry.audit` of the config; off by default. */
  audit?: { enabled: boolean; file: string }
  /** The config's directory, against which a relative audit file resolves. */
  dir: string
}

/**
 * `start()` opens the audit log (when it is on) and makes the observer that writes it and the
 * metrics; `stop()` closes the log. Until started and once stopped, {@link Telemetry.observer}
 * is {@link NO_OBSERVER}.
 */
export class Telemetry implements Component {
  readonly #init: TelemetryInit
  #audit: AuditSink | undefined
  #observer: Observer = NO_OBSERVER

  constructor(init: TelemetryInit) {
    this.#init = init
  }

  /** Where metrics and audit events go. */
  get observer(): Observer {
    return this.#observer
  }

  async start(): Promise<void> {
    const { node, relay, audit, dir } = this.#init
    this.#audit = audit?.enabled === true ? await openAuditLog(resolveIn(dir, audit.file)) : undefined
    this.#observer = createObserver({ node, relay, audit: this.#audit })
  }

  async stop(): Promise<void> {
    this.#observer = NO_OBSERVER
    const audit = this.#audit
    this.#audit = undefined
    await audit?.close()
  }
}
