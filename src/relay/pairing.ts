/**
 * The relay's part in pairing (docs/pairing.md):
 *
 * - **Sponsoring** on `/peerup/relay-admin/1.0.0`: after two peers pair through this relay, the
 *   inviter asks it to authorize the joiner. The caller is the peer id noise authenticated; it must
 *   be authorized here, and `security.sponsoring` decides whether it may sponsor: `paired` (the
 *   default), only the peer whose circuit this relay carried to the caller while the caller's
 *   invite was open, once per invite; `marked`, the same for `sponsor=yes` peers only; `any`, any
 *   peer id; `off`. The joiner is recorded with `sponsor=<caller>`.
 * - **Group codes** (`peerup relay pair --count N --ttl 1h`): N single-use codes whose inviter is
 *   the relay itself. A joiner proves its code on `/peerup/invite/1.0.0` straight to the relay, is
 *   authorized here with `group=<id>`, and learns the members that joined before it; members still
 *   waiting are told about it as it joins, and any member can ask for the list later (`members`).
 *   Groups live in `pairing-groups.json` beside relay-server.yaml (0600, atomic writes), so
 *   codes and memberships survive a restart. The file keeps each code's derived MAC key, never the
 *   code or token itself. What counts against a code is what counts against an invite
 *   (src/invite/inviter.ts): a code id that is not ours never; three wrong proofs shut that peer
 *   out; ten in all burn the code.
 *
 * @packageDocumentation
 */

import { randomBytes } from 'node:crypto'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import type { Connection, Stream } from '@libp2p/interface'
import { lpStream } from '@libp2p/utils'
import { z } from 'zod'
import { loadAuthorizedKeys, updateAuthorizedKeys } from '../auth/authorized-keys.ts'
import { resolveIn } from '../config/load.ts'
import type { RelayConfig } from '../config/schema.ts'
import { ConflictError, NotFoundError, UsageError } from '../errors.ts'
import { createInviteCode, encodeInviteCode } from '../invite/code.ts'
import {
  type AcceptExtras,
  answerPairing,
  type CodeBook,
  type Joiner,
  type Opened,
  WrongProofs,
} from '../invite/inviter.ts'
import {
  deriveKeys,
  INVITE_PROTOCOL,
  INVITE_STREAM_OPTIONS,
  MAX_MESSAGE_BYTES,
  type PairingMessage,
  STEP_TIMEOUT_MS,
} from '../invite/protocol.ts'
import {
  RELAY_ADMIN_PROTOCOL,
  type RelayAdminRequest,
  type RelayAdminResponse,
  relayAdminRequest,
} from '../invite/relay-admin.ts'
import type { Logger } from '../log/index.ts'
import type { Observer } from '../metrics/observer.ts'
import { NO_OBSERVER } from '../metrics/observer.ts'
import { atomicWriteFile, withFileLock } from '../util/fs.ts'
import type { RelayHandle } from './server.ts'

/** The state file of group codes, in the relay's directory. */
export const GROUPS_FILE = 'pairing-groups.json'

/** Most codes one group may have. */
export const MAX_GROUP_SIZE = 100

const codeState = z.strictObject({
  id: z.string(),
  /** HKDF-derived MAC key, hex: verifying a proof needs it, the token is never stored. */
  key: z.string().regex(/^[0-9a-f]{64}$/),
  state: z.enum(['open', 'used', 'burned']),
  /** Wrong proofs against this code from all peers: at MAX_FAILED_PROOFS_PER_CODE it burns. */
  failures: z.number().int().min(0),
  usedBy: z.string().optional(),
})

const groupState = z.strictObject({
  id: z.string(),
  created: z.string(),
  expires: z.string(),
  size: z.number().int().min(1),
  revoked: z.boolean(),
  codes: z.array(codeState),
  members: z.array(z.strictObject({ peerId: z.string(), name: z.string().optional() })),
})

const stateFile = z.strictObject({ version: z.literal(1), groups: z.array(groupState) })

type GroupState = z.infer<typeof groupState>

