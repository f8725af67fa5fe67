/**
 * The authorized_keys file: which peers may connect, in a format modelled on OpenSSH's.
 *
 * One peer per line, `<peer-id> [key=value ...] [# comment]`; blank lines and lines starting with
 * `#` are comments, and a comment may also end an entry after a `#` preceded by whitespace. The
 * file parses into an {@link AuthorizedKeys} document that keeps every original line, so a rewrite
 * (`peerup auth add|remove`) changes only the lines it edits and a hand-kept file keeps its
 * comments, order and spacing.
 *
 * @packageDocumentation
 */

import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import { peerIdFromString } from '@libp2p/peer-id'
import { atomicWriteFile, checkFileMode } from '../util/fs.ts'
import {
  AuthorizedKeysChangedError,
  AuthorizedKeysError,
  AuthorizedKeysMissingError,
  DuplicatePeerError,
  InvalidAttributeError,
  InvalidPeerIdError,
  PeerNotFoundError,
} from './errors.ts'

/** The attribute keys an entry may carry, in the order a new entry writes them. */
export const AUTHORIZED_KEY_ATTRIBUTES = ['expires', 'verified', 'group', 'sponsor'] as const

export type AuthorizedKeyAttribute = (typeof AUTHORIZED_KEY_ATTRIBUTES)[number]

/** The parsed attributes of an entry; a key is absent when the line does not set it. */
export interface AuthorizedKeyAttributes {
  /** The instant from which the entry no longer authorizes the peer; a bare date means 00:00 UTC that day. */
  expires?: Date
  /** A record that the peer was verified out of band: a fingerprint such as `sha256:…`, or a date. */
  verified?: string
  /** A group name, to sort peers in listings and policy. */
  group?: string
  /** On a relay: the canonical id of the peer that sponsored this one, or `yes` when this one may sponsor others. */
  sponsor?: string
}

/** Attribute values given to {@link AuthorizedKeys.add}: text as it would appear in the file, or a Date for `expires`. */
export type AuthorizedKeyAttributesInput = Omit<AuthorizedKeyAttributes, 'expires'> & {
  expires?: Date | string
}

/** One peer listed in the file. A snapshot: changing the document does not change it. */
export interface AuthorizedKey {
  /** The canonical (`PeerId.toString()`) form of the id, whatever form the line wrote it in. */
  readonly peerId: string
  readonly attributes: Readonly<AuthorizedKeyAttributes>
  /** The text after ` #`, trimmed; undefined when the line has none or it is empty. */
  readonly comment: string | undefined
  /** The 1-based line number in the document as it would be written now. */
  readonly line: number
}

export interface AddPeerOptions {
  /** Free text for the line's comment; it is sanitised (see {@link sanitizeComment}). */
  comment?: string
  /** Attributes for the new line; each value is validated as if it had been read from the file. */
  attributes?: AuthorizedKeyAttributesInput
}

/** The longest comment {@link sanitizeComment} keeps, in characters. */
export const MAX_COMMENT_LENGTH = 200

