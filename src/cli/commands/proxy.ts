/**
 * `peerup proxy add|list|remove|enable|disable`: the proxies kept in config.yaml's `proxies:`,
 * which the daemon runs from its start. With a daemon running, each goes through it: it binds the
 * port before it writes the file (a port in use is refused, nothing written) and the proxy
 * listens when the command returns — as `auth remove` goes through it. Without one, the command
 * edits config.yaml itself, after checking the port is free, and the proxy listens from the next
 * `peerup daemon`.
 *
 * @packageDocumentation
 */

import { type PersistentProxyState, persistentProxiesText, persistentProxyLine } from '../../api/index.ts'
import { loadNodeConfig } from '../../config/load.ts'
import {
  addProxyToFile,
  checkNewProxy,
  checkProxyName,
  listProxies,
  type NewProxy,
  type ProxyInfo,
  parseBind,
  removeProxyFromFile,
  requireProxy,
  setProxyEnabledInFile,
} from '../../config/proxies.ts'
import { probeListen } from '../../util/port.ts'
import type { CliContext, GlobalOptions } from '../context.ts'
import { viaDaemon } from '../load.ts'
import type { CliCommand } from '../options.ts'
import { emit } from '../output.ts'

/** A proxy of the file as `proxy list` shows it while no daemon runs. */
function offline(p: ProxyInfo): PersistentProxyState {
  return {
    ...p,
    listening: false,
    reason: p.enabled ? 'the daemon is not running (`peerup daemon` starts it)' : undefined,
    since: new Date().toISOString(),
    activeConnections: 0,
    totalConnections: 0,
    failedConnections: 0,
    bytesIn: 0,
    bytesOut: 0,
  }
}

/** `proxy add` without a daemon: checked, the port tried (or a free one picked), then written. */
async function addAlone(configFile: string, p: NewProxy): Promise<PersistentProxyState> {
  const checked = checkNewProxy((await loadNodeConfig(configFile)).config, p)
  const bound =
    checked.enabled || checked.listen.port === 0 ? await probeListen(checked.listen) : checked.listen
  return offline(await addProxyToFile(configFile, checked, bound))
}

/** `proxy enable|disable` without a daemon: an enabled proxy's port is tried first. */
async function setEnabledAlone(
  configFile: string,
  name: string,
  enabled: boolean,
): Promise<PersistentProxyState> {
  if (enabled) {
    const info = requireProxy((await loadNodeConfig(configFile)).config, name)
    await probeListen(parseBind(info.bind))
  }
  return offline(await setProxyEnabledInFile(configFile, name, enabled))
}

function registerAdd(proxy: CliCommand, ctx: CliContext): void {
  proxy
    .command('add')
    .description(
      "keep a local port forwarded to a peer's service, from the daemon's start (config.yaml proxies:)",
    )
    .argument('<name>', 'a name for the proxy, like home-ssh')
    .argument('<peer>', 'a name from names: or a peer id')
    .argument('<service>', 'the service on that peer, like ssh')
    .argument(
      '[bind]',
      '[host:]port to listen on (host 127.0.0.1 by default; left out: a free port, recorded)',
    )
    .option('--disabled', 'record it switched off')
    .run(
      async (
        opts: GlobalOptions & { disabled?: boolean },
        name: string,
        peer: string,
        service: string,
        bind: string | undefined,
      ) => {
        const enabled = opts.disabled !== true
        const req = { name, peer, service, enabled, ...(bind === undefined ? {} : { bind }) }
        const state = await viaDaemon(
          ctx,
          opts,
          (client) => client.call('proxyAdd', req),
          (configFile) => addAlone(configFile, req),
        )
        emit(ctx, opts, state, (p) => `added proxy ${persistentProxyLine(p)}`)
      },
    )
}

/** Registers `proxy add|list|remove|enable|disable` under `proxy`. */
export function registerProxyConfig(proxy: CliCommand, ctx: CliContext): void {
  registerAdd(proxy, ctx)

  proxy
    .command('list')
    .description('the proxies of config.yaml, and how each is doing in the daemon')
    .run(async (opts) => {
      const list = await viaDaemon(
        ctx,
        opts,
        (client) => client.call('proxyList', {}),
        async (configFile) => listProxies((await loadNodeConfig(configFile)).config).map(offline),
      )
      emit(ctx, opts, list, persistentProxiesText)
    })

  proxy
    .command('remove')
    .description('stop a proxy and remove it from config.yaml (its connections are reset)')
    .argument('<name>')
    .run(async (opts, name: string) => {
      checkProxyName(name)
      await viaDaemon(
        ctx,
        opts,
        (client) => client.call('proxyRemove', { name }),
        async (configFile) => ({ removed: (await removeProxyFromFile(configFile, name)).name }),
      )
      emit(ctx, opts, { removed: name }, () => `removed proxy ${name}`)
    })

  for (const [verb, enabled] of [
    ['enable', true],
    ['disable', false],
  ] as const) {
    proxy
      .command(verb)
      .description(
        enabled
          ? 'switch a proxy of config.yaml on (it listens at once)'
          : 'switch a proxy of config.yaml off, keeping it (its connections are reset)',
      )
      .argument('<name>')
      .run(async (opts, name: string) => {
        checkProxyName(name)
        const state = await viaDaemon(
          ctx,
          opts,
          (client) => client.call(enabled ? 'proxyEnable' : 'proxyDisable', { name }),
          (configFile) => setEnabledAlone(configFile, name, enabled),
        )
        emit(ctx, opts, state, (p) => `${verb}d proxy ${persistentProxyLine(p)}`)
      })
  }
}
