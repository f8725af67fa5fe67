/**
 * The targets of docs/benchmarks.md, checked against one run's figures: every comparison is a ratio (or a
 * difference) of two figures measured in the same run on the same lab.
 *
 * @packageDocumentation
 */

import type { Settings } from './context.ts'
import { fmt, type Results } from './results.ts'

function pct(x: number): string {
  return `${(x * 100).toFixed(0)} %`
}

/** Adds one check per target to `results`. */
export function checkTargets(results: Results, settings: Settings, quick: boolean): void {
  const med = (id: string): number | undefined => results.get(id)?.median
  const na = (what: string, target: string, why: string): void =>
    results.check({ what, target, measured: 'not measured', met: undefined, margin: why })

  const ratio = (what: string, target: string, id: string, baseline: string, baselineName: string): void => {
    const x = med(id)
    const y = med(baseline)
    if (x === undefined || y === undefined) {
      na(what, target, `missing ${x === undefined ? id : baseline}`)
      return
    }
    const r = x / y
    results.check({
      what,
      target,
      measured: `${fmt(x)} vs ${fmt(y)} MB/s (${baselineName}) = ${r.toFixed(2)}×`,
      met: r >= 1,
      margin:
        r >= 1
          ? `${pct(r - 1)} above`
          : `missed by ${pct(1 - r)}: needs ${(1 / r).toFixed(2)}× the throughput`,
    })
  }
  ratio(
    'relayed proxy throughput',
    '≥ 1.0× ssh -R + ssh -L through the relay host',
    'throughput.peerup-relayed',
    'throughput.ssh-relayed',
    'ssh -R + ssh -L',
  )
  ratio(
    'direct proxy throughput',
    '≥ 1.0× one ssh -L on the same path',
    'throughput.peerup-direct',
    'throughput.ssh-direct',
    'ssh -L',
  )

  const relayCpu = med('relayhost.peerup-relayed')
  const sshdCpu = med('relayhost.ssh-relayed')
  if (relayCpu === undefined || sshdCpu === undefined) {
    na(
      'relay CPU per MB on the relay host',
      "< sshd's for the ssh -R + ssh -L tunnels",
      `missing ${relayCpu === undefined ? 'relayhost.peerup-relayed' : 'relayhost.ssh-relayed'}`,
    )
  } else {
    const r = relayCpu / sshdCpu
    results.check({
      what: 'relay CPU per MB on the relay host',
      target: "< sshd's for the ssh -R + ssh -L tunnels",
      measured: `${fmt(relayCpu)} vs ${fmt(sshdCpu)} ms/MB (sshd) = ${r.toFixed(2)}×`,
      met: r < 1,
      margin: r < 1 ? `${pct(1 - r)} below` : `missed by ${pct(r - 1)}`,
    })
  }

  const webrtc = med('throughput.peerup-direct-webrtc')
  if (webrtc === undefined) {
    na('direct throughput over WebRTC (the fallback)', '≥ 60 MB/s', 'missing throughput.peerup-direct-webrtc')
  } else {
    results.check({
      what: 'direct throughput over WebRTC (the fallback)',
      target: '≥ 60 MB/s',
      measured: `${fmt(webrtc)} MB/s (peerup proxy --no-daemon, punch off)`,
      met: webrtc >= 60,
      margin: webrtc >= 60 ? `${fmt(webrtc - 60)} MB/s to spare` : `missed by ${fmt(60 - webrtc)} MB/s`,
    })
  }

  const cost = results.get('sessions.cost.ratio')
  const withSessions = med('sessions.cost.session')
  const plain = med('sessions.cost.plain')
  if (cost === undefined || withSessions === undefined || plain === undefined) {
    na(
      'cost of resumable sessions on relayed throughput via the daemon',
      '≥ 0.95× plain streams',
      'missing sessions.cost figures',
    )
  } else {
    const r = cost.median
    const pct1 = (x: number): string => `${(x * 100).toFixed(1)} %`
    results.check({
      what: 'cost of resumable sessions on relayed throughput via the daemon',
      target: '≥ 0.95× plain streams (same build, PEERUP_SESSIONS=off), within 5 %',
      measured: `median of ${cost.values.length} pair ratios ${r.toFixed(3)}× (${fmt(cost.min)}–${fmt(cost.max)}); medians ${fmt(withSessions)} vs ${fmt(plain)} MB/s`,
      met: r >= 0.95,
      margin:
        r >= 1
          ? 'no cost measured'
          : r >= 0.95
            ? `costs ${pct1(1 - r)}`
            : `costs ${pct1(1 - r)}: missed by ${pct1(0.95 - r)}`,
    })
  }

  for (const path of ['direct', 'relayed']) {
    const gateway = results.get(`gateway.${path}.ratio`)
    const what = `SOCKS5 gateway throughput, ${path}`
    if (gateway === undefined) {
      na(what, '≥ 0.95× peerup proxy on the same path', `missing gateway.${path}.ratio`)
      continue
    }
    const r = gateway.median
    results.check({
      what,
      target: '≥ 0.95× peerup proxy (via daemon) on the same path, within 5 %',
      measured: `median of ${gateway.values.length} pair ratios ${r.toFixed(3)}× (${fmt(gateway.min)}–${fmt(gateway.max)}); medians ${fmt(med(`gateway.${path}.socks`) ?? Number.NaN)} vs ${fmt(med(`gateway.${path}.proxy`) ?? Number.NaN)} MB/s`,
      met: r >= 0.95,
      margin:
        r >= 1
          ? 'no cost measured'
          : `${r >= 0.95 ? 'costs' : 'missed: costs'} ${((1 - r) * 100).toFixed(1)} %`,
    })
  }

  const added = (what: string, limitMs: number, id: string, raw: string): void => {
    const x = med(id)
    const y = med(raw)
    if (x === undefined || y === undefined) {
      na(what, `≤ ${limitMs} ms`, `missing ${x === undefined ? id : raw}`)
      return
    }
    const d = x - y
    results.check({
      what,
      target: `≤ ${limitMs} ms above raw TCP`,
      measured: `p50 ${fmt(x)} ms vs raw ${fmt(y)} ms: +${fmt(d)} ms`,
      met: d <= limitMs,
      margin: d <= limitMs ? `${fmt(limitMs - d)} ms to spare` : `missed by ${fmt(d - limitMs)} ms`,
    })
  }
  added('added latency p50, direct', 1, 'latency.peerup-direct.p50', 'latency.raw-direct.p50')
  added('added latency p50, relayed', 2, 'latency.peerup-relayed.p50', 'latency.raw-relayed.p50')

  const ttfb = med('ttfb.peerup-relayed-stdio')
  if (ttfb === undefined) {
    na('TTFB of peerup ssh via the relay, daemon running', '≤ 1 s', 'missing ttfb.peerup-relayed-stdio')
  } else {
    results.check({
      what: 'TTFB of peerup ssh via the relay, daemon running',
      target: '≤ 1000 ms',
      measured: `${fmt(ttfb)} ms (proxy --stdio start → SSH banner)`,
      met: ttfb <= 1000,
      margin: ttfb <= 1000 ? `${fmt(1000 - ttfb)} ms to spare` : `missed by ${fmt(ttfb - 1000)} ms`,
    })
  }

  const peak = med('memory.relay.peak')
  const idle = med('memory.relay.idle')
  const after = med('memory.relay.after')
  const gib = (settings.relayGiBBytes / 2 ** 30).toFixed(2).replace(/\.00$/, '')
  if (peak === undefined || idle === undefined || after === undefined) {
    na('relay RSS while relaying 1 GiB', '≤ 150 MB, back to idle', 'missing relay memory figures')
  } else {
    const back = after - idle <= Math.max(10, idle * 0.1)
    results.check({
      what: `relay RSS while relaying ${gib} GiB`,
      target: '≤ 150 MB, back to idle after (within 10 MB or 10 %)',
      measured: `peak ${fmt(peak)} MB; idle ${fmt(idle)} MB before, ${fmt(after)} MB after${med('memory.relay.peak2') === undefined ? '' : `; a second ${gib} GiB: peak ${fmt(med('memory.relay.peak2') as number)} MB, ${fmt(med('memory.relay.after2') as number)} MB after`}`,
      met: quick ? undefined : peak <= 150 && back,
      margin: `${peak <= 150 ? `${fmt(150 - peak)} MB under the cap` : `${fmt(peak - 150)} MB over the cap`}; ${back ? 'back to idle' : `${fmt(after - idle)} MB above idle after`}${quick ? ` (only ${gib} GiB in --quick)` : ''}`,
    })
  }

  // RSS ≤ 100 MB, or — where the executable's file-backed pages (clean, shared, droppable) are the
  // remainder — anonymous memory ≤ 60 MB; each daemon must meet one of the two (ADR 0018).
  const daemons = ['daemon-b', 'daemon-a', 'daemon-a2']
    .map((id) => ({
      name: id.split('-').at(-1),
      rss: med(`memory.idle.${id}`),
      anon: med(`memory.idle-anon.${id}`),
    }))
    .filter((d): d is { name: string; rss: number; anon: number | undefined } => d.rss !== undefined)
  const idleTarget = '≤ 100 MB, or anonymous memory ≤ 60 MB where file-backed pages are the remainder'
  if (daemons.length === 0) {
    na('daemon idle RSS', idleTarget, 'missing')
  } else {
    const worst = Math.max(...daemons.map((d) => d.rss))
    const anons = daemons.map((d) => d.anon).filter((a): a is number => a !== undefined)
    const worstAnon = anons.length === daemons.length ? Math.max(...anons) : undefined
    const rssMet = worst <= 100
    const anonMet = worstAnon !== undefined && daemons.every((d) => d.rss <= 100 || (d.anon as number) <= 60)
    results.check({
      what: 'daemon idle RSS',
      target: idleTarget,
      measured: daemons
        .map((d) => `${d.name} ${fmt(d.rss)} MB${d.anon === undefined ? '' : ` (${fmt(d.anon)} anonymous)`}`)
        .join(', '),
      met: rssMet || anonMet,
      margin: rssMet
        ? `${fmt(100 - worst)} MB to spare (largest)`
        : worstAnon === undefined
          ? `missed by ${fmt(worst - 100)} MB (largest); anonymous memory not measured`
          : anonMet
            ? `RSS over 100 MB by ${fmt(worst - 100)} MB (largest), file-backed pages of the executable; anonymous ${fmt(60 - worstAnon)} MB under 60 (largest)`
            : `missed: RSS by ${fmt(worst - 100)} MB, anonymous by ${fmt(worstAnon - 60)} MB (largest)`,
    })
  }

  const status = med('cli.daemon-status')
  if (status === undefined) {
    na('peerup daemon status wall time', '≤ 150 ms', 'missing')
  } else {
    results.check({
      what: 'peerup daemon status wall time',
      target: '≤ 150 ms',
      measured: `${fmt(status)} ms`,
      met: status <= 150,
      margin: status <= 150 ? `${fmt(150 - status)} ms to spare` : `missed by ${fmt(status - 150)} ms`,
    })
  }

  const reservations = med('capacity.reservations')
  const circuits = med('capacity.circuits')
  if (reservations === undefined || circuits === undefined) {
    na('relay scale on a 2-core box', '≥ 1,000 reservations and ≥ 200 circuits, no failures', 'missing')
  } else {
    const ok = reservations >= 1000 && circuits >= 200
    const small = settings.capacityReservations < 1000 || settings.capacityCircuits < 200
    results.check({
      what: 'relay scale on a 2-core box',
      target: '≥ 1,000 reservations and ≥ 200 concurrent circuits, no failures',
      measured: `${reservations} reservations, ${circuits} circuits before the first failure or the ceiling (${settings.capacityReservations}/${settings.capacityCircuits})`,
      met: small && !ok ? undefined : ok,
      margin: small
        ? `ceilings below the target in --quick`
        : ok
          ? 'both reached with no failure'
          : `reservations ${reservations >= 1000 ? 'ok' : `short by ${1000 - reservations}`}, circuits ${circuits >= 200 ? 'ok' : `short by ${200 - circuits}`}`,
    })
  }
}
