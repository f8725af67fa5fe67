/**
 * The relay's group codes at rest: `pairing-groups.json` beside relay-server.yaml (0600, atomic
 * writes, queued so that two joins never race their renames), holding each group, its codes and
 * its members, so that codes and memberships survive a restart. The file keeps each code's derived
 * MAC key and its count of wrong proofs, never the code or token itself.
 *
 * @packageDocumentation
 */

import { randomBytes } from 'node:crypto'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import { z } from 'zod'
import { ConflictError, NotFoundError, UsageError } from '../errors.ts'
import { createInviteCode, encodeInviteCode } from '../invite/code.ts'
import { deriveKeys } from '../invite/protocol.ts'
import type { Component } from '../util/components.ts'
import { atomicWriteFile } from '../util/fs.ts'

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

/** A group as the state file keeps it. */
export type GroupState = z.infer<typeof groupState>

/** One code of a group as the state file keeps it. */
export type CodeState = GroupState['codes'][number]

/** A code and the group it belongs to. */
export interface Entry {
  group: GroupState
  code: CodeState
}

/** A group as `relay pair --list` shows it (no secrets). */
export type GroupInfo = ReturnType<typeof groupInfo>

/** A new group: its codes are shown once and never again. */
export interface NewGroup {
  group: GroupInfo
  codes: string[]
}

/** What a new group's codes say about the relay that made them. */
export interface CodeIssuer {
  /** The relay's transport address, without `/p2p/`. */
  address: string
  peerId: string
  network: string
}

/** Whether `group` takes joins now: neither revoked nor expired. */
export function isLive(group: GroupState, now = Date.now()): boolean {
  return !group.revoked && now < Date.parse(group.expires)
}

/** What `relay pair --list` shows of `group`. */
export function groupInfo(g: GroupState, now = Date.now()) {
  return {
    id: g.id,
    created: g.created,
    expires: g.expires,
    expired: now >= Date.parse(g.expires),
    revoked: g.revoked,
    size: g.size,
    // Codes not yet used (nor burned), while the group is live.
    open: g.codes.filter((c) => c.state === 'open').length,
    used: g.codes.filter((c) => c.state === 'used').length,
    burned: g.codes.filter((c) => c.state === 'burned').length,
    members: g.members.map((m) => ({ ...m })),
  }
}

/**
 * The groups, in memory and in their state file ({@link GROUPS_FILE} in `dir`, relay-server.yaml's):
 * `start()` reads the file (a missing one is no groups), `stop()` waits for the writes under way.
 * Whoever changes a group calls {@link GroupStore.save} after.
 */
export class GroupStore implements Component {
  readonly file: string
  #groups: GroupState[] = []
  #saving = Promise.resolve()

  constructor(init: { dir: string }) {
    this.file = path.join(init.dir, GROUPS_FILE)
  }

  /** Every group, oldest first (the objects themselves: change them, then save). */
  get groups(): readonly GroupState[] {
    return this.#groups
  }

  async start(): Promise<void> {
    this.#groups = await loadGroups(this.file)
  }

  async stop(): Promise<void> {
    await this.#saving.catch(() => {})
  }

  /** Writes the groups as they are now, after the writes before it. */
  save(): Promise<void> {
    const snapshot = JSON.stringify({ version: 1, groups: this.#groups }, null, 2)
    this.#saving = this.#saving.then(() => atomicWriteFile(this.file, `${snapshot}\n`, { mode: 0o600 }))
    return this.#saving
  }

  /** The code `codeId` and its group, when it is one of ours. */
  byCodeId(codeId: string): Entry | undefined {
    for (const group of this.#groups) {
      const code = group.codes.find((c) => c.id === codeId)
      if (code !== undefined) {
        return { group, code }
      }
    }
    return undefined
  }

  /** The group `id`, or a NotFoundError. */
  get(id: string): GroupState {
    const group = this.#groups.find((g) => g.id === id)
    if (group === undefined) {
      throw new NotFoundError(`no group ${id} on this relay`, {
        hint: 'list them with `peerup relay pair --list`',
      })
    }
    return group
  }

  /**
   * Makes a group of `count` single-use codes for `ttlMs`, saves it, and returns it with its
   * codes; `issuer` is asked once the count is known to be right.
   */
  async create(options: { count: number; ttlMs: number; issuer: () => CodeIssuer }): Promise<NewGroup> {
    const { count, ttlMs } = options
    if (!Number.isInteger(count) || count < 1 || count > MAX_GROUP_SIZE) {
      throw new UsageError(`a group has 1 to ${MAX_GROUP_SIZE} codes, not ${count}`)
    }
    const now = Date.now()
    const expires = new Date(Math.floor((now + ttlMs) / 1000) * 1000)
    const issuer = options.issuer()
    const codes: string[] = []
    const states: CodeState[] = []
    for (let i = 0; i < count; i++) {
      const code = createInviteCode({
        kind: 'group',
        expires,
        relayAddress: issuer.address,
        relayPeerId: issuer.peerId,
        inviterPeerId: issuer.peerId,
        network: issuer.network,
      })
      const keys = deriveKeys(code.token)
      states.push({ id: keys.codeId, key: Buffer.from(keys.key).toString('hex'), state: 'open', failures: 0 })
      codes.push(encodeInviteCode(code))
    }
    const group: GroupState = {
      id: `g-${randomBytes(4).toString('hex')}`,
      created: new Date(now).toISOString(),
      expires: expires.toISOString(),
      size: count,
      revoked: false,
      codes: states,
      members: [],
    }
    this.#groups.push(group)
    await this.save()
    return { group: groupInfo(group), codes }
  }
}

async function loadGroups(file: string): Promise<GroupState[]> {
  const text = await fs.readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') {
      throw err
    }
  })
  if (text === undefined) {
    return []
  }
  const parsed = stateFile.safeParse(JSON.parse(text))
  if (!parsed.success) {
    throw new ConflictError(`${file} is not a valid pairing state file`, {
      hint: 'restore it from a backup, or move it away (its group codes then stop working)',
    })
  }
  return parsed.data.groups
}
