import assert from 'node:assert/strict'
import * as fs from 'node:fs/promises'
import * as os from 'node:os'
import * as path from 'node:path'
import { after, before, describe, test } from 'node:test'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id'
import {
  AuthorizedKeys,
  canonicalPeerId,
  isExpired,
  loadAuthorizedKeys,
  MAX_COMMENT_LENGTH,
  sanitizeComment,
  saveAuthorizedKeys,
  updateAuthorizedKeys,
  validateAuthorizedKeys,
} from '../../../src/auth/authorized-keys.ts'
import {
  AuthorizedKeysChangedError,
  AuthorizedKeysError,
  AuthorizedKeysMissingError,
  DuplicatePeerError,
  InvalidAttributeError,
  InvalidPeerIdError,
  PeerNotFoundError,
} from '../../../src/auth/errors.ts'
import { ConflictError, NotFoundError, UsageError } from '../../../src/errors.ts'
import { FileModeError } from '../../../src/util/fs.ts'

const posix = process.platform !== 'win32'

/** What `fn` throws (node's assert.throws checks an error but does not return it). */
function thrown(fn: () => unknown): unknown {
  try {
    fn()
  } catch (err) {
    return err
  }
  return assert.fail('expected an error')
}

async function newPeerId(): Promise<string> {
  return peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()
}

/** The same id in its CID (base32) form, which the file must treat as the same peer. */
function cidForm(peerId: string): string {
  return peerIdFromString(peerId).toCID().toString()
}

let A: string
let B: string
let C: string
let D: string

before(async () => {
  ;[A, B, C, D] = await Promise.all([newPeerId(), newPeerId(), newPeerId(), newPeerId()])
})

describe('new AuthorizedKeys', () => {
  test('reads entries, attributes and comments, and keeps every line', () => {
    const text = [
      '# peers allowed to reach this machine',
      '',
      `${A}`,
      `   ${B}   group=ops  verified=sha256:AbC+x # laptop  (alice) `,
      '\t# indented comment line',
      `${C} expires=2030-01-31 sponsor=yes #no-space-needed-after-hash`,
      `${D} sponsor=${A} expires=2030-01-31T18:30:00+02:00`,
      '',
    ].join('\n')
    const doc = new AuthorizedKeys(text)
    assert.equal(doc.toString(), text)
    assert.equal(doc.size, 4)
    const entries = doc.entries()
    assert.deepEqual(
      entries.map((e) => [e.peerId, e.line, e.comment]),
      [
        [A, 3, undefined],
        [B, 4, 'laptop  (alice)'],
        [C, 6, 'no-space-needed-after-hash'],
        [D, 7, undefined],
      ],
    )
    assert.deepEqual(entries[1]!.attributes, { group: 'ops', verified: 'sha256:AbC+x' })
    assert.deepEqual(entries[2]!.attributes, { expires: new Date('2030-01-31T00:00:00Z'), sponsor: 'yes' })
    assert.deepEqual(entries[3]!.attributes, { sponsor: A, expires: new Date('2030-01-31T16:30:00Z') })
  })

  test('an empty document is empty text', () => {
    assert.equal(new AuthorizedKeys().toString(), '')
    assert.equal(new AuthorizedKeys('').size, 0)
    assert.equal(new AuthorizedKeys('\n# only comments\n').size, 0)
  })

  test('keeps CRLF line endings and a BOM, and adds a missing final newline', () => {
    const crlf = `\uFEFF# c\r\n${A} # x\r\n${B}`
    const doc = new AuthorizedKeys(crlf)
    assert.equal(doc.toString(), `${crlf}\r\n`)
    doc.add(C)
    assert.equal(doc.toString(), `${crlf}\r\n${C}\r\n`)
    assert.equal(new AuthorizedKeys(`${A}`).toString(), `${A}\n`)
  })

  test('canonicalises other id forms, and finds peers by any form', async () => {
    const cid = cidForm(A)
    const doc = new AuthorizedKeys(`${cid} group=x\n`)
    assert.equal(doc.entries()[0]!.peerId, A)
    assert.ok(doc.has(A))
    assert.ok(doc.has(cid))
    assert.ok(doc.isAuthorized(cid))
    assert.equal(doc.get(cid)?.peerId, A)
    assert.equal(doc.has('not-a-peer-id'), false)
    assert.equal(doc.isAuthorized('not-a-peer-id'), false)
    assert.equal(doc.get('not-a-peer-id'), undefined)
    // The line keeps the form it was written in, even when rewritten.
    doc.setAttribute(A, 'group', 'y')
    assert.equal(doc.toString(), `${cid} group=y\n`)
  })

  const expiresCases: Array<[string, string | undefined]> = [
    ['2030-01-31', '2030-01-31T00:00:00.000Z'],
    ['2028-02-29', '2028-02-29T00:00:00.000Z'],
    ['2030-01-31T18:00:00Z', '2030-01-31T18:00:00.000Z'],
    ['2030-01-31t18:00:00z', '2030-01-31T18:00:00.000Z'],
    ['2030-01-31T18:00:00.25Z', '2030-01-31T18:00:00.250Z'],
    ['2030-01-31T18:00:00-05:30', '2030-01-31T23:30:00.000Z'],
    ['2030-01-31T00:30:00+01:00', '2030-01-30T23:30:00.000Z'],
    ['2029-02-29', undefined],
    ['2030-13-01', undefined],
    ['2030-04-31', undefined],
    ['2030-1-31', undefined],
    ['20300131', undefined],
    ['2030-01-31T24:00:00Z', undefined],
    ['2030-01-31T18:00:00', undefined],
    ['2030-01-31T18:00Z', undefined],
    ['2030-01-31T18:00:00+24:00', undefined],
    ['tomorrow', undefined],
    ['', undefined],
  ]
  for (const [value, iso] of expiresCases) {
    test(`expires=${value} ${iso === undefined ? 'is refused' : `is ${iso}`}`, () => {
      const text = `${A} expires=${value}\n`
      if (iso === undefined) {
        assert.throws(() => new AuthorizedKeys(text), AuthorizedKeysError)
      } else {
        assert.equal(new AuthorizedKeys(text).get(A)?.attributes.expires?.toISOString(), iso)
      }
    })
  }
})

