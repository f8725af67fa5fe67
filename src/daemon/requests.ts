/**
 * What the daemon's API accepts, checked before a handler acts: the request bodies as zod schemas,
 * and the names in them and in URLs held to the rule config.yaml holds them to
 * (`NAME_PATTERN`/`SERVICE_NAME_PATTERN` of src/config/schema.ts), refused with the config's own
 * words. So `POST /v1/expose` cannot offer a service config.yaml could never hold (`../../x`, a
 * name with a newline in it, a protocol id with slashes), and a name never reaches a look-up it
 * was not meant for.
 *
 * @packageDocumentation
 */

import { z } from 'zod'
import { NAME_PATTERN, nodeConfigSchema, peerIdString, SERVICE_NAME_PATTERN } from '../config/schema.ts'
import { ApiError } from '../util/local-api.ts'

/** Most pings one API request may ask for (a CLI wanting more streams them, `?stream=true`). */
export const MAX_API_PINGS = 1000

/** Longest invite an API client may open, and longest ping deadline. */
const DAY_MS = 86_400_000

/** Most peers one exposed service may list. */
const MAX_ALLOWED_PEERS = 1000

/**
 * Longest peer id looked at (the longest real ones, CIDs of a key, are about 65 characters):
 * decoding base58 takes time quadratic in the length, and a 1 MiB "peer id" held the event loop
 * for minutes.
 */
const MAX_PEER_ID_LENGTH = 128

/**
 * What config.yaml says of a key it refuses under `section:`. schema.ts keeps its words private,
 * so they are read from its schema, once: the API then says exactly what the config would.
 */
function configKeyMessage(section: 'names' | 'services'): string {
  // The empty string is no name: every rule refuses it.
  const issue = nodeConfigSchema.shape[section].safeParse({ '': null }).error?.issues[0]
  const inner = issue?.code === 'invalid_key' ? issue.issues[0]?.message : undefined
  return inner ?? `not a valid key of ${section}: in config.yaml`
}

const PEER_NAME_MESSAGE = configKeyMessage('names')
const SERVICE_NAME_MESSAGE = configKeyMessage('services')

/** A value quoted for a message: short, one line, whatever the client sent. */
function quote(value: string): string {
  return JSON.stringify(value.length > 64 ? `${value.slice(0, 64)}…` : value)
}

/** `z.string()` that says "is required" when the field is missing and "must be …" when it is something else. */
const text = (what: string) =>
  z.string({ error: (i) => (i.input === undefined ? `is required (${what})` : `must be ${what}`) })

/** A name for a peer, as under `names:`. */
export const peerName = text('a name').check((ctx) => {
  if (!NAME_PATTERN.test(ctx.value)) {
    ctx.issues.push({
      code: 'custom',
      input: ctx.value,
      message: `invalid name ${quote(ctx.value)}: ${PEER_NAME_MESSAGE}`,
    })
  }
})

/** A service's name, as under `services:`. */
export const serviceName = text('a service name').check((ctx) => {
  if (!SERVICE_NAME_PATTERN.test(ctx.value)) {
    ctx.issues.push({
      code: 'custom',
      input: ctx.value,
      message: `invalid service name ${quote(ctx.value)}: ${SERVICE_NAME_MESSAGE}`,
    })
  }
})

/** A peer: a name from `names:` or a peer id (what `allowed_peers:` takes). */
export const peerRef = text('a peer id or a name').check((ctx) => {
  const id = (): boolean =>
    ctx.value.length <= MAX_PEER_ID_LENGTH && peerIdString.safeParse(ctx.value).success
  if (!NAME_PATTERN.test(ctx.value) && !id()) {
    ctx.issues.push({
      code: 'custom',
      input: ctx.value,
      message: `${quote(ctx.value)} is neither a peer id nor a name (${PEER_NAME_MESSAGE})`,
    })
  }
})

/** A whole number of at most `max`. */
const count = (max: number, min = 0) =>
  z
    .number({ error: `must be a whole number from ${min} to ${max}` })
    .int({ error: `must be a whole number from ${min} to ${max}` })
    .min(min, { error: `must be a whole number from ${min} to ${max}` })
    .max(max, { error: `must be a whole number from ${min} to ${max}` })

const flag = z.boolean({ error: 'must be true or false' })

/** `POST /v1/auth` */
export const authAddBody = z.object({
  peer: peerRef,
  comment: text('text').optional(),
  name: peerName.optional(),
})

/** `POST /v1/ping` */
export const pingBody = z.object({
  peer: peerRef,
  count: count(MAX_API_PINGS).optional(),
  intervalMs: count(60_000).optional(),
  untilDirect: flag.optional(),
  deadlineMs: count(DAY_MS).optional(),
})

/** `POST /v1/traceroute` */
export const tracerouteBody = z.object({ peer: peerRef })

/** `POST /v1/connect` */
export const connectBody = z.object({
  peer: peerRef,
  service: serviceName,
  listen: text('[host:]port'),
})

/** `POST /v1/expose` */
export const exposeBody = z.object({
  name: serviceName,
  localAddress: text('host:port'),
  allowedPeers: z
    .array(peerRef, { error: 'must be a list of peer ids or names' })
    .max(MAX_ALLOWED_PEERS, { error: `must list at most ${MAX_ALLOWED_PEERS} peers` })
    .optional(),
})

/** `POST /v1/invite` */
export const inviteBody = z.object({
  ttlMs: z
    .number({ error: `is required: how long the code stays valid, in ms (1000 to ${DAY_MS})` })
    .int({ error: `must be a whole number of ms from 1000 to ${DAY_MS}` })
    .min(1000, { error: `must be a whole number of ms from 1000 to ${DAY_MS}` })
    .max(DAY_MS, { error: `must be a whole number of ms from 1000 to ${DAY_MS}` }),
  name: peerName.optional(),
})

/** The first problem zod found, as a 400 that names the field (`allowedPeers[2]: …`). */
function refusal(error: z.ZodError): ApiError {
  const issue = error.issues[0]
  if (issue === undefined || issue.path.length === 0) {
    return new ApiError(400, 'the request body must be a JSON object')
  }
  const field = issue.path
    .map((p, i) => (typeof p === 'number' ? `[${p}]` : `${i === 0 ? '' : '.'}${String(p)}`))
    .join('')
  return new ApiError(400, `${field}: ${issue.message}`)
}

/** Parses a request body (none is `{}`) or throws a 400 that says what is wrong with it. */
export function parseBody<T extends z.ZodType>(schema: T, body: unknown): z.output<T> {
  const result = schema.safeParse(body ?? {})
  if (!result.success) {
    throw refusal(result.error)
  }
  return result.data
}

/** Checks one value from a URL (a path parameter, a query parameter) or throws a 400. */
export function parseParam<T extends z.ZodType>(schema: T, field: string, value: unknown): z.output<T> {
  const result = schema.safeParse(value)
  if (!result.success) {
    throw new ApiError(400, `${field}: ${result.error.issues[0]?.message ?? 'invalid'}`)
  }
  return result.data
}