/** A group as `relay pair --list` shows it (no secrets). */
export interface GroupInfo {
  id: string
  created: string
  expires: string
  expired: boolean
  revoked: boolean
  size: number
  /** Codes not yet used (nor burned), while the group is live. */
  open: number
  used: number
  burned: number
  members: Array<{ peerId: string; name?: string }>
}

/** A new group: its codes are shown once and never again. */
export interface NewGroup {
  group: GroupInfo
  codes: string[]
}

/** Options of {@link startRelayPairing}. */
export interface RelayPairingOptions {
  relay: RelayHandle
  config: RelayConfig
  /** The relay's directory (relay-server.yaml's). */
  dir: string
  log: Logger
  /** The transport address to put in group codes; default the first announce or listen address. */
  codeAddress?: string
  /** Group joins and sponsoring go to the audit log through it. */
  observer?: Observer
}

/** The relay's pairing: sponsoring and group codes. */
export interface RelayPairing {
  createGroup(options: { count: number; ttlMs: number }): Promise<NewGroup>
  listGroups(): GroupInfo[]
  revokeGroup(id: string): Promise<GroupInfo>
  stop(): Promise<void>
}

interface Entry {
  group: GroupState
  code: GroupState['codes'][number]
}

/** Starts sponsoring and group codes on a running relay. */
export async function startRelayPairing(options: RelayPairingOptions): Promise<RelayPairing> {
  const { relay, config, log } = options
  const observer = options.observer ?? NO_OBSERVER
  const file = path.join(options.dir, GROUPS_FILE)
  const keysFile = resolveIn(options.dir, config.security.authorized_keys_file)
  const groups = await loadGroups(file)
  const busy = new Set<string>()
  // Per code: its wrong proofs. The total is kept in the state file (`failures`), so the ceiling
  // holds across restarts; who made them is not, so a restart gives a shut-out peer its tries back,
  // still within that ceiling.
  const wrongByCode = new Map<string, WrongProofs>()
  const wrongProofs = (code: GroupState['codes'][number]): WrongProofs => {
    let wrong = wrongByCode.get(code.id)
    if (wrong === undefined) {
      wrong = new WrongProofs(code.failures)
      wrongByCode.set(code.id, wrong)
    }
    return wrong
  }
  // Per used code: the members its joiner has been told about (until its introductions end).
  const toldByCode = new Map<string, Set<string>>()
  const waiters = new Map<string, Set<(m: PairingMessage) => void>>()
  const controller = new AbortController()
  let saving = Promise.resolve()
  const save = (): Promise<void> => {
    const snapshot = JSON.stringify({ version: 1, groups }, null, 2)
    // Writes are queued so that two joins never race their renames.
    saving = saving.then(() => atomicWriteFile(file, `${snapshot}\n`, { mode: 0o600 }))
    return saving
  }
  const authorize = async (
    peer: string,
    attrs: { sponsor?: string; group?: string },
    name?: string,
  ): Promise<void> => {
    await withFileLock(keysFile, () =>
      updateAuthorizedKeys(
        keysFile,
        (doc) => {
          if (doc.has(peer)) {
            if (attrs.group !== undefined) {
              doc.setAttribute(peer, 'group', attrs.group)
            }
            return
          }
          doc.add(peer, { ...(name === undefined ? {} : { comment: name }), attributes: attrs })
        },
        { createIfMissing: true },
      ),
    )
    await relay.reloadAuthorized()
  }

  const live = (g: GroupState, now = Date.now()): boolean => !g.revoked && now < Date.parse(g.expires)
  const byCodeId = (codeId: string): Entry | undefined => {
    for (const group of groups) {
      const code = group.codes.find((c) => c.id === codeId)
      if (code !== undefined) {
        return { group, code }
      }
    }
    return undefined
  }
  const notify = (group: GroupState, message: PairingMessage): void => {
    for (const w of waiters.get(group.id) ?? []) {
      w(message)
    }
  }

  const book: CodeBook<Entry> = {
    open: (codeId, joiner, now): Opened<Entry> => {
      const entry = byCodeId(codeId)
      if (entry === undefined) {
        // Not one of ours: nothing to count it against, and the token cannot be guessed either way.
        return { ok: false, reason: 'unknown-code' }
      }
      const { group, code } = entry
      if (group.revoked) return { ok: false, reason: 'revoked' }
      if (now.getTime() >= Date.parse(group.expires)) return { ok: false, reason: 'expired' }
      if (code.state === 'used') return { ok: false, reason: 'used' }
      if (code.state === 'burned') return { ok: false, reason: 'burned' }
      if (wrongProofs(code).shutOut(joiner)) return { ok: false, reason: 'burned', remaining: 0 }
      if (busy.has(code.id)) return { ok: false, reason: 'busy' }
      busy.add(code.id)
      return { ok: true, entry, key: Buffer.from(code.key, 'hex') }
    },
    fail: ({ code }, joiner) => {
      busy.delete(code.id)
      const wrong = wrongProofs(code)
      const failure = wrong.record(joiner)
      code.failures = wrong.total
      if (failure.burned) {
        code.state = 'burned'
      }
      save().catch((err: unknown) => log.error('saving pairing groups failed', { error: err as Error }))
      return failure
    },
    release: ({ code }) => {
      busy.delete(code.id)
    },
    accept: async ({ group, code }, joiner: Joiner): Promise<AcceptExtras> => {
      try {
        if (!live(group)) {
          throw new ConflictError('the group is no longer live')
        }
        const before = group.members.filter((m) => m.peerId !== joiner.peerId)
        code.state = 'used'
        code.usedBy = joiner.peerId
        if (before.length === group.members.length) {
          group.members.push({
            peerId: joiner.peerId,
            ...(joiner.name === undefined ? {} : { name: joiner.name }),
          })
        }
        await save()
        await authorize(joiner.peerId, { group: group.id }, joiner.name)
        log.info('group member joined', {
          group: group.id,
          peer: joiner.peerId,
          members: group.members.length,
        })
        notify(group, {
          type: 'member',
          peerId: joiner.peerId,
          ...(joiner.name === undefined ? {} : { name: joiner.name }),
        })
        toldByCode.set(code.id, new Set([...before.map((m) => m.peerId), joiner.peerId]))
        return { group: { id: group.id, size: group.size, members: before } }
      } finally {
        busy.delete(code.id)
      }
    },
    afterAccept: async ({ group, code }, send, signal) => {
      // Each waiting joiner is told every member it has not heard of yet — checked again on each
      // change, so a member that joined between our accept and this registration is not missed.
      const told = toldByCode.get(code.id) ?? new Set<string>()
      toldByCode.delete(code.id)
      const { promise, resolve } = Promise.withResolvers<void>()
      let queue = Promise.resolve()
      let finished = false
      const finish = (): void => {
        finished = true
        resolve()
      }
      const flush = (stop?: PairingMessage): void => {
        queue = queue
          .then(async () => {
            if (finished) return
            for (const m of group.members) {
              if (!told.has(m.peerId)) {
                told.add(m.peerId)
                await send({ type: 'member', ...m })
              }
            }
            if (stop !== undefined) {
              await send(stop)
              finish()
            } else if (group.members.length >= group.size) {
              await send({ type: 'complete' })
              finish()
            }
          })
          .catch(() => finish())
      }
      const set = waiters.get(group.id) ?? new Set()
      waiters.set(group.id, set)
      const listener = (m: PairingMessage): void => flush(m.type === 'error' ? m : undefined)
      set.add(listener)
      flush()
      const expiry = setTimeout(
        () => flush({ type: 'error', reason: 'expired' }),
        Math.max(Date.parse(group.expires) - Date.now(), 0),
      )
      const onAbort = (): void => finish()
      signal.addEventListener('abort', onAbort, { once: true })
      controller.signal.addEventListener('abort', onAbort, { once: true })
      try {
        await promise
        await queue
      } finally {
        clearTimeout(expiry)
        set.delete(listener)
        signal.removeEventListener('abort', onAbort)
        controller.signal.removeEventListener('abort', onAbort)
      }
    },
  }

  const adminHandler = (stream: Stream, connection: Connection): void => {
    answerAdmin(stream, connection)
      .catch((err: unknown) => log.debug('relay admin request failed', { error: err as Error }))
      .finally(() => {
        stream.close({ signal: AbortSignal.timeout(2_000) }).catch(() => stream.abort(new Error('closed')))
      })
  }
  const answerAdmin = async (stream: Stream, connection: Connection): Promise<void> => {
    const lp = lpStream(stream, { maxDataLength: MAX_MESSAGE_BYTES })
    const signal = AbortSignal.timeout(STEP_TIMEOUT_MS)
    const raw = (await lp.read({ signal })).subarray()
    let request: RelayAdminRequest
    try {
      request = relayAdminRequest.parse(JSON.parse(new TextDecoder().decode(raw)))
    } catch {
      await reply(lp, { ok: false, reason: 'malformed request' }, signal)
      return
    }
    const caller = connection.remotePeer.toString()
    await reply(lp, await decide(caller, request), signal)
  }
  const decide = async (caller: string, request: RelayAdminRequest): Promise<RelayAdminResponse> => {
    if (config.security.enable_connection_gating && !relay.authorized.has(caller)) {
      return { ok: false, reason: 'you are not authorized on this relay' }
    }
    if (request.type === 'invite-open') {
      relay.invites.open(caller, request.ttl_ms)
      log.debug('invite opened', { peer: caller })
      return { ok: true }
    }
    if (request.type === 'invite-close') {
      relay.invites.close(caller)
      log.debug('invite closed', { peer: caller })
      return { ok: true }
    }
    if (request.type === 'members') {
      return {
        ok: true,
        groups: groups
          .filter((g) => g.members.some((m) => m.peerId === caller))
          .map((g) => ({ id: g.id, members: g.members })),
      }
    }
    const mode = config.security.sponsoring
    if (mode === 'off') {
      log.info('sponsoring refused', { peer: caller, sponsored: request.peer, reason: 'off' })
      observer.pairing({ role: 'relay', outcome: 'refused', peer: request.peer, reason: 'sponsoring off' })
      return { ok: false, reason: 'sponsoring is off on this relay' }
    }
    if (mode === 'marked') {
      const doc = await loadAuthorizedKeys(keysFile, { createIfMissing: true })
      if (doc.get(caller)?.attributes.sponsor !== 'yes') {
        log.info('sponsoring refused', { peer: caller, sponsored: request.peer, reason: 'not sponsor=yes' })
        observer.pairing({
          role: 'relay',
          outcome: 'refused',
          peer: request.peer,
          reason: 'sponsor not marked',
        })
        return { ok: false, reason: 'on this relay only peers marked sponsor=yes may sponsor others' }
      }
    }
    // `paired` and `marked`: only the peer this member has just paired with through us (we carried
    // its circuit to the member while the member's invite was open), once per invite.
    if (mode !== 'any' && !relay.invites.consume(caller, request.peer)) {
      log.info('sponsoring refused', { peer: caller, sponsored: request.peer, reason: 'no pairing seen' })
      observer.pairing({
        role: 'relay',
        outcome: 'refused',
        peer: request.peer,
        reason: 'no pairing seen',
      })
      return {
        ok: false,
        reason:
          'this relay saw no pairing of yours with that peer (it sponsors only a peer that has just joined you through it)',
      }
    }
    try {
      await authorize(request.peer, { sponsor: caller }, request.name)
    } catch (err) {
      return { ok: false, reason: `the relay could not record it: ${(err as Error).message}` }
    }
    log.info('peer sponsored', { peer: request.peer, sponsor: caller })
    observer.pairing({
      role: 'relay',
      outcome: 'paired',
      peer: request.peer,
      reason: `sponsored by ${caller}`,
    })
    return { ok: true }
  }

  await relay.node.handle(RELAY_ADMIN_PROTOCOL, adminHandler, { maxInboundStreams: 8 })
  await relay.node.handle(
    INVITE_PROTOCOL,
    (stream, connection) => {
      answerPairing(stream, connection, {
        localPeerId: relay.peerId,
        book,
        log: log.child('group'),
        observer,
        role: 'relay',
        signal: controller.signal,
      }).catch(() => {})
    },
    { ...INVITE_STREAM_OPTIONS, maxInboundStreams: 8 },
  )

  const codeAddress = (): string => {
    if (options.codeAddress !== undefined) {
      return options.codeAddress
    }
    // What nodes can reach: an announced address, else a listen address that is not loopback
    // (a loopback one only when there is nothing else, as in tests).
    const candidates = [...config.network.announce_addresses, ...relay.addresses()].filter(
      (a) => !/\/ip[46]\/(0\.0\.0\.0|::)\//.test(a) && !a.includes('/p2p-circuit'),
    )
    const loopback = (a: string): boolean => /^\/ip4\/127\.|^\/ip6\/::1\/|^\/ip6\/fe80/.test(a)
    const chosen = candidates.find((a) => !loopback(a)) ?? candidates[0]
    if (chosen === undefined) {
      throw new ConflictError('the relay has no address to put in a code', {
        hint: 'set network.announce_addresses in relay-server.yaml to the address nodes reach it on',
      })
    }
    return chosen.includes('/p2p/') ? chosen.slice(0, chosen.lastIndexOf('/p2p/')) : chosen
  }

  return {
    createGroup: async ({ count, ttlMs }) => {
      if (!Number.isInteger(count) || count < 1 || count > MAX_GROUP_SIZE) {
        throw new UsageError(`a group has 1 to ${MAX_GROUP_SIZE} codes, not ${count}`)
      }
      const now = Date.now()
      const expires = new Date(Math.floor((now + ttlMs) / 1000) * 1000)
      const id = `g-${randomBytes(4).toString('hex')}`
      const address = codeAddress()
      const codes: string[] = []
      const states: GroupState['codes'] = []
      for (let i = 0; i < count; i++) {
        const code = createInviteCode({
          kind: 'group',
          expires,
          relayAddress: address,
          relayPeerId: relay.peerId,
          inviterPeerId: relay.peerId,
          network: config.discovery.network,
        })
        const keys = deriveKeys(code.token)
        states.push({
          id: keys.codeId,
          key: Buffer.from(keys.key).toString('hex'),
          state: 'open',
          failures: 0,
        })
        codes.push(encodeInviteCode(code))
      }
      const group: GroupState = {
        id,
        created: new Date(now).toISOString(),
        expires: expires.toISOString(),
        size: count,
        revoked: false,
        codes: states,
        members: [],
      }
      groups.push(group)
      await save()
      log.info('group created', { group: id, size: count, expires: group.expires })
      return { group: info(group), codes }
    },
    listGroups: () => groups.map((g) => info(g)),
    revokeGroup: async (id) => {
      const group = groups.find((g) => g.id === id)
      if (group === undefined) {
        throw new NotFoundError(`no group ${id} on this relay`, {
          hint: 'list them with `peerup relay pair --list`',
        })
      }
      group.revoked = true
      await save()
      notify(group, { type: 'error', reason: 'revoked' })
      log.info('group revoked', { group: id })
      return info(group)
    },
    stop: async () => {
      controller.abort()
      await relay.node.unhandle(INVITE_PROTOCOL).catch(() => {})
      await relay.node.unhandle(RELAY_ADMIN_PROTOCOL).catch(() => {})
      await saving.catch(() => {})
    },
  }
}

async function reply(
  lp: ReturnType<typeof lpStream<Stream>>,
  response: RelayAdminResponse,
  signal: AbortSignal,
): Promise<void> {
  await lp.write(new TextEncoder().encode(JSON.stringify(response)), { signal })
}

function info(g: GroupState, now = Date.now()): GroupInfo {
  return {
    id: g.id,
    created: g.created,
    expires: g.expires,
    expired: now >= Date.parse(g.expires),
    revoked: g.revoked,
    size: g.size,
    open: g.codes.filter((c) => c.state === 'open').length,
    used: g.codes.filter((c) => c.state === 'used').length,
    burned: g.codes.filter((c) => c.state === 'burned').length,
    members: g.members.map((m) => ({ ...m })),
  }
}

async function loadGroups(file: string): Promise<GroupState[]> {
  let text: string
  try {
    text = await fs.readFile(file, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      return []
    }
    throw err
  }
  const parsed = stateFile.safeParse(JSON.parse(text))
  if (!parsed.success) {
    throw new ConflictError(`${file} is not a valid pairing state file`, {
      hint: 'restore it from a backup, or move it away (its group codes then stop working)',
    })
  }
  return parsed.data.groups
}