describe('bad lines', () => {
  // Each case: the bad line (placed on line 4, after valid lines), what the message must say.
  const cases: Array<{ name: string; line: () => string; message: RegExp; hint?: RegExp }> = [
    {
      name: 'malformed peer id',
      line: () => 'not-a-peer-id',
      message: /"not-a-peer-id" is not a valid peer id/,
    },
    {
      name: 'truncated peer id',
      line: () => A.slice(0, -3),
      message: /is not a valid peer id/,
      hint: /copied whole/,
    },
    {
      name: 'comment glued to the id',
      line: () => `${A}#laptop`,
      message: /is not a valid peer id/,
      hint: /whitespace before/,
    },
    {
      name: 'unknown attribute',
      line: () => `${A} colour=blue`,
      message: /unknown attribute "colour"/,
      hint: /expires, verified, group, sponsor/,
    },
    {
      name: 'upper-case attribute',
      line: () => `${A} Group=ops`,
      message: /unknown attribute "Group"/,
      hint: /group=/,
    },
    { name: 'bare word', line: () => `${A} laptop`, message: /expected key=value.*"laptop"/, hint: /" # "/ },
    { name: 'nameless attribute', line: () => `${A} =x`, message: /unknown attribute ""/ },
    {
      name: 'bad expires',
      line: () => `${A} expires=soon`,
      message: /bad expires value "soon"/,
      hint: /RFC 3339/,
    },
    { name: 'bad verified', line: () => `${A} verified=a/b`, message: /bad verified value "a\/b"/ },
    { name: 'long verified', line: () => `${A} verified=${'a'.repeat(129)}`, message: /bad verified value/ },
    { name: 'bad group', line: () => `${A} group=a:b`, message: /bad group value "a:b"/ },
    { name: 'empty group', line: () => `${A} group=`, message: /bad group value ""/ },
    { name: 'long group', line: () => `${A} group=${'g'.repeat(65)}`, message: /bad group value/ },
    {
      name: 'bad sponsor',
      line: () => `${A} sponsor=no`,
      message: /bad sponsor value "no"/,
      hint: /peer id, or yes/,
    },
    { name: 'attribute twice', line: () => `${A} group=a group=b`, message: /attribute group is set twice/ },
    {
      name: 'duplicate peer',
      line: () => `${B} group=again`,
      message: /duplicate peer 12D3KooW\w+: already listed on line 2$/,
      hint: /line 2 or line 4/,
    },
  ]
  for (const c of cases) {
    test(`${c.name} is an error at authorized_keys:4`, () => {
      const text = `# header\n${B}\n\n${c.line()}\n${C}\n`
      const err = thrown(() => new AuthorizedKeys(text))
      assert.ok(err instanceof AuthorizedKeysError, String(err))
      assert.equal(err.file, 'authorized_keys')
      assert.equal(err.line, 4)
      assert.ok(err.message.startsWith('authorized_keys:4: '), err.message)
      assert.match(err.message, c.message)
      assert.ok(err.hint !== undefined && err.hint.length > 0)
      if (c.hint !== undefined) {
        assert.match(err.hint, c.hint)
      }
      const problems = validateAuthorizedKeys(text)
      assert.deepEqual(
        problems.map((p) => p.message),
        [err.message],
      )
    })
  }

  test('a duplicate written in another id form is still a duplicate', async () => {
    const text = `${A}\n${cidForm(A)}\n`
    assert.throws(() => new AuthorizedKeys(text, '/etc/peerup/authorized_keys'), {
      name: 'AuthorizedKeysError',
      message: new RegExp(`^/etc/peerup/authorized_keys:2: duplicate peer ${A}: already listed on line 1$`),
    })
  })

  test('validate reports every bad line, in order, with the file name', () => {
    const text = [
      `${A}`,
      'junk',
      `${B} colour=red`,
      '# fine',
      `${A} group=x`,
      `${C} expires=never`,
      `${D}`,
    ].join('\n')
    const problems = validateAuthorizedKeys(text, 'keys')
    assert.deepEqual(
      problems.map((p) => [p.file, p.line]),
      [
        ['keys', 2],
        ['keys', 3],
        ['keys', 5],
        ['keys', 6],
      ],
    )
    assert.ok(
      problems.every((p) => p instanceof AuthorizedKeysError && p.message.startsWith(`keys:${p.line}: `)),
    )
    assert.match(problems[2]!.problem, /already listed on line 1/)
    // parse stops at the first one.
    assert.throws(() => new AuthorizedKeys(text, 'keys'), { message: /^keys:2: / })
  })

  test('validate returns nothing for a good file', () => {
    assert.deepEqual(validateAuthorizedKeys(`# c\n${A} group=x # y\n\n${B}\n`), [])
  })
})

