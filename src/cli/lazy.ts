/**
 * The one door from the CLI to the network code. Every module here is loaded with a dynamic
 * `import()` when a command needs it, so `peerup status` or `peerup auth list` never load libp2p
 * (the layer rule of docs/architecture.md, checked by test/unit/architecture.test.ts).
 *
 * @packageDocumentation
 */

/** A node started in this process behind the client interface, when no daemon runs. */
export const loadInProcessClient = () => import('../daemon/in-process.ts')
export const loadP2pErrors = () => import('../p2p/errors.ts')
export const loadDaemon = () => import('../daemon/run.ts')
export const loadRelay = () => import('../relay/serve.ts')
export const loadDemo = () => import('../demo/run.ts')
export const loadInvite = () => import('../invite/invite.ts')
export const loadJoin = () => import('../invite/join.ts')
/** The relay's admin socket client, for `relay pair`. */
export const loadRelayAdmin = () => import('../relay/admin.ts')
