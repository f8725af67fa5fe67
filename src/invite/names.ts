/**
 * The name a machine goes by when it pairs: what it tells the other side for its `names:`. Light
 * (the CLI imports it statically).
 *
 * @packageDocumentation
 */

import * as os from 'node:os'
import { NAME_PATTERN } from '../config/schema.ts'

/** A name as `names:` allows, made from free text (a hostname, what a peer sent), or undefined. */
export function usableName(name: string | undefined): string | undefined {
  if (name === undefined) {
    return undefined
  }
  const cleaned = name
    .normalize('NFKD')
    .replace(/[^A-Za-z0-9._-]+/g, '-')
    .replace(/^[^A-Za-z0-9]+/, '')
    .slice(0, 63)
    .replace(/[-.]+$/, '')
  return NAME_PATTERN.test(cleaned) ? cleaned : undefined
}

/** This machine's default pairing name: the first label of its hostname, made valid. */
export function defaultMachineName(): string | undefined {
  return usableName(os.hostname().split('.')[0])
}