describe('editing', () => {
  const original = () =>
    [
      '# header comment, kept as is   ',
      `${A}    group=ops   # spaced   oddly`,
      '',
      `  ${B} verified=2024-05-01`,
      '#trailing',
      '',
    ].join('\n')

  test('add appends a line and leaves every other line byte-identical', () => {
    const doc = new AuthorizedKeys(original())
    const added = doc.add(C, { comment: 'phone', attributes: { group: 'mobile', expires: '2030-01-01' } })
    assert.equal(added.line, 6)
    assert.deepEqual(added.attributes, { group: 'mobile', expires: new Date('2030-01-01T00:00:00Z') })
    assert.equal(doc.toString(), `${original()}${C} expires=2030-01-01 group=mobile # phone\n`)
    assert.equal(doc.get(C)?.line, 6)
    // And it parses back to the same thing.
    assert.deepEqual(new AuthorizedKeys(doc.toString()).get(C), doc.get(C))
  })

  test('add then remove gives back the original text', () => {
    const doc = new AuthorizedKeys(original())
    doc.add(C, { comment: 'temp' })
    const removed = doc.remove(C)
    assert.equal(removed.peerId, C)
    assert.equal(removed.comment, 'temp')
    assert.equal(doc.toString(), original())
  })

  test('remove deletes only that line and renumbers the rest', () => {
    const doc = new AuthorizedKeys(original())
    const removed = doc.remove(A)
    assert.equal(removed.line, 2)
    assert.deepEqual(removed.attributes, { group: 'ops' })
    const lines = original().split('\n')
    lines.splice(1, 1)
    assert.equal(doc.toString(), lines.join('\n'))
    assert.equal(doc.get(B)?.line, 3)
    assert.equal(doc.has(A), false)
  })

  test('add takes a Date for expires', () => {
    const doc = new AuthorizedKeys()
    doc.add(A, { attributes: { expires: new Date('2030-06-01T12:00:00.000Z') } })
    doc.add(B, { attributes: { expires: new Date('2030-06-01T12:00:00.123Z') } })
    assert.equal(doc.toString(), `${A} expires=2030-06-01T12:00:00Z\n${B} expires=2030-06-01T12:00:00.123Z\n`)
  })

  test('adding a listed peer is a DuplicatePeerError, even in another form', async () => {
    const doc = new AuthorizedKeys(original())
    for (const id of [B, cidForm(B)]) {
      const err = thrown(() => doc.add(id))
      assert.ok(err instanceof DuplicatePeerError)
      assert.ok(err instanceof ConflictError)
      assert.equal(err.peerId, B)
      assert.equal(err.line, 4)
      assert.match(err.hint ?? '', new RegExp(`peerup auth remove ${B}`))
    }
    assert.equal(doc.toString(), original())
  })

  test('removing or editing an unlisted peer is a PeerNotFoundError', () => {
    const doc = new AuthorizedKeys(original())
    for (const op of [() => doc.remove(C), () => doc.setAttribute(C, 'group', 'x')]) {
      const err = thrown(op)
      assert.ok(err instanceof PeerNotFoundError)
      assert.ok(err instanceof NotFoundError)
      assert.equal(err.peerId, C)
    }
  })

  const badInputs: Array<{
    name: string
    run: (doc: AuthorizedKeys) => unknown
    type: new (...a: never[]) => Error
  }> = [
    { name: 'bad peer id to add', run: (doc) => doc.add('nope'), type: InvalidPeerIdError },
    { name: 'bad peer id to remove', run: (doc) => doc.remove('nope'), type: InvalidPeerIdError },
    {
      name: 'bad group',
      run: (doc) => doc.add(C, { attributes: { group: 'two words' } }),
      type: InvalidAttributeError,
    },
    {
      name: 'attribute value with a newline',
      run: (doc) => doc.add(C, { attributes: { verified: `x\n${D}` } }),
      type: InvalidAttributeError,
    },
    {
      name: 'unknown attribute',
      run: (doc) => doc.add(C, { attributes: { colour: 'red' } as never }),
      type: InvalidAttributeError,
    },
    {
      name: 'invalid Date',
      run: (doc) => doc.setAttribute(A, 'expires', new Date('x')),
      type: InvalidAttributeError,
    },
    {
      name: 'Date for group',
      run: (doc) => doc.setAttribute(A, 'group', new Date()),
      type: InvalidAttributeError,
    },
    {
      name: 'unknown key to set',
      run: (doc) => doc.setAttribute(A, 'x' as never, 'y'),
      type: InvalidAttributeError,
    },
  ]
  for (const c of badInputs) {
    test(`${c.name} is a usage error and changes nothing`, () => {
      const doc = new AuthorizedKeys(original())
      const err = thrown(() => c.run(doc))
      assert.ok(err instanceof c.type, String(err))
      assert.ok(err instanceof UsageError)
      assert.equal(doc.toString(), original())
      assert.equal(doc.has(C), false)
    })
  }

  test('setAttribute rewrites only its line and keeps the comment verbatim', () => {
    const doc = new AuthorizedKeys(original())
    const updated = doc.setAttribute(A, 'verified', 'sha256:abcd')
    assert.deepEqual(updated.attributes, { group: 'ops', verified: 'sha256:abcd' })
    const lines = original().split('\n')
    lines[1] = `${A} group=ops verified=sha256:abcd   # spaced   oddly`
    assert.equal(doc.toString(), lines.join('\n'))

    doc.setAttribute(A, 'group', 'dev')
    lines[1] = `${A} group=dev verified=sha256:abcd   # spaced   oddly`
    assert.equal(doc.toString(), lines.join('\n'))

    doc.setAttribute(A, 'group', undefined)
    lines[1] = `${A} verified=sha256:abcd   # spaced   oddly`
    assert.equal(doc.toString(), lines.join('\n'))
    assert.deepEqual(doc.get(A)?.attributes, { verified: 'sha256:abcd' })
  })

  test('setAttribute that changes nothing leaves the line untouched', () => {
    const doc = new AuthorizedKeys(original())
    doc.setAttribute(B, 'verified', '2024-05-01')
    doc.setAttribute(B, 'group', undefined)
    assert.equal(doc.toString(), original())
  })

  test('setAttribute canonicalises a sponsor id', async () => {
    const doc = new AuthorizedKeys(original())
    doc.setAttribute(B, 'sponsor', cidForm(A))
    assert.equal(doc.get(B)?.attributes.sponsor, A)
  })

  test('entries are snapshots', () => {
    const doc = new AuthorizedKeys(`${A} expires=2030-01-01\n`)
    const entry = doc.get(A)!
    assert.ok(Object.isFrozen(entry))
    entry.attributes.expires!.setTime(0)
    assert.equal(doc.get(A)?.attributes.expires?.toISOString(), '2030-01-01T00:00:00.000Z')
    assert.ok(doc.isAuthorized(A, new Date('2029-01-01')))
  })
})

