/**
 * Build information. `npm run build` replaces the `__PEERUP_*__` identifiers with the version, the
 * git commit and the build date; running from source they fall back to the package version and "dev".
 *
 * @packageDocumentation
 */

declare const __PEERUP_VERSION__: string | undefined
declare const __PEERUP_COMMIT__: string | undefined
declare const __PEERUP_BUILD_DATE__: string | undefined

// Kept in step with package.json by a unit test; the build embeds package.json's value.
const SOURCE_VERSION = '0.1.0'

/** The version string peerup reports and sends in identify (`peerup/<version>`). */
export const VERSION: string = typeof __PEERUP_VERSION__ === 'string' ? __PEERUP_VERSION__ : SOURCE_VERSION

/** The version, commit and build date of this executable, and the runtime it runs on. */
export function buildInfo() {
  return {
    version: VERSION,
    commit: typeof __PEERUP_COMMIT__ === 'string' ? __PEERUP_COMMIT__ : 'dev',
    buildDate: typeof __PEERUP_BUILD_DATE__ === 'string' ? __PEERUP_BUILD_DATE__ : 'unknown',
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
  }
}
