/**
 * `peerup verify <peer>`: the short authentication string of this node and a peer, to compare
 * with what the same command shows on the peer's machine (by phone, in person). When both match,
 * the peer is marked `verified=<date>` in authorized_keys; `auth list` and `status` show who is not.
 *
 * @packageDocumentation
 */

import { loadIdentity, peerIdOf } from '../../auth/identity.ts'
import { listAuthorizedPeers, markVerified } from '../../auth/ops.ts'
import { resolveIn } from '../../config/load.ts'
import { resolvePeer } from '../../config/ops.ts'
import { NotFoundError, PeerupError } from '../../errors.ts'
import { shortAuthString } from '../../invite/sas.ts'
import type { CliContext, GlobalOptions } from '../context.ts'
import { loadNode } from '../load.ts'
import type { CliCommand } from '../options.ts'
import { emit, note } from '../output.ts'
import { canPrompt, Prompter } from '../prompt.ts'

/** A peer that was compared and found to differ: not an error of the program, but a failure. */
export class VerificationMismatchError extends PeerupError {
  override name = 'VerificationMismatchError'
}

export function registerVerify(program: CliCommand, ctx: CliContext): void {
  program
    .command('verify')
    .description('show the numbers to compare with a peer out of band; mark it verified when they match')
    .argument('<peer>', 'a name from names: or a peer id')
    .option('--yes', 'the numbers were compared and match: record it without asking')
    .option('--non-interactive', 'never prompt (without --yes nothing is recorded)')
    .run(async (opts: GlobalOptions & { yes?: boolean; nonInteractive?: boolean }, peer: string) => {
      const { dir, config } = await loadNode(ctx, opts)
      const { peerId, name } = resolvePeer(config, peer)
      const keysFile = resolveIn(dir, config.security.authorized_keys_file)
      const entry = (await listAuthorizedPeers(keysFile, config.names)).find((p) => p.peerId === peerId)
      if (entry === undefined) {
        throw new NotFoundError(`${name ?? peerId} is not in authorized_keys`, {
          hint: 'pair with it first (`peerup invite`/`peerup join`), or `peerup auth add`',
        })
      }
      const self = peerIdOf(await loadIdentity(resolveIn(dir, config.identity.key_file)))
      const sas = shortAuthString(self, peerId)
      const label = name ?? peerId
      let confirmed = opts.yes === true
      if (!confirmed && canPrompt(ctx, opts.nonInteractive) && opts.json !== true) {
        note(
          ctx,
          `Run \`peerup verify <this machine>\` on ${label} and compare. This machine shows:\n\n    ${sas}\n`,
        )
        using prompter = new Prompter(ctx)
        const answer = (await prompter.ask(`Does ${label} show exactly ${sas}? (y/N)`, 'n')).toLowerCase()
        if (answer !== 'y' && answer !== 'yes') {
          throw new VerificationMismatchError(`not verified: ${label} was not marked`, {
            hint: `if the numbers differ, someone else may have paired in its place: \`peerup auth remove ${label}\` and pair again`,
          })
        }
        confirmed = true
      }
      const verified = confirmed
        ? (await markVerified(keysFile, peerId, new Date().toISOString().slice(0, 10))).verified
        : entry.verified
      emit(ctx, opts, { peerId, name, sas, verified: verified ?? null, recorded: confirmed }, (r) =>
        confirmed
          ? `${label} verified (${r.sas}); recorded in authorized_keys`
          : `${r.sas}\ncompare with \`peerup verify\` on ${label}; when they match, run again with --yes`,
      )
    })
}
