/**
 * `uiLogin`: a one-time login link to the web dashboard (src/daemon/ui.ts), for `peerup ui`.
 *
 * @packageDocumentation
 */

import { DEFAULT_UI_PORT } from '../../config/schema.ts'
import { ConflictError } from '../../errors.ts'
import type { DaemonContext, Handlers } from './context.ts'

export function uiHandlers(ctx: DaemonContext): Pick<Handlers, 'uiLogin'> {
  return {
    uiLogin: async () => {
      if (ctx.ui === undefined) {
        throw new ConflictError('the web dashboard is served only by the daemon', {
          hint: `set ui.listen_address: 127.0.0.1:${DEFAULT_UI_PORT} in config.yaml and start \`peerup daemon\``,
        })
      }
      return ctx.ui.newLogin()
    },
  }
}
