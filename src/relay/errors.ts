/**
 * Named errors of the relay role, each worded for the person running the relay.
 *
 * @packageDocumentation
 */

import { PeerupError } from '../errors.ts'

/** The relay could not start one of its parts (a port taken, an address that does not exist here). */
export class RelayStartError extends PeerupError {
  override name = 'RelayStartError'
}
