/**
 * Structured logging: `createLogger('relay').info('reservation refused', { peer })`. Lines go to
 * stderr, as text on a terminal and as JSON lines otherwise, so a service manager's journal can
 * be parsed. Values under keys that name secrets are replaced before anything is written.
 *
 * @packageDocumentation
 */

/** Log levels, least to most severe. */
export const LOG_LEVELS = ['debug', 'info', 'warn', 'error'] as const

export type LogLevel = (typeof LOG_LEVELS)[number]

/** Structured fields of a log line; values should be strings, numbers or booleans. */
export type LogFields = Record<string, unknown>

/** A logger scoped to one component: a method for each of {@link LOG_LEVELS}. */
export type Logger = Record<LogLevel, (msg: string, fields?: LogFields) => void> & {
  /** A logger for a sub-component (`relay.stun`). */
  child(component: string): Logger
}

/** Where and how log lines are written; shared by every logger of a process. */
export interface LogSink {
  level: LogLevel
  format: 'text' | 'json'
  write(line: string): void
}

// Keys whose values are secrets: they never reach a log line, whatever the caller passed.
const SECRET_KEY = /(^|_)(token|cookie|secret|password|private_?key|key_bytes|invite_?code|code)$/i

const sink: LogSink = {
  level: 'info',
  format: process.stderr.isTTY ? 'text' : 'json',
  write: (line) => {
    process.stderr.write(line)
  },
}

/** Changes the process-wide log level, format or destination. */
export function configureLogging(options: Partial<LogSink>): void {
  Object.assign(sink, options)
}

export function createLogger(component: string): Logger {
  const emit = (level: LogLevel, msg: string, fields: LogFields | undefined): void => {
    if (LOG_LEVELS.indexOf(level) < LOG_LEVELS.indexOf(sink.level)) {
      return
    }
    const clean = redact(fields)
    if (sink.format === 'json') {
      sink.write(`${JSON.stringify({ time: new Date().toISOString(), level, component, msg, ...clean })}\n`)
    } else {
      const kv = Object.entries(clean)
        .map(([k, v]) => `${k}=${typeof v === 'string' && !/\s/.test(v) ? v : JSON.stringify(v)}`)
        .join(' ')
      sink.write(`${level.toUpperCase().padEnd(5)} ${component}: ${msg}${kv === '' ? '' : ` ${kv}`}\n`)
    }
  }
  return {
    debug: (msg, fields) => emit('debug', msg, fields),
    info: (msg, fields) => emit('info', msg, fields),
    warn: (msg, fields) => emit('warn', msg, fields),
    error: (msg, fields) => emit('error', msg, fields),
    child: (sub) => createLogger(`${component}.${sub}`),
  }
}

function redact(fields: LogFields = {}): LogFields {
  return Object.fromEntries(
    Object.entries(fields).map(([k, v]) => [
      k,
      SECRET_KEY.test(k) ? '[redacted]' : v instanceof Error ? v.message : v,
    ]),
  )
}