const DEFAULT_FILE = 'authorized_keys'
// Real peer ids are at most ~70 characters (an identity CID in base32); the cap keeps a pasted blob
// from reaching the multibase decoders.
const MAX_PEER_ID_LENGTH = 256
const VERIFIED_RE = /^[A-Za-z0-9:._+-]{1,128}$/
const GROUP_RE = /^[A-Za-z0-9._-]{1,64}$/
// A date, or a date and time with an offset (RFC 3339).
const EXPIRES_RE =
  /^(\d{4})-(\d{2})-(\d{2})(?:[Tt](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?(?:[Zz]|([+-])(\d{2}):(\d{2})))?$/
const PEER_ID_HINT = 'a peer id looks like 12D3KooW… (52 characters); check that it was copied whole'

/** The result of checking one piece of text: the value, or why it is wrong and what to do. */
type Check<T> = { ok: true; value: T } | { ok: false; problem: string; hint: string; cause?: unknown }

type AttributeValue = { key: AuthorizedKeyAttribute; value: Date | string }

/** An entry line, split into the parts a rewrite needs to re-render it. */
interface EntryState {
  peerId: string
  /** The id as the line wrote it (a CID form stays a CID form when the line is re-rendered). */
  idToken: string
  /** The attributes in line order, with their text as written. */
  attrs: Array<{ key: AuthorizedKeyAttribute; raw: string }>
  parsed: AuthorizedKeyAttributes
  /** Everything from the whitespace before ` #` to the end of the line, reused verbatim on a re-render. */
  commentSuffix: string
  comment: string | undefined
}

interface DocLine {
  /** The line without its line ending, byte for byte as read until the line is edited. */
  text: string
  eol: string
  /** Set for an entry line; undefined for blank and comment lines. */
  entry: EntryState | undefined
}

/**
 * An authorized_keys file as a document: the entries, plus every other line kept as it was, so that
 * {@link AuthorizedKeys.toString} reproduces the input exactly until something is changed.
 */
export class AuthorizedKeys {
  /** The file name used in messages (a path, or `authorized_keys`). */
  readonly file: string
  #lines: DocLine[]
  #byId = new Map<string, DocLine>()
  #bom: boolean
  #eol: string

  /**
   * Parses `text` (empty by default: a new, empty file). Throws {@link AuthorizedKeysError} naming
   * `file` and the line number at the first bad line; {@link validateAuthorizedKeys} reports them all.
   */
  constructor(text = '', file = DEFAULT_FILE) {
    this.file = file
    const scanned = scan(text, file, (err) => {
      throw err
    })
    this.#lines = scanned.lines
    this.#bom = scanned.bom
    this.#eol = scanned.eol
    for (const line of this.#lines) {
      if (line.entry !== undefined) {
        this.#byId.set(line.entry.peerId, line)
      }
    }
  }

  /** The number of entries, expired ones included. */
  get size(): number {
    return this.#byId.size
  }

  /** Every entry in file order, expired ones included. */
  entries(): AuthorizedKey[] {
    return this.#lines.flatMap((line, i) => (line.entry === undefined ? [] : [snapshot(line.entry, i + 1)]))
  }

  /** The entry for a peer (in any valid id form), or undefined when it is not listed or `peerId` is not an id. */
  get(peerId: string): AuthorizedKey | undefined {
    const line = this.#lookup(peerId)
    return line === undefined ? undefined : snapshot(line.entry!, this.#lineNumber(line))
  }

  /** Whether the file lists the peer, expired or not. */
  has(peerId: string): boolean {
    return this.#lookup(peerId) !== undefined
  }

  /** Whether the peer is listed and its entry has not expired at `now`. */
  isAuthorized(peerId: string, now: Date = new Date()): boolean {
    const entry = this.#lookup(peerId)?.entry
    return entry !== undefined && !expiredAt(entry.parsed.expires, now)
  }

  /** The canonical ids of every entry still valid at `now`: what the daemon admits. */
  authorizedSet(now: Date = new Date()): Set<string> {
    return new Set(
      [...this.#byId].filter(([, line]) => !expiredAt(line.entry!.parsed.expires, now)).map(([id]) => id),
    )
  }

  /**
   * The earliest expiry still ahead of `now`, or undefined when none is: the moment a cached
   * {@link AuthorizedKeys.authorizedSet} goes stale.
   */
  nextExpiry(now: Date = new Date()): Date | undefined {
    const ahead = [...this.#byId.values()]
      .map((line) => line.entry!.parsed.expires?.getTime() ?? Number.NaN)
      .filter((t) => t > now.getTime())
    return ahead.length === 0 ? undefined : new Date(Math.min(...ahead))
  }

  /**
   * Appends an entry for a peer. Throws {@link InvalidPeerIdError} or {@link InvalidAttributeError}
   * for bad input and {@link DuplicatePeerError} when the peer is already listed (even expired):
   * re-adding must not silently drop the old line's attributes.
   */
  add(peerId: string, options: AddPeerOptions = {}): AuthorizedKey {
    const id = canonicalPeerId(peerId)
    const existing = this.#byId.get(id)
    if (existing !== undefined) {
      throw new DuplicatePeerError(this.file, id, this.#lineNumber(existing))
    }
    const comment = sanitizeComment(options.comment)
    const entry: EntryState = {
      peerId: id,
      idToken: id,
      attrs: [],
      parsed: {},
      commentSuffix: comment === undefined ? '' : ` # ${comment}`,
      comment,
    }
    const given = options.attributes ?? {}
    const unknown = Object.keys(given).find((key) => !isAttributeKey(key))
    if (unknown !== undefined) {
      throw unknownAttributeInput(unknown)
    }
    for (const key of AUTHORIZED_KEY_ATTRIBUTES) {
      const value = given[key]
      if (value !== undefined) {
        const checked = checkInput(key, value)
        entry.attrs.push({ key, raw: checked.raw })
        Object.assign(entry.parsed, { [key]: checked.value })
      }
    }
    const line: DocLine = { text: render(entry), eol: this.#eol, entry }
    this.#lines.push(line)
    this.#byId.set(id, line)
    return snapshot(entry, this.#lines.length)
  }

  /** Deletes a peer's line and returns what it held. Throws {@link PeerNotFoundError} when it is not listed. */
  remove(peerId: string): AuthorizedKey {
    const line = this.#require(peerId)
    const index = this.#lines.indexOf(line)
    this.#lines.splice(index, 1)
    this.#byId.delete(line.entry!.peerId)
    return snapshot(line.entry!, index + 1)
  }

  /**
   * Sets one attribute on a listed peer (`value` as it would appear in the file, or a Date for
   * `expires`), or removes it when `value` is undefined. Only that line is rewritten, and only
   * when its content actually changes; its comment is kept verbatim.
   */
  setAttribute(peerId: string, key: AuthorizedKeyAttribute, value: Date | string | undefined): AuthorizedKey {
    if (!isAttributeKey(key)) {
      throw unknownAttributeInput(key)
    }
    const line = this.#require(peerId)
    const entry = line.entry!
    const index = entry.attrs.findIndex((a) => a.key === key)
    const checked = value === undefined ? undefined : checkInput(key, value)
    if (checked?.raw !== entry.attrs[index]?.raw) {
      if (checked === undefined) {
        entry.attrs.splice(index, 1)
        delete entry.parsed[key]
      } else {
        // In place, or appended when the line did not set it.
        entry.attrs.splice(index === -1 ? entry.attrs.length : index, 1, { key, raw: checked.raw })
        Object.assign(entry.parsed, { [key]: checked.value })
      }
      line.text = render(entry)
    }
    return snapshot(entry, this.#lineNumber(line))
  }

  /** The file's text: untouched lines byte for byte (line endings included), ending with a newline unless empty. */
  toString(): string {
    const body = this.#lines.map((line) => line.text + line.eol).join('')
    return this.#bom ? `\uFEFF${body}` : body
  }

  #lookup(peerId: string): DocLine | undefined {
    const direct = this.#byId.get(peerId)
    if (direct !== undefined) {
      return direct
    }
    const checked = checkPeerId(peerId)
    return checked.ok ? this.#byId.get(checked.value) : undefined
  }

  #require(peerId: string): DocLine {
    const id = canonicalPeerId(peerId)
    const line = this.#byId.get(id)
    if (line === undefined) {
      throw new PeerNotFoundError(this.file, id)
    }
    return line
  }

  #lineNumber(line: DocLine): number {
    return this.#lines.indexOf(line) + 1
  }
}

/** Checks authorized_keys text and returns every problem, one per bad line, in line order (empty when valid). */
export function validateAuthorizedKeys(text: string, file: string = DEFAULT_FILE): AuthorizedKeysError[] {
  const problems: AuthorizedKeysError[] = []
  scan(text, file, (err) => problems.push(err))
  return problems
}

/** Whether an entry has expired at `now` (it stays listed, but no longer authorizes). */
export function isExpired(entry: AuthorizedKey, now: Date = new Date()): boolean {
  return expiredAt(entry.attributes.expires, now)
}

/** The canonical form of a peer id given in any valid form; throws {@link InvalidPeerIdError} otherwise. */
export function canonicalPeerId(text: string): string {
  const checked = checkPeerId(text)
  if (!checked.ok) {
    throw new InvalidPeerIdError(checked.problem, { hint: checked.hint, cause: checked.cause })
  }
  return checked.value
}

/**
 * Makes free text safe to write as a line's comment: control characters, line separators and
 * bidi overrides are removed (a comment must never start a second line or disguise the one it is
 * on), whitespace is collapsed, and the result is trimmed and capped at {@link MAX_COMMENT_LENGTH}
 * characters. Undefined when nothing is left.
 */
export function sanitizeComment(text: string | undefined): string | undefined {
  if (text === undefined) {
    return undefined
  }
  const cleaned = text
    .replace(/[\p{Cc}\p{Zl}\p{Zp}]/gu, ' ')
    .replace(/[\u061C\u200E\u200F\u202A-\u202E\u2066-\u2069\uFEFF]/gu, '')
    .replace(/\s+/gu, ' ')
    .trim()
  // Cap by code point so a surrogate pair is never cut in half.
  const capped = Array.from(cleaned).slice(0, MAX_COMMENT_LENGTH).join('').trimEnd()
  return capped === '' ? undefined : capped
}

/**
 * Reads and parses an authorized_keys file. Refuses a file writable by group or others (as sshd's
 * StrictModes does) and throws {@link AuthorizedKeysMissingError} when it does not exist, unless
 * `createIfMissing` asks for an empty document instead (nothing is written until a save).
 */
export async function loadAuthorizedKeys(
  file: string,
  options: { createIfMissing?: boolean } = {},
): Promise<AuthorizedKeys> {
  const text = await readTrustFile(file, options.createIfMissing === true)
  return new AuthorizedKeys(text ?? '', file)
}

/**
 * Writes a document to `file` atomically (temp file, fsync, rename) with mode 0600, or the existing
 * owner-only bits when they are stricter (a 0400 file stays 0400). A symlinked file is written
 * through the link rather than replaced by a regular file.
 */
export async function saveAuthorizedKeys(file: string, doc: AuthorizedKeys): Promise<void> {
  let target = file
  let mode = 0o600
  try {
    target = await fs.realpath(file)
    // Owner-only bits of the old mode, but never unreadable by the owner: peerup must read it back.
    mode = ((await fs.stat(target)).mode & 0o600) | 0o400
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw err
    }
    await fs.mkdir(path.dirname(file), { recursive: true, mode: 0o700 })
  }
  await atomicWriteFile(target, doc.toString(), { mode })
}

/**
 * Loads the file (as {@link loadAuthorizedKeys} does), runs `mutate` on it and saves the result,
 * all or nothing: when `mutate` throws, or the file changed on disk meanwhile
 * ({@link AuthorizedKeysChangedError}), nothing is written. Nothing is written either when `mutate`
 * leaves the document as it was. Returns what `mutate` returns.
 */
export async function updateAuthorizedKeys<T>(
  file: string,
  mutate: (doc: AuthorizedKeys) => T | Promise<T>,
  options: { createIfMissing?: boolean } = {},
): Promise<T> {
  const before = await readTrustFile(file, options.createIfMissing === true)
  const doc = new AuthorizedKeys(before ?? '', file)
  const original = doc.toString()
  const result = await mutate(doc)
  if (doc.toString() === original) {
    return result
  }
  // Two writers (two CLI runs, or the CLI and a relay recording a sponsor) must not silently drop
  // each other's change; re-reading narrows that race to the rename itself.
  const current = await readTrustFile(file, true)
  if (current !== before) {
    throw new AuthorizedKeysChangedError(file)
  }
  await saveAuthorizedKeys(file, doc)
  return result
}

/** The file's text, or undefined when it is missing and that is allowed. */
async function readTrustFile(file: string, allowMissing: boolean): Promise<string | undefined> {
  try {
    await checkFileMode(file, 'trust')
    return await fs.readFile(file, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      if (allowMissing) {
        return undefined
      }
      throw new AuthorizedKeysMissingError(file, { cause: err })
    }
    throw err
  }
}

/** Splits text into lines and parses each, calling `report` for every bad line (which may throw to stop). */
function scan(
  text: string,
  file: string,
  report: (err: AuthorizedKeysError) => void,
): { lines: DocLine[]; bom: boolean; eol: string } {
  const bom = text.startsWith('\uFEFF')
  const body = bom ? text.slice(1) : text
  const raw = (body === '' ? [] : body.split(/(?<=\n)/)).map((l) => {
    const eol = /\r?\n$/.exec(l)?.[0]
    return { text: l.slice(0, l.length - (eol?.length ?? 0)), eol }
  })
  // New lines (and a last line that had none) follow the file's own line ending.
  const eol = raw.find((l) => l.eol !== undefined)?.eol ?? '\n'
  const seen = new Map<string, number>()
  const lines: DocLine[] = raw.map((l, i) => {
    const lineNo = i + 1
    const parsed = parseLine(l.text)
    let entry: EntryState | undefined
    if (parsed !== undefined && !parsed.ok) {
      report(
        new AuthorizedKeysError(file, lineNo, parsed.problem, { hint: parsed.hint, cause: parsed.cause }),
      )
    } else if (parsed !== undefined) {
      const first = seen.get(parsed.value.peerId)
      if (first === undefined) {
        seen.set(parsed.value.peerId, lineNo)
        entry = parsed.value
      } else {
        report(
          new AuthorizedKeysError(
            file,
            lineNo,
            `duplicate peer ${parsed.value.peerId}: already listed on line ${first}`,
            { hint: `delete line ${first} or line ${lineNo}, keeping the attributes you want` },
          ),
        )
      }
    }
    return { text: l.text, eol: l.eol ?? eol, entry }
  })
  return { lines, bom, eol }
}

/** Parses one line: undefined for a blank or comment line. */
function parseLine(text: string): Check<EntryState> | undefined {
  const trimmed = text.trim()
  if (trimmed === '' || trimmed.startsWith('#')) {
    return undefined
  }
  const hash = text.search(/\s#/)
  const bodyText = (hash === -1 ? text : text.slice(0, hash)).trim()
  const bodyEnd = text.length - text.trimStart().length + bodyText.length
  const tokens = bodyText.split(/\s+/)
  const idToken = tokens[0]!
  const id = checkPeerId(idToken)
  if (!id.ok) {
    return idToken.includes('#')
      ? { ...id, hint: 'a comment needs whitespace before its #, as in "<peer-id> # laptop"' }
      : id
  }
  const entry: EntryState = {
    peerId: id.value,
    idToken,
    attrs: [],
    parsed: {},
    commentSuffix: hash === -1 ? '' : text.slice(bodyEnd),
    comment: hash === -1 ? undefined : text.slice(hash + 2).trim() || undefined,
  }
  for (const token of tokens.slice(1)) {
    const eq = token.indexOf('=')
    if (eq === -1) {
      return {
        ok: false,
        problem: `expected key=value after the peer id, got ${JSON.stringify(token)}`,
        hint: 'free text belongs in a comment: put " # " before it',
      }
    }
    const key = token.slice(0, eq)
    const raw = token.slice(eq + 1)
    const checked = checkAttribute(key, raw)
    if (!checked.ok) {
      return checked
    }
    if (entry.attrs.some((a) => a.key === checked.value.key)) {
      return { ok: false, problem: `attribute ${key} is set twice`, hint: 'keep one of them' }
    }
    entry.attrs.push({ key: checked.value.key, raw })
    Object.assign(entry.parsed, { [checked.value.key]: checked.value.value })
  }
  return { ok: true, value: entry }
}

function checkPeerId(text: string): Check<string> {
  const invalid = {
    ok: false as const,
    problem: `${JSON.stringify(text)} is not a valid peer id`,
    hint: PEER_ID_HINT,
  }
  if (text.length === 0 || text.length > MAX_PEER_ID_LENGTH) {
    return invalid
  }
  try {
    const id = peerIdFromString(text)
    // A URL peer id names a web endpoint, not a key: nothing could ever authenticate as it.
    if (id.type === 'url') {
      return { ...invalid, problem: `${JSON.stringify(text)} is a URL peer id, not a key` }
    }
    return { ok: true, value: id.toString() }
  } catch (err) {
    return { ...invalid, cause: err }
  }
}

function checkAttribute(key: string, raw: string): Check<AttributeValue> {
  if (!isAttributeKey(key)) {
    const lower = key.toLowerCase()
    return {
      ok: false,
      problem: `unknown attribute ${JSON.stringify(key)}`,
      hint: isAttributeKey(lower)
        ? `attribute names are lower case: ${lower}=`
        : `known attributes are ${AUTHORIZED_KEY_ATTRIBUTES.join(', ')}; free text belongs in a comment after " # "`,
    }
  }
  const bad = (hint: string): Check<AttributeValue> => ({
    ok: false,
    problem: `bad ${key} value ${JSON.stringify(raw)}`,
    hint,
  })
  switch (key) {
    case 'expires': {
      const date = parseExpires(raw)
      return date === undefined
        ? bad('use a date (2026-01-31, meaning 00:00 UTC) or an RFC 3339 time (2026-01-31T18:00:00Z)')
        : { ok: true, value: { key, value: date } }
    }
    case 'verified':
      return VERIFIED_RE.test(raw)
        ? { ok: true, value: { key, value: raw } }
        : bad('use up to 128 letters, digits and : . _ + - (a fingerprint such as sha256:… or a date)')
    case 'group':
      return GROUP_RE.test(raw)
        ? { ok: true, value: { key, value: raw } }
        : bad('use up to 64 letters, digits and . _ -')
    case 'sponsor': {
      if (raw === 'yes') {
        return { ok: true, value: { key, value: raw } }
      }
      const id = checkPeerId(raw)
      return id.ok ? { ok: true, value: { key, value: id.value } } : bad('use a peer id, or yes')
    }
  }
}

/** Validates a value given by code or the command line, returning the text to write and the parsed value. */
function checkInput(key: string, value: Date | string): { raw: string; value: Date | string } {
  let raw: string
  if (value instanceof Date) {
    if (key !== 'expires') {
      throw new InvalidAttributeError(`${key} takes text, not a date`)
    }
    if (Number.isNaN(value.getTime())) {
      throw new InvalidAttributeError('bad expires value: invalid Date')
    }
    raw = value.toISOString().replace('.000Z', 'Z')
  } else {
    raw = value
  }
  const checked = checkAttribute(key, raw)
  if (!checked.ok) {
    throw new InvalidAttributeError(checked.problem, { hint: checked.hint })
  }
  return { raw, value: checked.value.value }
}

function unknownAttributeInput(key: string): InvalidAttributeError {
  return new InvalidAttributeError(`unknown attribute ${JSON.stringify(key)}`, {
    hint: `known attributes are ${AUTHORIZED_KEY_ATTRIBUTES.join(', ')}`,
  })
}

function isAttributeKey(key: string): key is AuthorizedKeyAttribute {
  return (AUTHORIZED_KEY_ATTRIBUTES as readonly string[]).includes(key)
}

/** Parses `YYYY-MM-DD` (00:00 UTC that day, like OpenSSH's `expiry-time=YYYYMMDDZ`) or an RFC 3339 time. */
function parseExpires(raw: string): Date | undefined {
  const match = EXPIRES_RE.exec(raw)
  if (match === null) {
    return undefined
  }
  const [, y, mo, d, h = '00', mi = '00', s = '00', frac, sign, oh = '0', om = '0'] = match
  if (Number(oh) > 23 || Number(om) > 59) {
    return undefined
  }
  const fields = `${y}-${mo}-${d}T${h}:${mi}:${s}`
  const date = new Date(`${fields}Z`)
  // Date rolls a field out of range over into the next (Feb 30 is Mar 2, 24:00 the next day) or
  // gives NaN; either way the text names no real instant.
  if (Number.isNaN(date.getTime()) || date.toISOString().slice(0, 19) !== fields) {
    return undefined
  }
  const ms = frac === undefined ? 0 : Math.floor(Number(`0${frac}`) * 1000)
  const offset = (sign === '-' ? -1 : 1) * (Number(oh) * 60 + Number(om))
  return new Date(date.getTime() + ms - offset * 60_000)
}

function expiredAt(expires: Date | undefined, now: Date): boolean {
  return expires !== undefined && now.getTime() >= expires.getTime()
}

/** Re-renders an edited entry line; the comment suffix is kept as it was written. */
function render(entry: EntryState): string {
  const attrs = entry.attrs.map((a) => ` ${a.key}=${a.raw}`).join('')
  return `${entry.idToken}${attrs}${entry.commentSuffix}`
}

function snapshot(entry: EntryState, line: number): AuthorizedKey {
  const attributes: AuthorizedKeyAttributes = { ...entry.parsed }
  if (attributes.expires !== undefined) {
    attributes.expires = new Date(attributes.expires)
  }
  return Object.freeze({
    peerId: entry.peerId,
    attributes: Object.freeze(attributes),
    comment: entry.comment,
    line,
  })
}
