/**
 * The commented config files `peerup init` and `peerup relay setup` write. They hold only what a
 * person is likely to change; configs/*.example.yaml documents every key. Comments sit on their
 * own lines, so later edits by `peerup service add` and friends leave them byte for byte.
 *
 * @packageDocumentation
 */

import { CONFIG_VERSION, DEFAULT_RELAY_PORT, DEFAULT_SPLICE_PORT, DEFAULT_STUN_PORT } from './schema.ts'

function yamlList(items: string[], indent: string): string {
  return items.length === 0 ? ' []' : `\n${items.map((i) => `${indent}- ${i}`).join('\n')}`
}

/** The node's config.yaml as `peerup init` writes it, with what `peerup init` asks for. */
export function renderNodeConfig(options: { relays: string[]; network: string }): string {
  return `# peerup node configuration. Every key and its default: configs/peerup.example.yaml.
# Check it with \`peerup config validate\`.
version: ${CONFIG_VERSION}

identity:
  # This node's private key: keep it 0600 and never share it.
  key_file: identity.key

network:
  # Where this node accepts connections; /webrtc enables the direct path through NATs.
  listen_addresses:
    - /ip4/0.0.0.0/tcp/0
    - /ip6/::/tcp/0
    - /webrtc

relay:
  # The relays this node keeps a reservation on, so peers behind other NATs can reach it.
  # Add more with \`peerup relay add <address>\`; all of them are used.
  addresses:${yamlList(options.relays, '    ')}
  reservation_interval: 2m

discovery:
  # Private network name: only peers using the same name find each other.
  network: "${options.network}"

security:
  # Peers allowed to connect (\`peerup auth add\`, or pairing with \`peerup invite\`/\`join\`).
  authorized_keys_file: authorized_keys
  enable_connection_gating: true

# Local TCP services offered to authorized peers, e.g. \`peerup service add ssh localhost:22\`.
services: {}

# Short names for peer ids, used by \`peerup ssh <name>\` and friends.
names: {}

# Local ports the daemon forwards to peers' services, e.g. \`peerup proxy add home-ssh home ssh 2222\`.
proxies: {}
`
}

/** The relay's relay-server.yaml as `peerup relay setup` writes it. */
export function renderRelayConfig(): string {
  return `# peerup relay configuration. Every key and its default: configs/relay-server.example.yaml.
# Check it with \`peerup relay config validate\`.
version: ${CONFIG_VERSION}

identity:
  # The relay's private key: its peer id is part of every node's relay address.
  key_file: relay_node.key

network:
  listen_addresses:
    - /ip4/0.0.0.0/tcp/${DEFAULT_RELAY_PORT}
    - /ip6/::/tcp/${DEFAULT_RELAY_PORT}
  # Public addresses to advertise when the relay sits behind a cloud provider's 1:1 NAT.
  announce_addresses: []

discovery:
  # Must match the nodes' discovery.network.
  network: ""

security:
  # Peers allowed to hold a reservation (\`peerup relay authorize <peer>\`).
  authorized_keys_file: relay_authorized_keys
  enable_connection_gating: true
  # Who may get this relay to authorize a peer: paired, a member for the peer that has just
  # joined it through this relay; marked, the same for members marked sponsor=yes; any, any
  # member for any peer id; off, nobody.
  sponsoring: paired

resources:
  max_reservations: 2048
  max_reservations_per_ip: 128
  max_circuits: 1024
  reservation_ttl: 1h
  # 0 = no limit between authorized peers: SSH sessions last days.
  session_duration: 0
  session_data_limit: 0
  # What a peer the relay does not know may use: enough to pair, useless for anything else.
  unknown_peer_session_duration: 2m
  unknown_peer_data_limit: 128KiB
  # Limits on strangers (peers not in relay_authorized_keys; members never count against them).
  max_pending_per_ip: 16
  max_unknown_connections_per_ip: 16
  max_unknown_circuits_per_ip: 4
  unknown_circuits_per_minute_per_ip: 30
  unknown_peer_idle_timeout: 15s

stun:
  enabled: true
  listen_address: 0.0.0.0:${DEFAULT_STUN_PORT}
  # A second UDP port ('' = none), so that \`peerup doctor\` can tell a symmetric NAT from a cone on
  # nodes that use only this relay (configs/relay-server.example.yaml).
  alternate_listen_address: ''

splice:
  # Members' bulk transfers joined as plain TCP, TLS end to end between them (configs/relay-server.example.yaml).
  enabled: true
  listen_address: 0.0.0.0:${DEFAULT_SPLICE_PORT}

health:
  # /healthz: status, uptime and connected peers. Loopback only unless you change it.
  enabled: true
  listen_address: 127.0.0.1:9090
`
}
