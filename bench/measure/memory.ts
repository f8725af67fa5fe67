/**
 * Memory: the daemons' and the relay's resident set when idle, with 100 proxied connections open,
 * and the relay's while it relays 1 GiB and after.
 *
 * @packageDocumentation
 */

import * as path from 'node:path'
import { SESSION_WINDOW_BYTES } from '../../src/pipe/session.ts'
import { type BenchContext, rssMB, rssParts, runClient, sleep } from '../context.ts'
import { CLIENT, PORTS, readMemprobe } from '../lab-setup.ts'
import { median } from '../results.ts'

/** `samples` readings of a process's RSS, `everyMs` apart. */
async function sampleRss(pid: number | undefined, samples: number, everyMs: number): Promise<number[]> {
  return (await sampleRssParts(pid, samples, everyMs)).rss
}

/** `samples` readings of a process's RSS and of its anonymous part, `everyMs` apart. */
async function sampleRssParts(
  pid: number | undefined,
  samples: number,
  everyMs: number,
): Promise<{ rss: number[]; anon: number[] }> {
  const rss: number[] = []
  const anon: number[] = []
  for (let i = 0; i < samples; i++) {
    rss.push(rssMB(pid))
    anon.push(rssParts(pid).anon)
    if (i < samples - 1) {
      await sleep(everyMs)
    }
  }
  return { rss, anon }
}

function memFile(dir: string): string {
  return path.join(dir, 'mem.json')
}

/** What the process's own heap figures (bench/memprobe.cjs) say, as a note. */
export function heapNote(file: string | undefined): string {
  const m = file === undefined ? undefined : readMemprobe(file)
  if (m === undefined) return ''
  return `; V8 heap ${m.heapUsed.toFixed(1)} MB used of ${m.heapTotal.toFixed(1)} MB, external ${m.external.toFixed(1)} MB (array buffers ${m.arrayBuffers.toFixed(1)} MB)`
}

/** Idle RSS of the daemons and the relay: readings over a few seconds after they settled. */
export async function measureIdleMemory(ctx: BenchContext): Promise<void> {
  const { bl, results } = ctx
  const procs = [
    ['daemon-b', 'daemon on b (target: 2 services, 2 peers)', bl.daemons.b.pid, memFile(bl.b.dir)],
    ['daemon-a', 'daemon on a (client, WebRTC connection)', bl.daemons.a.pid, memFile(bl.a.dir)],
    ['daemon-a2', 'daemon on a2 (client, relayed connection)', bl.daemons.a2.pid, memFile(bl.a2.dir)],
    ['relay', 'relay (3 reservations)', bl.relay.process.pid, bl.relay.memFile],
  ] as const
  // A Node 24 process doing nothing, for scale: what any Node program costs before its own code.
  const empty = bl.b.host.spawn(bl.lab.node, ['-e', 'setInterval(() => {}, 1000)'], { label: 'empty-node' })
  await sleep(ctx.quick ? 1000 : 5000)
  for (const [id, label, pid, file] of [
    ...procs,
    ['empty-node', 'plain node -e (nothing loaded), for scale', empty.pid, undefined] as const,
  ]) {
    const { rss, anon } = await sampleRssParts(pid, ctx.quick ? 3 : 5, ctx.quick ? 200 : 500)
    const parts = rssParts(pid)
    results.add({
      id: `memory.idle.${id}`,
      group: 'memory',
      label: `idle RSS, ${label}`,
      path: 'idle',
      unit: 'MB',
      values: rss,
      better: 'lower',
      note: `${parts.anon.toFixed(1)} MB anonymous, ${parts.file.toFixed(1)} MB file-backed (mapped executable)${heapNote(file)}`,
    })
    // What the process costs the machine: RSS less the executable's clean file-backed pages, which
    // the kernel shares between processes and can drop (the daemon-idle target accepts this figure).
    results.add({
      id: `memory.idle-anon.${id}`,
      group: 'memory',
      label: `idle anonymous memory, ${label}`,
      path: 'idle',
      unit: 'MB',
      values: anon,
      better: 'lower',
      note: 'RssAnon of /proc/<pid>/status: the heap, malloc and stacks, without the mapped executable',
    })
  }
  await empty.stop()
}

