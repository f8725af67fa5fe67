/**
 * `peerup debug …`: checks of the executable itself.
 *
 * @packageDocumentation
 */

import { datachannelSelftest } from '../../native/datachannel.ts'
import type { CliContext } from '../context.ts'
import type { CliCommand } from '../options.ts'
import { emit } from '../output.ts'

export function registerDebug(program: CliCommand, ctx: CliContext): void {
  const debug = program.command('debug').description('diagnostics of this executable')
  debug
    .command('selftest')
    .description('load the embedded WebRTC library and create an offer (no network used)')
    .run(async (opts) => {
      const result = await datachannelSelftest({ signal: AbortSignal.timeout(10_000) })
      emit(ctx, opts, result, (r) =>
        [
          'webrtc    ok: created an offer',
          `addon     ${r.addon}${r.addonPath === undefined ? '' : ` (${r.addonPath}${r.addonReused === true ? ', cached' : ''})`}`,
          `offer     ${r.sdpBytes} bytes of SDP${r.candidates === undefined ? '' : `, ${r.candidates} local candidates`}`,
          `elapsed   ${r.elapsedMs.toFixed(0)} ms`,
        ].join('\n'),
      )
    })
}