describe('comments given to add', () => {
  const cases: Array<[string, string, string | undefined]> = [
    ['plain text', 'alice laptop', 'alice laptop'],
    ['trimmed and collapsed', '  alice \t  laptop  ', 'alice laptop'],
    ['newline cannot start a line', 'x\nrogue-peer group=admin', 'x rogue-peer group=admin'],
    ['CR, NUL, ESC and DEL removed', 'a\rb\0c\x1b[31md\x7f', 'a b c [31md'],
    ['unicode line separators', 'a\u2028b\u2029c\u0085d', 'a b c d'],
    ['bidi overrides stripped', 'evil\u202Egnp.exe\u2066x\u2069', 'evilgnp.exex'],
    ['hash kept', 'issue #4 # see', 'issue #4 # see'],
    ['only whitespace is no comment', ' \n\t ', undefined],
    ['non-ASCII kept', 'Zoë’s 💻', 'Zoë’s 💻'],
  ]
  for (const [name, input, expected] of cases) {
    test(name, () => {
      assert.equal(sanitizeComment(input), expected)
    })
  }

  test(`capped at ${MAX_COMMENT_LENGTH} characters without splitting a surrogate pair`, () => {
    assert.equal(sanitizeComment('a'.repeat(500)), 'a'.repeat(MAX_COMMENT_LENGTH))
    const emoji = sanitizeComment('💻'.repeat(300))!
    assert.equal(Array.from(emoji).length, MAX_COMMENT_LENGTH)
    assert.ok(emoji.isWellFormed())
  })

  test('a comment with a newline cannot inject a second entry', () => {
    const doc = new AuthorizedKeys(`${A}\n`)
    doc.add(B, { comment: `friend\n${C}\r\n${D} sponsor=yes` })
    const text = doc.toString()
    assert.equal(text.split('\n').length, 3)
    const reparsed = new AuthorizedKeys(text)
    assert.deepEqual(
      reparsed.entries().map((e) => e.peerId),
      [A, B],
    )
    assert.equal(reparsed.isAuthorized(C), false)
    assert.equal(reparsed.isAuthorized(D), false)
    assert.equal(reparsed.get(B)?.comment, `friend ${C} ${D} sponsor=yes`)
  })
})

