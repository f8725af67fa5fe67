/**
 * Errors of the native-addon layer: unpacking the embedded `.node` file, loading it, and the WebRTC
 * selftest built on it.
 *
 * @packageDocumentation
 */

import { PeerupError } from '../errors.ts'

/** An embedded addon was asked for outside a single executable, or the executable lacks it. */
export class AddonNotEmbeddedError extends PeerupError {
  override name = 'AddonNotEmbeddedError'
}

/** A directory meant to hold unpacked addons is not private to the current user. */
export class UnsafeCacheDirError extends PeerupError {
  override name = 'UnsafeCacheDirError'
}

/** No candidate directory could hold the unpacked addon, or loading it failed. */
export class AddonLoadError extends PeerupError {
  override name = 'AddonLoadError'
}

/** The WebRTC selftest did not produce a local offer in time. */
export class DatachannelSelftestError extends PeerupError {
  override name = 'DatachannelSelftestError'
}
