// The dashboard's script (src/daemon/ui.ts serves it): a client of the daemon's own API under /v1/
// on this origin, authenticated by the HttpOnly session cookie the login set. It writes the page
// with textContent only (no HTML from data), and polls connections every second for byte rates
// while the events stream says what changed.

import { encode } from './uqr.mjs'

/** How often sessions and their byte rates are asked for. */
const CONNECTIONS_INTERVAL_MS = 1000
/** How often peers, paths, services and relays are asked for besides the events that say so. */
const STATE_INTERVAL_MS = 5000
/** Events shown, newest first. */
const MAX_EVENTS = 50
/** How long an invite made here stays valid. */
const INVITE_TTL_MS = 10 * 60 * 1000

const $ = (id) => document.getElementById(id)

/** An element with `text` and attributes. */
function el(tag, text, attrs = {}) {
  const e = document.createElement(tag)
  if (text !== undefined) {
    e.textContent = text
  }
  for (const [k, v] of Object.entries(attrs)) {
    e.setAttribute(k, v)
  }
  return e
}

class NotLoggedIn extends Error {}

/** A call of the daemon's API; throws with the daemon's message (and hint). */
async function api(method, path, body, signal) {
  const res = await fetch(path, {
    method,
    credentials: 'same-origin',
    cache: 'no-store',
    headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
  })
  if (res.status === 401) {
    throw new NotLoggedIn('not logged in')
  }
  if (!res.ok) {
    const err = await res.json().catch(() => ({}))
    throw new Error(`${err.error ?? `${res.status} ${res.statusText}`}${err.hint ? ` — ${err.hint}` : ''}`)
  }
  return res
}

const getData = async (path) => (await (await api('GET', path)).json()).data

/** The lines of an NDJSON answer, as they come. */
async function* lines(res) {
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader()
  let buffer = ''
  for (;;) {
    const { value, done } = await reader.read()
    if (done) {
      return
    }
    buffer += value
    let nl = buffer.indexOf('\n')
    while (nl >= 0) {
      const line = buffer.slice(0, nl).trim()
      buffer = buffer.slice(nl + 1)
      if (line !== '') {
        yield JSON.parse(line)
      }
      nl = buffer.indexOf('\n')
    }
  }
}

function showProblem(message) {
  const p = $('problem')
  p.textContent = message
  p.hidden = message === ''
}

function failed(err) {
  if (err instanceof NotLoggedIn) {
    showProblem('Not logged in (or the daemon restarted). Run `peerup ui` and open the link it prints.')
    setLive(false)
    return
  }
  showProblem(err.message)
}

function setLive(live) {
  const b = $('live')
  b.textContent = live ? 'live' : 'offline'
  b.className = `badge ${live ? 'on' : 'bad'}`
}