/** RSS with `heldConnections` connections open at once through each relayed way in. */
export async function measureHeldConnections(ctx: BenchContext): Promise<void> {
  const { bl, settings, results, log } = ctx
  const count = settings.heldConnections
  const ways = [
    {
      id: 'peerup',
      label: 'peerup proxy (via daemon)',
      port: PORTS.proxyRelayed,
      procs: [
        ['daemon-a2', 'daemon on a2', bl.daemons.a2.pid],
        ['proxy-a2', 'peerup proxy on a2', bl.proxies['proxy-relayed']?.pid],
        ['daemon-b', 'daemon on b', bl.daemons.b.pid],
        ['relay', 'relay', bl.relay.process.pid],
      ],
    },
    {
      id: 'ssh',
      label: 'ssh -R + ssh -L',
      port: PORTS.sshLRelayBench,
      procs: [
        ['ssh-L-a2', 'ssh -L on a2', findProc(ctx, 'ssh-L-a2')],
        ['ssh-R-b', 'ssh -R on b', findProc(ctx, 'ssh-R-b')],
      ],
    },
  ] as const
  for (const way of ways) {
    const before = way.procs.map(([, , pid]) => rssMB(pid))
    // The client holds its connections until its stdin ends.
    const proc = bl.a2.host.spawn(
      bl.lab.node,
      [CLIENT, 'hold', '127.0.0.1', String(way.port), String(count)],
      {
        stdin: 'pipe',
        label: `hold-${way.id}`,
      },
    )
    try {
      const ready = JSON.parse((await proc.waitForOutput(/\{"ready".*\}/, 120_000))[0]) as {
        ready: number
        failed: number
        errors: string[]
      }
      log(`held ${ready.ready}/${count} connections through ${way.label}`)
      await sleep(2000)
      const during = way.procs.map(([, , pid]) => rssMB(pid))
      proc.stdin?.end()
      const after = JSON.parse((await proc.waitForOutput(/\{"alive".*\}/, 60_000))[0]) as {
        alive?: number
        dropped?: number
      }
      way.procs.forEach(([id, label], i) => {
        const grew = (during[i] as number) - (before[i] as number)
        // A daemon's sessions hold nothing while idle, but each may keep up to a window of bytes
        // sent and not yet acknowledged, and a window received and not yet delivered.
        const window =
          way.id === 'peerup' && id.startsWith('daemon')
            ? `; ${((grew * 1000) / Math.max(1, ready.ready)).toFixed(0)} kB more per connection, idle — with every session window full (${SESSION_WINDOW_BYTES / 2 ** 20} MiB each way: unacknowledged, and received but not delivered) up to ${((ready.ready * 2 * SESSION_WINDOW_BYTES) / 1e6).toFixed(0)} MB more`
            : ''
        results.add({
          id: `memory.held.${way.id}.${id}`,
          group: 'memory',
          label: `RSS with ${ready.ready} connections open, ${label}`,
          path: 'relayed',
          unit: 'MB',
          values: [during[i] as number],
          better: 'lower',
          note: `${(before[i] as number).toFixed(1)} MB before; ${ready.failed} failed to open, ${after.alive ?? '?'} still answered after the hold${window}`,
        })
      })
      if (ready.failed > 0) {
        results.note(
          `${way.label}: ${ready.failed} of ${count} connections failed to open: ${ready.errors.join('; ')}`,
        )
      }
    } finally {
      await proc.stop()
    }
    await sleep(1000)
  }
}

function findProc(ctx: BenchContext, label: string): number | undefined {
  return ctx.bl.tunnels[label]?.pid
}

/** The relay's RSS before, during (peak) and after relaying `relayGiBBytes` in one stream. */
export async function measureRelayMemory(ctx: BenchContext): Promise<void> {
  const { bl, settings, results, log } = ctx
  const pid = bl.relay.process.pid
  const gib = (settings.relayGiBBytes / 2 ** 30).toFixed(2).replace(/\.00$/, '')
  const idle = median(await sampleRss(pid, 5, 400))
  const idleParts = rssParts(pid)
  results.add({
    id: 'memory.relay.idle',
    group: 'memory',
    label: 'relay RSS before the transfer',
    path: 'relayed',
    unit: 'MB',
    values: [idle],
    better: 'lower',
    note: `${idleParts.anon.toFixed(1)} MB anonymous, ${idleParts.file.toFixed(1)} MB file-backed${heapNote(bl.relay.memFile)}`,
  })
  // Twice: if the second transfer's peak is the first one's, memory is bounded (a high-water mark
  // the heap keeps), not growing with the bytes relayed.
  for (const pass of [1, 2]) {
    const samples: number[] = []
    let done = false
    const sampler = (async () => {
      while (!done) {
        samples.push(rssMB(pid))
        await sleep(200)
      }
    })()
    let seconds = Number.NaN
    try {
      const r = await runClient<{ bytes: number; seconds: number }>(
        bl,
        bl.a2.host,
        ['throughput', '127.0.0.1', PORTS.proxyRelayed, settings.relayGiBBytes, 90 + pass],
        { timeoutMs: 900_000 },
      )
      seconds = r.seconds
    } finally {
      done = true
      await sampler
    }
    log(`relayed ${gib} GiB (pass ${pass}) in ${seconds.toFixed(1)} s`)
    const peak = Math.max(...samples)
    await sleep(settings.relayAfterMs)
    const after = median(await sampleRss(pid, 5, 400))
    const parts = rssParts(pid)
    const suffix = pass === 1 ? '' : '2'
    const which = pass === 1 ? '' : ', a second time'
    results.add({
      id: `memory.relay.peak${suffix}`,
      group: 'memory',
      label: `relay RSS while relaying ${gib} GiB${which} (peak of ${samples.length} readings)`,
      path: 'relayed',
      unit: 'MB',
      values: [peak],
      better: 'lower',
      note: `median reading ${median(samples).toFixed(1)} MB; ${(settings.relayGiBBytes / 1e6 / seconds).toFixed(1)} MB/s`,
    })
    results.add({
      id: `memory.relay.after${suffix}`,
      group: 'memory',
      label: `relay RSS ${settings.relayAfterMs / 1000} s after that`,
      path: 'relayed',
      unit: 'MB',
      values: [after],
      better: 'lower',
      note: `${parts.anon.toFixed(1)} MB anonymous, ${parts.file.toFixed(1)} MB file-backed${heapNote(bl.relay.memFile)}`,
    })
    if (ctx.quick) {
      break
    }
  }
}