describe('expiry', () => {
  const text = () => `${A} expires=2030-01-01\n${B}\n${C} expires=2030-06-01T12:00:00Z\n`
  const cases: Array<[string, string, string[]]> = [
    ['before any expiry', '2029-12-31T23:59:59Z', ['A', 'B', 'C']],
    ['at the expiry instant', '2030-01-01T00:00:00Z', ['B', 'C']],
    ['between', '2030-03-01T00:00:00Z', ['B', 'C']],
    ['after all', '2031-01-01T00:00:00Z', ['B']],
  ]
  for (const [name, at, valid] of cases) {
    test(`${name}: ${valid.join(', ')} authorized`, () => {
      const names = new Map([
        ['A', A],
        ['B', B],
        ['C', C],
      ])
      const doc = new AuthorizedKeys(text())
      const now = new Date(at)
      const ids = valid.map((n) => names.get(n)!)
      assert.deepEqual([...doc.authorizedSet(now)].sort(), [...ids].sort())
      for (const [n, id] of names) {
        assert.equal(doc.isAuthorized(id, now), valid.includes(n), n)
      }
      // Expired entries are still listed.
      assert.equal(doc.entries().length, 3)
      assert.deepEqual(
        doc.entries().map((e) => !isExpired(e, now)),
        [...names.keys()].map((n) => valid.includes(n)),
      )
    })
  }

  test('nextExpiry is the earliest expiry still ahead', () => {
    const doc = new AuthorizedKeys(text())
    assert.equal(doc.nextExpiry(new Date('2029-01-01'))?.toISOString(), '2030-01-01T00:00:00.000Z')
    assert.equal(doc.nextExpiry(new Date('2030-01-01'))?.toISOString(), '2030-06-01T12:00:00.000Z')
    assert.equal(doc.nextExpiry(new Date('2031-01-01')), undefined)
  })

  test('an expired peer is still a duplicate', () => {
    const doc = new AuthorizedKeys(`${A} expires=2000-01-01\n`)
    assert.equal(doc.isAuthorized(A), false)
    assert.throws(() => doc.add(A), DuplicatePeerError)
  })
})

