/**
 * `peerup invite`: print a pairing code (and a QR code on a terminal), wait for one join, exit 0.
 * With `--non-interactive` stdout holds only the code, so scripts can hand it on (docs/decisions/0000-inherited.md).
 *
 * @packageDocumentation
 */

import { renderUnicodeCompact } from 'uqr'
import type { InviteLine } from '../../api/index.ts'
import { ApiResponseError, type LocalClient } from '../../client/local.ts'
import { checkPeerName } from '../../config/ops.ts'
import { parseDurationMs } from '../../config/units.ts'
import { formatExpiry } from '../../invite/code.ts'
import { defaultMachineName } from '../../invite/names.ts'
import { MAX_SHORT_CODE_FAILURES } from '../../invite/short-code.ts'
import { createLogger } from '../../log/index.ts'
import { type CliContext, type GlobalOptions, graceful } from '../context.ts'
import { loadInvite } from '../lazy.ts'
import { viaDaemon } from '../load.ts'
import { type CliCommand, numberFlag } from '../options.ts'
import { logToStderr, note } from '../output.ts'

const MIN_TTL_MS = 30_000
const MAX_TTL_MS = 24 * 3_600_000

/** A short code and the relay it waits on, as an invite shows it. */
type ShortInvite = NonNullable<Extract<InviteLine, { type: 'code' }>['short']>

/** What an invite ended with, through the daemon or not. */
type InviteOutcome = Extract<InviteLine, { type: 'paired' }>['result']

interface InviteFlags {
  name?: string
  ttl: string
  nonInteractive?: boolean
  logLevel?: string
}

export function registerInvite(program: CliCommand, ctx: CliContext): void {
  program
    .command('invite')
    .description('print a single-use pairing code and wait for another machine to `peerup join` with it')
    .option(
      '--name <name>',
      "this machine's name, recorded by the joiner under names: (default: the hostname)",
    )
    .option('--ttl <duration>', 'how long the code stays valid', '10m')
    .option('--non-interactive', 'print only the code on stdout (no QR code), progress on stderr')
    .option('--log-level <level>', 'log level on stderr: debug, info, warn, error')
    .run(async (opts: GlobalOptions & InviteFlags) => {
      const hint = 'give a duration from 30s to 24h, like 10m or 1h'
      const ttlMs = numberFlag('ttl', opts.ttl, hint, parseDurationMs, MIN_TTL_MS, MAX_TTL_MS)
      if (opts.name !== undefined) {
        checkPeerName(opts.name)
      }
      const name = opts.name ?? defaultMachineName()
      const interactive = opts.nonInteractive !== true && ctx.stdout.isTTY === true && opts.json !== true
      logToStderr(ctx, opts.logLevel, 'warn')
      const showCode = (text: string, code: { expires: Date }, short?: ShortInvite): void => {
        if (opts.json === true) {
          const line = {
            code: text,
            expires: code.expires.toISOString(),
            ...(short === undefined ? {} : { short }),
          }
          ctx.stdout.write(`${JSON.stringify(line)}\n`)
          return
        }
        if (!interactive) {
          // Scripts get the long code alone, as always: it carries everything (`--json` has the
          // short one too). Not on stderr either, which may well be a log.
          ctx.stdout.write(`${text}\n`)
          return
        }
        const shortLines =
          short === undefined
            ? []
            : [
                `  peerup join ${short.relay} ${short.code}`,
                '',
                `or, if it already uses this relay:  peerup join ${short.code}`,
                `(${MAX_SHORT_CODE_FAILURES} wrong tries burn the short code.) Or, with the long code (or the QR code below):`,
                '',
              ]
        ctx.stdout.write(
          [
            '',
            'On the other machine, run:',
            '',
            ...shortLines,
            `  peerup join ${text}`,
            '',
            renderUnicodeCompact(text.replaceAll('-', ''), { ecc: 'L', border: 2 }),
            `The code${short === undefined ? ' works' : 's work'} once, until ${formatExpiry(code.expires)}. Anyone who has ${short === undefined ? 'it' : 'one'} can pair with this machine: share it only with the person you mean.`,
            '',
          ].join('\n'),
        )
      }
      // A running daemon answers the invite itself, so it takes the new peer at once; without
      // one, a short-lived node of our own does.
      const daemonInvite = async (client: LocalClient): Promise<InviteOutcome> => {
        for await (const line of client.lines('invite', { name, ttlMs }, ctx.signal)) {
          if (line.type === 'code') {
            showCode(line.code, { expires: new Date(line.expires) }, line.short)
          } else if (line.type === 'progress') {
            note(ctx, line.message)
          } else {
            return line.result
          }
        }
        ctx.signal.throwIfAborted()
        throw new ApiResponseError(502, 'the daemon stopped during the invite')
      }
      const result = await graceful(ctx, () =>
        viaDaemon(ctx, opts, daemonInvite, async (configFile) => {
          const { runInvite } = await loadInvite()
          return runInvite({
            configFile,
            log: createLogger('invite'),
            name,
            ttlMs,
            signal: ctx.signal,
            onProgress: (m) => note(ctx, m),
            onCode: showCode,
          })
        }),
      )
      const who = result.name === undefined ? result.peerId : `${result.name} (${result.peerId})`
      if (!result.sponsored.ok) {
        note(
          ctx,
          `warning: the relay did not authorize ${who}: ${result.sponsored.reason ?? 'refused'} — on the relay: \`peerup relay authorize ${result.peerId}\``,
        )
      }
      if (opts.json === true) {
        // One JSON object per line: the code first, then this (NDJSON, so a script can read both).
        ctx.stdout.write(`${JSON.stringify({ paired: result })}\n`)
      } else if (interactive) {
        ctx.stdout.write(`paired with ${who}\n`)
      } else {
        note(ctx, `paired with ${who}`)
      }
    })
}
