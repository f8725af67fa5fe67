/**
 * The short invite code (docs/pairing.md, docs/decisions/0013-short-codes-cpace.md): what a person
 * types, `7-acorn-zebra`. The number is a nameplate the inviter's relay handed out for the code's
 * lifetime (it finds the inviter); the two words, from the EFF short word list (src/invite/words.ts),
 * are the password of a CPace run (src/invite/cpace.ts), so they are never sent and cannot be
 * tested offline. The relay is not in the code: the joiner names it, or already uses it.
 *
 * This module imports nothing heavy: the CLI loads it statically.
 *
 * @packageDocumentation
 */

import { createHash, randomInt } from 'node:crypto'
import { CodeTypoError, MalformedCodeError } from './errors.ts'
import { SHORT_CODE_WORDS } from './words.ts'

/** Words in a short code: 2 × log2(1295) ≈ 20.7 bits. */
export const SHORT_CODE_WORD_COUNT = 2

/** The largest nameplate a relay hands out. */
export const MAX_NAMEPLATE = 999

/**
 * Wrong tries after which a short code is burned: 3 guesses of ~20.7 bits, so one code falls to
 * an online guesser with a chance of 3 in 1.68 million.
 */
export const MAX_SHORT_CODE_FAILURES = 3

/** A short code, parsed. The words are the secret: never log them, never put them in an error. */
export interface ShortCode {
  nameplate: number
  words: string[]
}

const WORDS = new Set(SHORT_CODE_WORDS)
const SHAPE = /^(\d{1,3})((?:-[a-z]+)+)$/
const HINT = 'type it as `peerup invite` printed it: a number and two words, like 12-lemon-ozone'

/** Fresh random words for a short code. */
export function createShortWords(): string[] {
  return Array.from(
    { length: SHORT_CODE_WORD_COUNT },
    () => SHORT_CODE_WORDS[randomInt(SHORT_CODE_WORDS.length)] as string,
  )
}

/** `7-acorn-zebra`. */
export function formatShortCode(code: ShortCode): string {
  return [String(code.nameplate), ...code.words].join('-')
}

/**
 * Whether `text` is meant as a short code rather than a long one: it starts with 1 to 3 digits and a
 * separator. A long code's first group always has 4 characters, so the two never meet.
 */
export function looksLikeShortCode(text: string): boolean {
  return /^\s*\d{1,3}[\s-]+[a-z]/i.test(text)
}

/**
 * Reads a short code as a person typed it: any case, dashes or spaces between the parts. Throws
 * {@link MalformedCodeError} when it has the wrong shape and {@link CodeTypoError} when a word is
 * not in the list; neither message repeats a word, since the words are the secret.
 */
export function parseShortCode(text: string): ShortCode {
  const normalised = text
    .trim()
    .toLowerCase()
    .replace(/[\s-]+/g, '-')
  const m = SHAPE.exec(normalised)
  if (m === null) {
    throw new MalformedCodeError('that is not a short pairing code', { hint: HINT })
  }
  const nameplate = Number(m[1])
  const words = (m[2] as string).slice(1).split('-')
  if (nameplate < 1 || nameplate > MAX_NAMEPLATE) {
    throw new MalformedCodeError(`a short code starts with a number from 1 to ${MAX_NAMEPLATE}`, {
      hint: HINT,
    })
  }
  if (words.length !== SHORT_CODE_WORD_COUNT) {
    throw new MalformedCodeError(
      `a short code has ${SHORT_CODE_WORD_COUNT} words after its number, this one has ${words.length}`,
      { hint: HINT },
    )
  }
  for (const [i, word] of words.entries()) {
    if (!WORDS.has(word)) {
      const near = nearWords(word)
      throw new CodeTypoError(
        near === 1
          ? `word ${i + 1} of the short code is not in the word list: a typo? It is one letter off a word of the list — did you mean that one?`
          : `word ${i + 1} of the short code is not a word of the list`,
        {
          hint: 'compare it with what `peerup invite` printed, letter by letter (the words are not repeated here: they are the secret)',
        },
      )
    }
  }
  return { nameplate, words }
}

/**
 * The password of the CPace run (its PRS): the words, lowercase, joined by dashes. The nameplate
 * is not secret and goes into the channel identifier instead (src/invite/protocol.ts).
 */
export function shortCodePassword(code: ShortCode): Uint8Array {
  return new TextEncoder().encode(code.words.join('-'))
}

/**
 * The code id a short code's hello names (src/invite/protocol.ts): public, derived from the
 * nameplate alone, so that it says "the short code" without revealing anything.
 */
export function shortCodeId(nameplate: number): string {
  return createHash('sha256').update(`peerup short code v1\n${nameplate}`).digest('hex').slice(0, 16)
}

/** How many words of the list are one edit (change, insertion, deletion, swap of neighbours) away. */
function nearWords(word: string): number {
  let n = 0
  for (const w of SHORT_CODE_WORDS) {
    if (oneEditApart(word, w)) n++
  }
  return n
}

function oneEditApart(a: string, b: string): boolean {
  if (a === b || Math.abs(a.length - b.length) > 1) {
    return false
  }
  if (a.length === b.length) {
    const diff = [...a].flatMap((c, i) => (c === b[i] ? [] : [i]))
    if (diff.length === 1) return true
    const [i, j] = diff as [number, number]
    return diff.length === 2 && j === i + 1 && a[i] === b[j] && a[j] === b[i]
  }
  const [short, long] = a.length < b.length ? [a, b] : [b, a]
  for (let i = 0; i < long.length; i++) {
    if (long.slice(0, i) + long.slice(i + 1) === short) return true
  }
  return false
}