describe('helpers', () => {
  test('canonicalPeerId', async () => {
    assert.equal(canonicalPeerId(cidForm(A)), A)
    assert.throws(() => canonicalPeerId('x'), InvalidPeerIdError)
  })
})

describe('files', () => {
  let dir: string
  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'peerup-test-'))
  })
  after(async () => {
    await fs.rm(dir, { recursive: true, force: true })
  })
  let n = 0
  const fresh = async (content?: string, mode = 0o600): Promise<string> => {
    const sub = path.join(dir, `case-${n++}`)
    await fs.mkdir(sub)
    const file = path.join(sub, 'authorized_keys')
    if (content !== undefined) {
      await fs.writeFile(file, content)
      await fs.chmod(file, mode)
    }
    return file
  }
  const modeOf = async (file: string) => (await fs.stat(file)).mode & 0o777

  test('load reads and parses, naming the path in errors', async () => {
    const file = await fresh(`${A} group=x\n`)
    const doc = await loadAuthorizedKeys(file)
    assert.equal(doc.file, file)
    assert.ok(doc.isAuthorized(A))
    const bad = await fresh(`${A}\nbogus\n`)
    await assert.rejects(loadAuthorizedKeys(bad), {
      name: 'AuthorizedKeysError',
      message: new RegExp(`^${bad}:2: `),
    })
  })

  test('a missing file is a NotFoundError unless createIfMissing', async () => {
    const file = await fresh()
    const err = await loadAuthorizedKeys(file).catch((e: unknown) => e)
    assert.ok(err instanceof AuthorizedKeysMissingError)
    assert.ok(err instanceof NotFoundError)
    assert.match(err.hint ?? '', /peerup init/)
    assert.match(err.hint ?? '', /peerup auth add/)
    const doc = await loadAuthorizedKeys(file, { createIfMissing: true })
    assert.equal(doc.size, 0)
    assert.equal(await fs.stat(file).catch(() => undefined), undefined, 'loading must not create the file')
  })

  test('a group- or world-writable file is refused', { skip: !posix }, async () => {
    for (const mode of [0o620, 0o602, 0o666]) {
      const file = await fresh(`${A}\n`, mode)
      const err = await loadAuthorizedKeys(file).catch((e: unknown) => e)
      assert.ok(err instanceof FileModeError, `mode ${mode.toString(8)}: ${String(err)}`)
      assert.match(err.hint ?? '', /chmod go-w/)
      await assert.rejects(
        updateAuthorizedKeys(file, (doc) => doc.add(B)),
        FileModeError,
      )
      assert.equal(await fs.readFile(file, 'utf8'), `${A}\n`)
    }
    // Readable by others is fine for a trust file.
    assert.ok((await loadAuthorizedKeys(await fresh(`${A}\n`, 0o644))).has(A))
  })

  test('save writes 0600 atomically, leaving no temp files', { skip: !posix }, async () => {
    const file = await fresh()
    const doc = new AuthorizedKeys('', file)
    doc.add(A, { comment: 'first' })
    await saveAuthorizedKeys(file, doc)
    assert.equal(await fs.readFile(file, 'utf8'), `${A} # first\n`)
    assert.equal(await modeOf(file), 0o600)
    assert.deepEqual(await fs.readdir(path.dirname(file)), ['authorized_keys'])
  })

  const modeCases: Array<[number, number]> = [
    [0o644, 0o600],
    [0o600, 0o600],
    [0o400, 0o400],
    [0o000, 0o400],
  ]
  for (const [from, to] of modeCases) {
    test(`save over a ${from.toString(8)} file leaves it ${to.toString(8)}`, { skip: !posix }, async () => {
      const file = await fresh(`${A}\n`, from)
      const doc = new AuthorizedKeys(`${A}\n`, file)
      doc.add(B)
      await saveAuthorizedKeys(file, doc)
      assert.equal(await modeOf(file), to)
      assert.deepEqual(await fs.readdir(path.dirname(file)), ['authorized_keys'])
    })
  }

  test('save creates a missing directory', async () => {
    const file = path.join(dir, 'nested', 'deeper', 'authorized_keys')
    await saveAuthorizedKeys(file, new AuthorizedKeys(`${A}\n`))
    assert.equal(await fs.readFile(file, 'utf8'), `${A}\n`)
  })

  test('save writes through a symlink instead of replacing it', { skip: !posix }, async () => {
    const real = await fresh(`${A}\n`)
    const link = path.join(path.dirname(real), 'link')
    await fs.symlink(real, link)
    await updateAuthorizedKeys(link, (doc) => doc.add(B))
    assert.ok((await fs.lstat(link)).isSymbolicLink())
    assert.equal(await fs.readFile(real, 'utf8'), `${A}\n${B}\n`)
  })

  test('update loads, mutates and saves, returning what mutate returns', async () => {
    const original = `# keep me\n${A}   group=x  # keep\n`
    const file = await fresh(original)
    const added = await updateAuthorizedKeys(file, (doc) => doc.add(B, { comment: 'new' }))
    assert.equal(added.peerId, B)
    assert.equal(await fs.readFile(file, 'utf8'), `${original}${B} # new\n`)
    const removed = await updateAuthorizedKeys(file, async (doc) => doc.remove(B))
    assert.equal(removed.line, 3)
    assert.equal(await fs.readFile(file, 'utf8'), original)
  })

  test('update writes nothing when mutate throws', async () => {
    const file = await fresh(`${A}\n`)
    await assert.rejects(
      updateAuthorizedKeys(file, (doc) => {
        doc.add(B)
        doc.add(A)
      }),
      DuplicatePeerError,
    )
    assert.equal(await fs.readFile(file, 'utf8'), `${A}\n`)
    assert.deepEqual(await fs.readdir(path.dirname(file)), ['authorized_keys'])
  })

  test('update writes nothing when nothing changed', async () => {
    const file = await fresh(`${A}`)
    const before = (await fs.stat(file)).mtimeMs
    await updateAuthorizedKeys(file, (doc) => doc.isAuthorized(A))
    assert.equal(await fs.readFile(file, 'utf8'), `${A}`)
    assert.equal((await fs.stat(file)).mtimeMs, before)
    const missing = await fresh()
    await updateAuthorizedKeys(missing, (doc) => doc.size, { createIfMissing: true })
    assert.equal(await fs.stat(missing).catch(() => undefined), undefined)
  })

  test('update with createIfMissing creates the file', { skip: !posix }, async () => {
    const file = await fresh()
    await updateAuthorizedKeys(file, (doc) => doc.add(A), { createIfMissing: true })
    assert.equal(await fs.readFile(file, 'utf8'), `${A}\n`)
    assert.equal(await modeOf(file), 0o600)
    await assert.rejects(
      updateAuthorizedKeys(await fresh(), (doc) => doc.add(A)),
      AuthorizedKeysMissingError,
    )
  })

  test('update refuses to overwrite a change made on disk meanwhile', async () => {
    const file = await fresh(`${A}\n`)
    const err = await updateAuthorizedKeys(file, async (doc) => {
      doc.add(B)
      await fs.writeFile(file, `${A}\n${C}\n`)
    }).catch((e: unknown) => e)
    assert.ok(err instanceof AuthorizedKeysChangedError)
    assert.ok(err instanceof ConflictError)
    assert.equal(await fs.readFile(file, 'utf8'), `${A}\n${C}\n`)
  })
})
