/**
 * A quick check that WebRTC works in this build: node-datachannel's addon loads (embedded in the
 * single executable, or from node_modules when running from source) and libdatachannel can produce a
 * local offer. Uses no ICE servers, so it never contacts the network.
 *
 * @packageDocumentation
 */

import { createRequire } from 'node:module'
import * as path from 'node:path'
import { loadedAddon } from './addon.ts'
import { DatachannelSelftestError } from './errors.ts'

/** The SEA asset name of node-datachannel's addon (build.mjs embeds it under this name). */
export const DATACHANNEL_ADDON = 'node_datachannel.node'

/** How long to wait for the offer. */
const OFFER_TIMEOUT_MS = 5000

/** What {@link datachannelSelftest} found. */
export interface SelftestResult {
  ok: true
  /** Where the addon came from: unpacked from the executable, or node_modules (running from source). */
  addon: 'embedded' | 'node_modules'
  /** The `.node` file that was loaded, when known. */
  addonPath?: string
  /** True when the embedded addon's cache file from an earlier run was reused. */
  addonReused?: boolean
  offerType: 'offer'
  /** Size of the offer's SDP (without candidates, which libdatachannel sends separately). */
  sdpBytes: number
  /** Local ICE candidates gathered (host candidates only, as no ICE servers are configured). */
  candidates?: number
  elapsedMs: number
}

// Once the offer is there, wait this much longer at most for candidate gathering to finish: the count
// is informative, the offer is what proves the library works.
const GATHERING_GRACE_MS = 1000

/**
 * Loads node-datachannel, creates a peer connection with a data channel and waits for its local
 * offer. Throws {@link DatachannelSelftestError} on timeout, the signal's reason when aborted, and the
 * loader's error when the addon cannot be loaded.
 */
export async function datachannelSelftest(options: { signal?: AbortSignal } = {}): Promise<SelftestResult> {
  const started = performance.now()
  options.signal?.throwIfAborted()
  // Imported here so that merely importing this module does not load a 9 MB library.
  const ndc = await import('node-datachannel')
  // No ICE servers: host candidates are enough to prove the stack works, and a selftest must not
  // talk to public STUN servers.
  const pc = new ndc.PeerConnection('peerup-selftest', { iceServers: [] })
  try {
    const { sdp, candidates } = await waitForOffer(pc, options.signal)
    const embedded = loadedAddon(DATACHANNEL_ADDON)
    // Undefined fields stay out of the JSON.
    return {
      ok: true,
      addon: embedded === undefined ? 'node_modules' : 'embedded',
      offerType: 'offer',
      sdpBytes: Buffer.byteLength(sdp),
      candidates,
      elapsedMs: Math.round(performance.now() - started),
      addonPath: embedded?.path ?? requiredAddonPath(),
      addonReused: embedded?.reused,
    }
  } finally {
    pc.close()
    // Joins libdatachannel's threads; without it the process lingers after the test. It closes
    // every peer connection in the process: never call this selftest inside a running daemon.
    ndc.cleanup()
  }
}

type PeerConnection = InstanceType<typeof import('node-datachannel').PeerConnection>

function waitForOffer(
  pc: PeerConnection,
  signal: AbortSignal | undefined,
): Promise<{ sdp: string; candidates: number }> {
  return new Promise((resolve, reject) => {
    let candidates = 0
    let offer: string | undefined
    let grace: NodeJS.Timeout | undefined
    const finish = (err?: unknown): void => {
      clearTimeout(timer)
      clearTimeout(grace)
      signal?.removeEventListener('abort', onAbort)
      if (err !== undefined) {
        reject(err)
      } else if (offer !== undefined) {
        resolve({ sdp: offer, candidates })
      }
    }
    const onAbort = (): void => finish(signal?.reason)
    const timer = setTimeout(() => {
      // An offer without finished gathering still counts: the deadline only bounds the wait.
      finish(
        offer === undefined
          ? new DatachannelSelftestError(`node-datachannel produced no local offer in ${OFFER_TIMEOUT_MS} ms`)
          : undefined,
      )
    }, OFFER_TIMEOUT_MS)
    signal?.addEventListener('abort', onAbort, { once: true })
    pc.onLocalCandidate(() => {
      candidates++
    })
    pc.onGatheringStateChange((state) => {
      if (state === 'complete' && offer !== undefined) {
        finish()
      }
    })
    pc.onLocalDescription((sdp, type) => {
      if (type !== 'offer') {
        finish(new DatachannelSelftestError(`node-datachannel produced a local ${type}, expected an offer`))
        return
      }
      offer = sdp
      if (pc.gatheringState() === 'complete') {
        finish()
      } else {
        grace = setTimeout(finish, GATHERING_GRACE_MS)
      }
    })
    // Creating the first data channel starts negotiation: libdatachannel then emits the offer.
    pc.createDataChannel('peerup-selftest')
  })
}

// Running from source node-datachannel require()s its platform package; the require cache then
// names the exact file that was loaded.
function requiredAddonPath(): string | undefined {
  const cache = createRequire(import.meta.url).cache
  return Object.keys(cache).find((key) => path.basename(key) === DATACHANNEL_ADDON)
}
