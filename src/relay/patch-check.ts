/**
 * Refuses to run a relay on an unpatched @libp2p/circuit-relay-v2: the stock server keeps every
 * relayed byte in memory until the relayed connection closes (docs/decisions/0001-relay-forwarding.md), which
 * takes a small VPS down after a few large transfers. Our fix lives in
 * `patches/@libp2p+circuit-relay-v2+4.2.13.patch`, applied by `patch-package` on `npm install`
 * (and bundled from the patched node_modules into the executable).
 *
 * @packageDocumentation
 */

// A namespace import, not a named one: a missing named export would fail at module link time with
// an error that does not say what to do.
import * as circuitRelay from '@libp2p/circuit-relay-v2'

/** Thrown when the relay server code is the stock, unpatched one. */
export class RelayNotPatchedError extends Error {
  override name = 'RelayNotPatchedError'
}

/**
 * The markers our patch exports from the package root (the `exports` map hides `dist/src/utils.js`):
 * the forwarding fix, and the `connectLimit` hook that gives each relayed connection the limit
 * its source deserves.
 */
export const RELAY_PATCH_MARKERS = [
  'PEERUP_FORWARD_PATCHED',
  'PEERUP_CONNECT_LIMIT_PATCHED',
  'PEERUP_RELAYED_BYTES_PATCHED',
] as const

/** True when the loaded @libp2p/circuit-relay-v2 carries every part of our patch. */
export function isRelayPatched(): boolean {
  return RELAY_PATCH_MARKERS.every((m) => (circuitRelay as Record<string, unknown>)[m] === true)
}

/** Throws {@link RelayNotPatchedError} unless our patch is loaded; the relay calls it as it starts. */
export function assertRelayPatched(): void {
  if (!isRelayPatched()) {
    throw new RelayNotPatchedError(
      '@libp2p/circuit-relay-v2 is not patched: its relay would keep every relayed byte in memory. ' +
        'Run `npm install` (its postinstall runs patch-package with patches/) and rebuild; if the ' +
        'package was upgraded, update patches/@libp2p+circuit-relay-v2+<version>.patch first.',
    )
  }
}
