/**
 * The daemon's wire contract: every route under `/v1/` on `peerup.sock` (routes.ts), the schemas
 * of what each takes and answers (schemas.ts), what a name is (names.ts) and how the values read
 * as text (text.ts). Answers are `{"data": …}` or `{"error": "…", "hint": "…", "name": "…"}`;
 * statuses: 400 bad request, 401 no or wrong cookie, 403 browser headers, 404 unknown
 * route/peer/service/proxy, 409 conflict, 413 body too large, 502 peer unreachable.
 *
 * This folder imports nothing else of ours (the linter checks it): changing the contract is a
 * change here.
 *
 * @packageDocumentation
 */

export * from './connections.ts'
export * from './names.ts'
export * from './routes.ts'
export * from './schemas.ts'
export * from './text.ts'
