/**
 * Throughput of one TCP stream through every path: the payload goes from the client host to the
 * bench server on b, which checks sampled MiBs byte for byte. Paths take turns within each run
 * (the order rotates), so slow drift of the machine hits all of them alike.
 *
 * @packageDocumentation
 */

import { type BenchContext, cpuSeconds, labCpuSeconds, runClient } from '../context.ts'
import type { Endpoint } from '../lab-setup.ts'

/** The processes that carry a path's bytes, for the CPU each one spends per transferred MB. */
function carriers(ctx: BenchContext, e: Endpoint): Array<[string, number | undefined]> {
  const { bl } = ctx
  const client = e.path === 'direct' ? bl.daemons.a : bl.daemons.a2
  const list: Array<[string, number | undefined]> = []
  if (e.id === 'peerup-direct') list.push(['proxy', bl.proxies['proxy-direct']?.pid])
  if (e.id === 'peerup-relayed') list.push(['proxy', bl.proxies['proxy-relayed']?.pid])
  if (e.id === 'peerup-relayed-nodaemon') list.push(['proxy', bl.proxies['proxy-relayed-nodaemon']?.pid])
  if (e.id === 'peerup-direct-webrtc') list.push(['proxy', bl.proxies['proxy-direct-webrtc']?.pid])
  if (e.id !== 'peerup-relayed-nodaemon' && e.id !== 'peerup-direct-webrtc') {
    list.push(['client daemon', client.pid])
  }
  if (e.path === 'relayed') list.push(['relay', bl.relay.process.pid])
  list.push(['target daemon', bl.daemons.b.pid])
  return list
}

export async function measureThroughput(ctx: BenchContext): Promise<void> {
  const { bl, settings, results, log } = ctx
  const endpoints = bl.endpoints
  const mbps = new Map<string, number[]>(endpoints.map((e) => [e.id, []]))
  const cpu = new Map<string, Map<string, number[]>>()
  const relaySeen: number[] = []
  const mb = settings.throughputBytes / 1e6
  // One untimed transfer per path first: the JIT of every process on it warms up.
  const failures = new Map<string, string[]>(endpoints.map((e) => [e.id, []]))
  const labCpu = new Map<string, number[]>(endpoints.map((e) => [e.id, []]))
  // On the relayed paths, the CPU of every process on the relay host (its namespace) per MB: the
  // peerup relay's against sshd's (the ssh -R + ssh -L tunnels) and the raw forwarder's, the cost
  // an operator pays on the VPS for the same bytes.
  const relayHostNs = [bl.relay.node.host.ns]
  const relayHostCpu = new Map<string, number[]>(endpoints.map((e) => [e.id, []]))
  for (const e of endpoints) {
    try {
      await runClient(bl, e.host, ['throughput', e.ip, e.port, 16 * 2 ** 20, 100], { timeoutMs: 300_000 })
    } catch (err) {
      failures.get(e.id)?.push(`warm-up: ${(err as Error).message}`)
    }
  }
  for (let run = 0; run < settings.runs; run++) {
    const order = endpoints.map((_, i) => endpoints[(i + run) % endpoints.length] as Endpoint)
    for (const e of order) {
      const procs = e.kind === 'peerup' ? carriers(ctx, e) : []
      const cpuBefore = procs.map(([, pid]) => cpuSeconds(pid))
      const relayBefore = e.path === 'direct' && e.kind === 'peerup' ? await bl.relayBytes() : 0
      const labBefore = labCpuSeconds(bl.lab.namespaces)
      const relayHostBefore = labCpuSeconds(relayHostNs)
      let r: { bytes: number; seconds: number }
      try {
        r = await runClient<{ bytes: number; seconds: number }>(
          bl,
          e.host,
          ['throughput', e.ip, e.port, settings.throughputBytes, run + 1],
          // 256 MiB take seconds on the slowest way (WebRTC); a client that hangs (one sat in a
          // futex wait with no socket open for 5 minutes) is a failed run, not a stalled bench.
          { timeoutMs: 120_000 },
        )
      } catch (err) {
        // A failed transfer is a result too: it is counted and reported, and the other runs go on.
        failures.get(e.id)?.push(`run ${run + 1}: ${(err as Error).message}`)
        log(`throughput run ${run + 1}/${settings.runs} ${e.id}: FAILED ${(err as Error).message}`)
        continue
      }
      const rate = mb / r.seconds
      mbps.get(e.id)?.push(rate)
      labCpu.get(e.id)?.push(((labCpuSeconds(bl.lab.namespaces) - labBefore) * 1000) / mb)
      if (e.path === 'relayed') {
        relayHostCpu.get(e.id)?.push(((labCpuSeconds(relayHostNs) - relayHostBefore) * 1000) / mb)
      }
      if (e.path === 'direct' && e.kind === 'peerup') {
        relaySeen.push((await bl.relayBytes()) - relayBefore)
      }
      if (procs.length > 0) {
        const byProc = cpu.get(e.id) ?? new Map<string, number[]>()
        cpu.set(e.id, byProc)
        procs.forEach(([name, pid], i) => {
          const s = cpuSeconds(pid) - (cpuBefore[i] ?? 0)
          byProc.set(name, [...(byProc.get(name) ?? []), s / r.seconds])
        })
      }
      log(`throughput run ${run + 1}/${settings.runs} ${e.id}: ${rate.toFixed(1)} MB/s`)
    }
  }
  for (const e of endpoints) {
    const byProc = cpu.get(e.id)
    const failed = failures.get(e.id) ?? []
    const notes = [
      ...(byProc === undefined
        ? []
        : [
            `CPU (cores busy): ${[...byProc].map(([name, v]) => `${name} ${(v.reduce((x, y) => x + y, 0) / v.length).toFixed(2)}`).join(', ')}`,
          ]),
      ...(failed.length === 0 ? [] : [`${failed.length} transfer(s) FAILED (see notes)`]),
    ]
    if (failed.length > 0) {
      results.note(
        `throughput ${e.label} [${e.path}]: ${failed.length} transfer(s) failed: ${failed.join('; ')}`,
      )
    }
    const values = mbps.get(e.id) ?? []
    if (values.length === 0) {
      results.fail(`throughput ${e.label} [${e.path}]`, new Error('every transfer failed'))
      continue
    }
    results.add({
      id: `throughput.${e.id}`,
      group: 'throughput',
      label: e.label,
      path: e.path,
      unit: 'MB/s',
      values,
      better: 'higher',
      ...(notes.length === 0 ? {} : { note: notes.join('; ') }),
    })
  }
  // CPU per MB over the whole path: with every process on two cores, throughput is its inverse.
  for (const e of endpoints) {
    const values = labCpu.get(e.id) ?? []
    if (values.length === 0) continue
    results.add({
      id: `cpu.${e.id}`,
      group: 'cpu per MB',
      label: e.label,
      path: e.path,
      unit: 'ms/MB',
      values,
      better: 'lower',
    })
  }
  for (const e of endpoints) {
    const values = relayHostCpu.get(e.id) ?? []
    if (values.length === 0) continue
    results.add({
      id: `relayhost.${e.id}`,
      group: 'relay host cpu per MB',
      label: e.label,
      path: e.path,
      unit: 'ms/MB',
      values,
      better: 'lower',
    })
  }
  if (relaySeen.length > 0) {
    results.note(
      `during the direct peerup transfers the relay's port 7777 saw at most ${Math.max(...relaySeen)} bytes per ${mb.toFixed(0)} MB transfer (keep-alives): the bytes did not cross the relay`,
    )
  }
}
