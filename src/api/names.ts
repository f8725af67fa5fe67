/**
 * What a name is: a peer's name (under `names:` in config.yaml), a service's name, a reference to a
 * peer (a name or a peer id). One rule, held wherever a name enters: config.yaml, the local API,
 * the command line.
 *
 * @packageDocumentation
 */

import { z } from 'zod'

/** A peer's name under `names:`: letters, digits, `.`, `_`, `-`, at most 63, starting with a letter or digit. */
export const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/

/**
 * The domain under which peers' names are written where a host name is expected: `ssh
 * home.peerup` (the `Host *.peerup` block of `peerup ssh-config`), `web.home.peerup` through the
 * SOCKS gateway (docs/reaching-more-than-ssh.md). It is never looked up in DNS.
 */
export const PEERUP_DOMAIN = 'peerup'

/** `name` without a trailing `.peerup` (any case), or undefined when it has none or nothing is before it. */
export function withoutPeerupDomain(name: string): string | undefined {
  const suffix = `.${PEERUP_DOMAIN}`
  return name.length > suffix.length && name.toLowerCase().endsWith(suffix)
    ? name.slice(0, -suffix.length)
    : undefined
}

/** What a peer's name must look like, in words. */
export const NAME_RULE = 'a name is letters, digits, . _ - (at most 63, starting with a letter or digit)'

/** What a proxy's name (under `proxies:` in config.yaml) must look like, in words: a peer's name's rule. */
export const PROXY_NAME_RULE = NAME_RULE.replace('a name', 'a proxy name')

/** A service's name: it becomes the protocol `/peerup/<name>/1.0.0`. */
export const SERVICE_NAME_PATTERN = /^[a-z0-9][a-z0-9_-]{0,31}$/

/** What a service's name must look like, in words. */
export const SERVICE_NAME_RULE =
  'a service name is lowercase letters, digits, - and _ (at most 32, it becomes /peerup/<name>/1.0.0)'

/**
 * What a peer id looks like before it is decoded: base58btc (`12D3KooW…`, `Qm…`) or a CIDv1 in
 * base32 (`bafz…`). At most 128 characters: decoding base58 takes time quadratic in the length,
 * and a 1 MiB "peer id" held the event loop for minutes. Whether it decodes is the domain's check.
 */
export const PEER_ID_SHAPE = /^(?:[1-9A-HJ-NP-Za-km-z]{40,128}|b[a-z2-7]{40,127})$/

/** A value quoted for a message: short, one line, whatever the client sent. */
function quote(value: string): string {
  return JSON.stringify(value.length > 64 ? `${value.slice(0, 64)}…` : value)
}

/** `z.string()` that says "is required" when the field is missing and "must be …" when it is something else. */
export const text = (what: string) =>
  z.string({ error: (i) => (i.input === undefined ? `is required (${what})` : `must be ${what}`) })

/** A `what` (`service name`): text matching `pattern`, else `invalid <what> "…": <rule>`. */
const named = (what: string, pattern: RegExp, rule: string) =>
  text(`a ${what}`).refine((v) => pattern.test(v), {
    error: (i) => `invalid ${what} ${quote(String(i.input))}: ${rule}`,
  })

export const peerName = named('name', NAME_PATTERN, NAME_RULE)

export const serviceName = named('service name', SERVICE_NAME_PATTERN, SERVICE_NAME_RULE)

export const proxyName = named('proxy name', NAME_PATTERN, PROXY_NAME_RULE)

/** A peer: a name from `names:` or a peer id. */
export const peerRef = text('a peer id or a name').refine(
  (v) => NAME_PATTERN.test(v) || PEER_ID_SHAPE.test(v),
  {
    error: (i) => `${quote(String(i.input))} is neither a peer id nor a name (${NAME_RULE})`,
  },
)

/**
 * A network's name (docs/cli.md "Several networks"): the `discovery.network` of its config, which
 * makes its DHT protocol `/peerup/<network>/kad/1.0.0`, and the name of its directory under
 * `networks/` beside the main config.
 */
export const NETWORK_NAME_PATTERN = /^[a-z0-9][a-z0-9_-]{0,62}$/

/** What a network's name must look like, in words. */
export const NETWORK_NAME_RULE =
  'a network name is lowercase letters, digits, - and _ (at most 63, starting with a letter or digit)'

export const networkName = named('network name', NETWORK_NAME_PATTERN, NETWORK_NAME_RULE)

/**
 * `name@network` split at its last `@`: the peer (a name or a peer id) and, when written, the
 * network it is looked up in. Neither a name nor a peer id holds an `@`, so the split is never
 * ambiguous; a part that is empty is left for the caller's own check to refuse.
 */
export function splitNetworkRef(ref: string): { name: string; network: string | undefined } {
  const at = ref.lastIndexOf('@')
  return at < 0 ? { name: ref, network: undefined } : { name: ref.slice(0, at), network: ref.slice(at + 1) }
}