const KiB = 1024
function bytes(n) {
  if (n < KiB) {
    return `${n} B`
  }
  const units = ['KiB', 'MiB', 'GiB', 'TiB']
  let v = n / KiB
  let i = 0
  while (v >= KiB && i < units.length - 1) {
    v /= KiB
    i++
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`
}

/** A long error message cut for the events list (the peers table has it whole). */
const clip = (text) => (text.length > 100 ? `${text.slice(0, 100)}…` : text)

const shortId = (id) => (id.length > 16 ? `${id.slice(0, 8)}…${id.slice(-6)}` : id)

/** `DIRECT (tcp)`, `RELAYED via 12D3…abc (tcp)`. */
function pathLabel(path) {
  if (path === undefined) {
    return 'not connected'
  }
  return path.type === 'RELAYED'
    ? `RELAYED via ${shortId(path.relay ?? '?')} (${path.transport})`
    : `DIRECT (${path.transport})`
}

function pathBadge(path) {
  const cls = path === undefined ? 'none' : path.type.toLowerCase()
  return el('span', pathLabel(path), { class: `badge ${cls}` })
}

/** Why a peer's path is what it is, from its upgrade state: a short line, and the detail. */
function why(state) {
  if (state === undefined || state.path === undefined) {
    return ['no open connection']
  }
  const u = state.upgrade
  if (state.path.type === 'DIRECT') {
    return [
      u.timeToDirectMs === undefined ? 'direct connection' : `upgraded in ${Math.round(u.timeToDirectMs)} ms`,
    ]
  }
  switch (u.state) {
    case 'upgrading':
      return ['trying a direct path…']
    case 'unavailable':
      return ['the peer offers no direct address']
    case 'failed':
      return ['direct path failed', u.lastError]
    default:
      return [state.path.limited ? 'limited relay circuit' : 'through the relay']
  }
}

/** Peers whose reason is shown open: kept across the table's refreshes. */
const openWhy = new Set()

/** A cell with the short reason, and the long one behind a disclosure (keyboard-operable). */
function whyCell(peerId, state) {
  const [short, detail] = why(state)
  const td = el('td', detail === undefined ? short : undefined, { class: 'why' })
  if (detail !== undefined) {
    const details = el('details')
    details.open = openWhy.has(peerId)
    details.addEventListener('toggle', () => (details.open ? openWhy.add(peerId) : openWhy.delete(peerId)))
    details.append(el('summary', short), el('p', detail, { class: 'muted' }))
    td.append(details)
  }
  return td
}

// ---- state ----

const rtts = new Map()
let me = ''

async function refreshState() {
  const [status, auth, paths] = await Promise.all([
    getData('/v1/status'),
    getData('/v1/auth'),
    getData('/v1/paths'),
  ])
  me = status.peerId
  $('me').textContent = `${status.peerId} · peerup ${status.version}`
  renderPeers(auth, paths)
  renderServices(status.services)
  renderRelays(status.relays)
  showProblem('')
}

function renderPeers(auth, paths) {
  const byId = new Map(paths.map((p) => [p.peerId, p]))
  const body = $('peers').tBodies[0]
  body.replaceChildren()
  if (auth.length === 0) {
    const td = el('td', 'No peers yet: invite a machine.', { colspan: '5', class: 'muted' })
    body.append(el('tr')).append(td)
    return
  }
  for (const peer of auth) {
    const state = byId.get(peer.peerId)
    const tr = el('tr', undefined, {
      'data-peer': peer.peerId,
      'data-path': state?.path?.type ?? 'NONE',
    })
    const who = el('td')
    who.append(el('div', peer.name ?? '(no name)'), el('div', peer.peerId, { class: 'id muted' }))
    const rtt = rtts.get(peer.peerId)
    const revoke = el('button', 'Revoke', {
      type: 'button',
      class: 'danger',
      'data-revoke': peer.peerId,
      'aria-label': `Revoke ${peer.name ?? peer.peerId}`,
    })
    revoke.addEventListener('click', () => askRevoke(peer))
    const actions = el('td')
    actions.append(revoke)
    const pathCell = el('td')
    pathCell.append(pathBadge(state?.path))
    tr.append(
      who,
      pathCell,
      whyCell(peer.peerId, state),
      el('td', rtt === undefined ? '–' : `${rtt.toFixed(1)} ms`, { class: 'num' }),
      actions,
    )
    body.append(tr)
  }
}

function renderServices(services) {
  const ul = $('services')
  ul.replaceChildren()
  if (services.length === 0) {
    ul.append(el('li', 'This machine offers no services.', { class: 'muted' }))
  }
  for (const s of services) {
    const li = el('li')
    const who = s.allowedPeers.length === 0 ? 'every authorized peer' : s.allowedPeers.join(', ')
    li.append(
      el('strong', s.name),
      document.createTextNode(` → ${s.localAddress} · ${s.activeConnections} open · for ${who}`),
    )
    ul.append(li)
  }
}

function renderRelays(relays) {
  const ul = $('relays')
  ul.replaceChildren()
  if (relays.length === 0) {
    ul.append(el('li', 'No relays configured.', { class: 'muted' }))
  }
  for (const r of relays) {
    const li = el('li', undefined, { 'data-relay': r.peerId })
    const state = r.reserved ? 'reserved' : r.connected ? 'connected, no reservation' : 'not connected'
    li.append(
      el('span', state, { class: `badge ${r.reserved ? 'on' : 'off'}` }),
      document.createTextNode(' '),
      el('span', shortId(r.peerId), { class: 'id', title: r.peerId }),
    )
    if (r.reason) {
      li.append(el('div', r.reason, { class: 'muted' }))
    }
    ul.append(li)
  }
}

async function refreshConnections() {
  const data = await getData('/v1/connections')
  const body = $('sessions').tBodies[0]
  body.replaceChildren()
  if (data.open.length === 0) {
    body.append(el('tr')).append(el('td', 'No sessions open.', { colspan: '7', class: 'muted' }))
  }
  for (const c of data.open) {
    const tr = el('tr', undefined, {
      'data-id': String(c.id),
      'data-peer': c.peerId,
      'data-bytes': String(c.bytesIn + c.bytesOut),
    })
    const pathCell = el('td')
    pathCell.append(pathBadge(c.path))
    tr.append(
      el('td', c.name ?? shortId(c.peerId)),
      el('td', c.service),
      el('td', c.side),
      pathCell,
      el('td', bytes(c.bytesIn), { class: 'num' }),
      el('td', bytes(c.bytesOut), { class: 'num' }),
      el('td', `${bytes(c.bytesInPerSecond)}/s / ${bytes(c.bytesOutPerSecond)}/s`, { class: 'num' }),
    )
    body.append(tr)
  }
}

/** The round trip to each connected peer, one ping each, one peer at a time. */
async function refreshRtts() {
  const paths = await getData('/v1/paths')
  for (const p of paths) {
    if (p.path === undefined || p.peerId === me) {
      rtts.delete(p.peerId)
      continue
    }
    const report = await (await api('POST', '/v1/ping', { peer: p.peerId, count: 1 }))
      .json()
      .then((r) => r.data)
      .catch(() => undefined)
    if (report?.avgMs !== undefined) {
      rtts.set(p.peerId, report.avgMs)
    }
  }
}

// ---- events ----

function eventText(e) {
  const who = e.name ?? (e.peerId ? shortId(e.peerId) : '')
  switch (e.type) {
    case 'hello':
      return `watching daemon ${shortId(e.peerId)} (peerup ${e.version})`
    case 'peer-connected':
      return `${who} connected, ${pathLabel(e.path)}`
    case 'peer-disconnected':
      return `${who} disconnected`
    case 'path-changed':
      return `${who}: ${pathLabel(e.from)} → ${pathLabel(e.to)}`
    case 'upgrade':
      return `${who}: direct upgrade ${e.outcome}${e.error ? ` (${clip(e.error)})` : ''}`
    case 'reservation':
      return `relay ${shortId(e.relay)}: reservation ${e.reserved ? 'gained' : 'lost'}`
    case 'auth-changed':
      return `authorized_keys: ${e.added.length} added, ${e.removed.length} removed`
    case 'config':
      return `config ${e.action}${e.restartNeeded.length > 0 ? ` (restart needed: ${e.restartNeeded.join(', ')})` : ''}`
    case 'stopping':
      return 'the daemon is stopping'
    default:
      return e.type
  }
}

function addEvent(e) {
  const ol = $('events')
  const li = el('li', undefined, { 'data-type': e.type })
  const t = new Date(e.time)
  li.append(el('time', t.toLocaleTimeString(), { datetime: e.time }), document.createTextNode(eventText(e)))
  ol.prepend(li)
  while (ol.children.length > MAX_EVENTS) {
    ol.lastElementChild.remove()
  }
}

let stateTimer
/** Asks for the state again soon: several events in a row cost one refresh. */
function refreshSoon() {
  clearTimeout(stateTimer)
  stateTimer = setTimeout(() => refreshState().catch(failed), 100)
}

async function watchEvents() {
  for (;;) {
    try {
      const res = await api('GET', '/v1/events')
      setLive(true)
      for await (const e of lines(res)) {
        addEvent(e)
        if (e.type !== 'hello') {
          refreshSoon()
        }
      }
    } catch (err) {
      if (err instanceof NotLoggedIn) {
        failed(err)
        return
      }
    }
    setLive(false)
    await new Promise((resolve) => setTimeout(resolve, 2000))
  }
}

// ---- invite and revoke ----

/** The QR code of `text` as an SVG: one path of dark modules, drawn with the page's colours. */
function qrSvg(text) {
  const { data, size } = encode(text, { ecc: 'L', border: 2 })
  const ns = 'http://www.w3.org/2000/svg'
  const svg = document.createElementNS(ns, 'svg')
  svg.setAttribute('viewBox', `0 0 ${size} ${size}`)
  svg.setAttribute('shape-rendering', 'crispEdges')
  svg.setAttribute('aria-hidden', 'true')
  let d = ''
  data.forEach((row, y) => {
    row.forEach((dark, x) => {
      if (dark) {
        d += `M${x} ${y}h1v1h-1z`
      }
    })
  })
  const path = document.createElementNS(ns, 'path')
  path.setAttribute('d', d)
  path.setAttribute('fill', 'currentColor')
  svg.append(path)
  return svg
}

let inviting

async function invite() {
  inviting?.abort()
  const controller = new AbortController()
  inviting = controller
  $('invite-box').hidden = false
  $('invite-code').textContent = ''
  $('invite-qr').replaceChildren()
  $('invite-status').textContent = 'Making a code…'
  try {
    const res = await api('POST', '/v1/invite', { ttlMs: INVITE_TTL_MS }, controller.signal)
    for await (const line of lines(res)) {
      if (line.type === 'code') {
        $('invite-code').textContent = line.code
        $('invite-qr').replaceChildren(qrSvg(line.code.replaceAll('-', '')))
        $('invite-status').textContent =
          `Waiting for the other machine (until ${new Date(line.expires).toLocaleTimeString()}).`
      } else if (line.type === 'progress') {
        $('invite-status').textContent = line.message
      } else if (line.type === 'paired') {
        $('invite-status').textContent = `Paired with ${line.result.name ?? line.result.peerId}.`
        refreshSoon()
      } else if (line.type === 'error') {
        $('invite-status').textContent = `The invite failed: ${line.error}`
      }
    }
  } catch (err) {
    if (controller.signal.aborted) {
      return
    }
    $('invite-status').textContent = `The invite failed: ${err.message}`
    if (err instanceof NotLoggedIn) {
      failed(err)
    }
  }
}

function closeInvite() {
  // Closing the request cancels the invite on the daemon: its code stops working.
  inviting?.abort()
  inviting = undefined
  $('invite-box').hidden = true
  $('invite-code').textContent = ''
  $('invite-qr').replaceChildren()
  $('invite').focus()
}

function askRevoke(peer) {
  const dialog = $('revoke-dialog')
  $('revoke-name').textContent = peer.name ?? shortId(peer.peerId)
  dialog.returnValue = ''
  dialog.onclose = () => {
    if (dialog.returnValue !== 'revoke') {
      return
    }
    api('DELETE', `/v1/auth/${encodeURIComponent(peer.peerId)}`)
      .then(() => refreshState())
      .catch(failed)
  }
  dialog.showModal()
}

// ---- start ----

/** `/login#<token>`: trades the one-time token for the session cookie, then shows the dashboard. */
async function login() {
  const token = location.hash.slice(1)
  // Out of the address bar and the history at once: the token is good once anyway.
  history.replaceState(null, '', '/login')
  const res = await fetch('/login', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ token }),
    cache: 'no-store',
  })
  if (res.status !== 204) {
    showProblem('This login link is used, expired or wrong. Run `peerup ui` for a new one.')
    return false
  }
  history.replaceState(null, '', '/')
  return true
}

/** Runs `fn` every `ms` after it settles, until the session is gone (the daemon restarted). */
function every(ms, fn) {
  const run = () =>
    fn().then(
      () => setTimeout(run, ms),
      (err) => {
        failed(err)
        if (!(err instanceof NotLoggedIn)) {
          setTimeout(run, ms)
        }
      },
    )
  run()
}

async function main() {
  $('invite').addEventListener('click', () => invite())
  $('invite-cancel').addEventListener('click', () => closeInvite())
  if (location.pathname === '/login' && !(await login())) {
    return
  }
  every(CONNECTIONS_INTERVAL_MS, refreshConnections)
  every(STATE_INTERVAL_MS, refreshState)
  every(STATE_INTERVAL_MS, refreshRtts)
  watchEvents()
}

main().catch(failed)
