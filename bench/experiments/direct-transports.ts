/**
 * Experiment (issue 15): what a direct TCP path between two lab hosts carries, per protocol on it.
 *
 * `node_modules/.bin/node bench/experiments/direct-transports.ts [runs] [MiB]` (root; default 5
 * runs of 1024 MiB). One lab (test/e2e/lab.ts, both routers cone); router-b forwards ports to b
 * (DNAT), so every path has the hops of a punched connection: a → router-a (MASQUERADE) → inet →
 * router-b (conntrack, NAT) → b. One TCP connection per transfer, a → b, through each tunnel:
 *
 * | variant     | a                                             | b                                      |
 * | ----------- | --------------------------------------------- | -------------------------------------- |
 * | raw         | source → router-b:5201                        | sink :5201                             |
 * | ssh-L       | source → ssh -L 127.0.0.1:7000 (router-b:2022)| sshd :22 → sink                        |
 * | libp2p      | source → p2p-a :7001 (one stream per conn.)   | p2p-b :4001 (tcp+noise+yamux) → sink   |
 * | tls-aes     | source → tls-a :7002 (TLS 1.3, default suite) | tls-b :5443 → sink                     |
 * | tls-chacha  | source → tls-a :7003 (TLS_CHACHA20_POLY1305)  | tls-b :5443 → sink                     |
 *
 * libp2p is configured as src/p2p/node.ts `baseLibp2pOptions` does for the data path: `tcp()` (the
 * patched @libp2p/tcp), `noise({ crypto: noiseCrypto })` (src/p2p/noise-crypto.ts),
 * `yamux(YAMUX_OPTIONS)` (src/p2p/constants.ts); the proxies join socket and stream with peerup's
 * own `pipe()`, `socketEnd()` and `rawStreamEnd()` (src/pipe/), as `peerup proxy` does. The TLS
 * proxies use the same `pipe()` with two `socketEnd()`s. Runs alternate the order of the variants.
 *
 * CPU: the source reports `process.cpuUsage()` over its transfer; every other process's utime +
 * stime come from /proc/<pid>/stat before and after (for sshd: every sshd process in b's
 * namespace). Before each run the harness waits until the machine is idle apart from this
 * experiment (a 1 s sample of /proc/stat below 15 % busy, and the 1-min load below 1.0 before the
 * first run) and records the load average.
 *
 * @packageDocumentation
 */

import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as net from 'node:net'
import * as path from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import * as tls from 'node:tls'

const PORTS = { sink: 5201, p2p: 4001, tls: 5443, sshL: 7000, p2pA: 7001, tlsAes: 7002, tlsChacha: 7003 }
const DNAT = { raw: 5201, ssh: 2022, p2p: 4001, tls: 5443 }
const PROTOCOL = '/peerup-bench/direct/1.0.0'
const CHUNK = 64 * 1024

// ---------------------------------------------------------------- inside the namespaces

/** Counts the length announced in the first 8 bytes, then answers one byte and ends. */
function sink(port: number): void {
  net
    .createServer({ allowHalfOpen: true, noDelay: true }, (s) => {
      s.on('error', () => s.destroy())
      let want = -1
      let got = 0
      let head = Buffer.alloc(0)
      s.on('data', (d: Buffer) => {
        if (want < 0) {
          head = Buffer.concat([head, d])
          if (head.length < 8) {
            return
          }
          want = Number(head.readBigUInt64BE(0))
          got = head.length - 8
        } else {
          got += d.length
        }
        if (got >= want) {
          s.end(Buffer.from([1]))
        }
      })
    })
    .listen(port, '0.0.0.0', () => console.log('ready'))
}

/** Sends `bytes` (after an 8-byte length) and waits for the sink's answer; prints JSON. */
async function source(host: string, port: number, bytes: number): Promise<void> {
  const block = Buffer.alloc(CHUNK, 0x5a)
  const s = net.connect({ host, port, noDelay: true })
  await new Promise<void>((resolve, reject) => s.once('connect', resolve).once('error', reject))
  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  const head = Buffer.alloc(8)
  head.writeBigUInt64BE(BigInt(bytes))
  s.write(head)
  const answered = new Promise<void>((resolve, reject) => {
    s.once('data', () => resolve())
    s.once('error', reject)
    s.once('end', () => resolve())
  })
  let sent = 0
  while (sent < bytes) {
    const n = Math.min(CHUNK, bytes - sent)
    sent += n
    if (!s.write(n === CHUNK ? block : block.subarray(0, n))) {
      await new Promise((resolve) => s.once('drain', resolve))
    }
  }
  await answered
  const ms = performance.now() - t0
  const cpu = process.cpuUsage(cpu0)
  s.destroy()
  console.log(JSON.stringify({ ms, mbps: bytes / 1e6 / (ms / 1000), cpuMs: (cpu.user + cpu.system) / 1000 }))
}

async function libp2pNode(listen: string[]) {
  const { createLibp2p } = await import('libp2p')
  const { tcp } = await import('@libp2p/tcp')
  const { noise } = await import('@chainsafe/libp2p-noise')
  const { yamux } = await import('@chainsafe/libp2p-yamux')
  const { generateKeyPair } = await import('@libp2p/crypto/keys')
  const { noiseCrypto } = await import('../../src/p2p/noise-crypto.ts')
  const { YAMUX_OPTIONS } = await import('../../src/p2p/constants.ts')
  return createLibp2p({
    privateKey: await generateKeyPair('Ed25519'),
    addresses: { listen },
    transports: [tcp()],
    connectionEncrypters: [noise({ crypto: noiseCrypto })],
    streamMuxers: [yamux(YAMUX_OPTIONS)],
    connectionMonitor: { enabled: false },
  })
}

async function p2pB(): Promise<void> {
  const { pipe } = await import('../../src/pipe/pipe.ts')
  const { socketEnd } = await import('../../src/pipe/node.ts')
  const { rawStreamEnd } = await import('../../src/pipe/stream.ts')
  const node = await libp2pNode([`/ip4/0.0.0.0/tcp/${PORTS.p2p}`])
  await node.handle(
    PROTOCOL,
    (stream) => {
      const out = net.connect({ host: '127.0.0.1', port: PORTS.sink, noDelay: true })
      void pipe(socketEnd(out), rawStreamEnd(stream))
    },
    { maxInboundStreams: 64 },
  )
  console.log(`ready ${node.peerId.toString()}`)
}

async function p2pA(remote: string): Promise<void> {
  const { pipe } = await import('../../src/pipe/pipe.ts')
  const { socketEnd } = await import('../../src/pipe/node.ts')
  const { rawStreamEnd } = await import('../../src/pipe/stream.ts')
  const { multiaddr } = await import('@multiformats/multiaddr')
  const node = await libp2pNode([])
  const ma = multiaddr(remote)
  const conn = await node.dial(ma)
  net
    .createServer({ allowHalfOpen: true, noDelay: true }, async (socket) => {
      socket.pause()
      try {
        const stream = await conn.newStream(PROTOCOL)
        void pipe(socketEnd(socket), rawStreamEnd(stream))
      } catch {
        socket.destroy()
      }
    })
    .listen(PORTS.p2pA, '127.0.0.1', () => console.log(`ready ${conn.remoteAddr.toString()}`))
}

async function tlsB(dir: string): Promise<void> {
  const { pipe } = await import('../../src/pipe/pipe.ts')
  const { socketEnd } = await import('../../src/pipe/node.ts')
  tls
    .createServer(
      {
        key: fs.readFileSync(path.join(dir, 'key.pem')),
        cert: fs.readFileSync(path.join(dir, 'cert.pem')),
        minVersion: 'TLSv1.3',
        allowHalfOpen: true,
      },
      (t) => {
        t.setNoDelay(true)
        const out = net.connect({ host: '127.0.0.1', port: PORTS.sink, noDelay: true })
        void pipe(socketEnd(out), socketEnd(t))
      },
    )
    .listen(PORTS.tls, '0.0.0.0', () => console.log('ready'))
}

async function tlsA(dir: string, listenPort: number, host: string, port: number, suite: string) {
  const { pipe } = await import('../../src/pipe/pipe.ts')
  const { socketEnd } = await import('../../src/pipe/node.ts')
  const ca = fs.readFileSync(path.join(dir, 'cert.pem'))
  net
    .createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
      const raw = net.connect({ host, port, noDelay: true })
      const t = tls.connect({
        socket: raw,
        servername: 'peerup-bench',
        ca,
        minVersion: 'TLSv1.3',
        ...(suite === 'default' ? {} : { ciphersuites: suite }),
      })
      t.once('secureConnect', () => {
        if (process.env.TLS_LOG_ONCE !== 'done') {
          process.env.TLS_LOG_ONCE = 'done'
          console.log(`cipher ${JSON.stringify(t.getCipher())} protocol ${t.getProtocol()}`)
        }
      })
      void pipe(socketEnd(socket), socketEnd(t))
    })
    .listen(listenPort, '127.0.0.1', () => console.log('ready'))
}

// ---------------------------------------------------------------- the harness

function cpuTicks(pid: number): number {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return Number(f[11]) + Number(f[12]) // utime + stime (fields 14, 15)
  } catch {
    return 0
  }
}

function comm(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim()
  } catch {
    return ''
  }
}

function nsPids(ns: string): number[] {
  const r = spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' })
  return (r.stdout ?? '').split(/\s+/).filter(Boolean).map(Number)
}

/** Busy fraction of all CPUs over `ms`, from /proc/stat. */
async function busy(ms = 1000): Promise<number> {
  const read = () => {
    const f = (fs.readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '').split(/\s+/).slice(1).map(Number)
    const idle = (f[3] ?? 0) + (f[4] ?? 0)
    return { idle, total: f.reduce((a, b) => a + b, 0) }
  }
  const a = read()
  await delay(ms)
  const b = read()
  return 1 - (b.idle - a.idle) / (b.total - a.total)
}

function loadavg(): number {
  return Number(fs.readFileSync('/proc/loadavg', 'utf8').split(' ')[0])
}

const TICK_MS = 1000 / Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim() || 100)

type Variant = 'raw' | 'ssh-L' | 'libp2p' | 'tls-aes' | 'tls-chacha'
const VARIANTS: Variant[] = ['raw', 'ssh-L', 'libp2p', 'tls-aes', 'tls-chacha']

interface Sample {
  variant: Variant
  run: number
  mbps: number
  load: number
  busyBefore: number
  /** CPU ms per MB, per role. */
  cpu: Record<string, number>
}

async function harness(runs: number, mib: number): Promise<void> {
  const { createLab } = await import('../../test/e2e/lab.ts')
  const { startSshd } = await import('../../test/e2e/sshd.ts')
  const self = import.meta.filename
  const bytes = mib * 1024 * 1024
  const mb = bytes / 1e6
  while (loadavg() >= 1.0) {
    console.error(`load ${loadavg()} ≥ 1.0: waiting`)
    await delay(10_000)
  }
  const lab = await createLab({ name: 'direct-transports', nat: 'cone' })
  const samples: Sample[] = []
  try {
    const a = lab.host('a')
    const b = lab.host('b')
    const rb = lab.host('router-b')
    const ipt = (...args: string[]) => rb.mustRun(lab.iptables, ['-w', ...args])
    for (const [from, to] of [
      [DNAT.raw, PORTS.sink],
      [DNAT.ssh, 22],
      [DNAT.p2p, PORTS.p2p],
      [DNAT.tls, PORTS.tls],
    ] as const) {
      await ipt(
        '-t',
        'nat',
        '-A',
        'PREROUTING',
        '-i',
        'wan',
        '-p',
        'tcp',
        '--dport',
        String(from),
        '-j',
        'DNAT',
        '--to-destination',
        `${b.ip}:${to}`,
      )
    }
    await ipt('-I', 'FORWARD', '1', '-i', 'wan', '-m', 'conntrack', '--ctstate', 'DNAT', '-j', 'ACCEPT')
    const pubB = rb.ip

    // TLS material: a throwaway self-signed P-256 certificate.
    const certDir = fs.mkdtempSync(path.join(lab.tmpDir, 'tls-'))
    const ossl = spawnSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-keyout',
        path.join(certDir, 'key.pem'),
        '-out',
        path.join(certDir, 'cert.pem'),
        '-days',
        '1',
        '-subj',
        '/CN=peerup-bench',
        '-addext',
        'subjectAltName=DNS:peerup-bench',
      ],
      { encoding: 'utf8' },
    )
    if (ossl.status !== 0) {
      throw new Error(`openssl: ${ossl.stderr}`)
    }

    const sinkP = b.spawn(lab.node, [self, 'sink', String(PORTS.sink)], { label: 'sink' })
    const sshd = await startSshd(b, { port: 22 })
    const p2pBP = b.spawn(lab.node, [self, 'p2p-b'], { label: 'p2p-b' })
    const tlsBP = b.spawn(lab.node, [self, 'tls-b', certDir], { label: 'tls-b' })
    await sinkP.waitForOutput(/ready/, 15_000)
    await tlsBP.waitForOutput(/ready/, 15_000)
    const peerId = (await p2pBP.waitForOutput(/ready (\S+)/, 20_000))[1]
    const p2pAP = a.spawn(lab.node, [self, 'p2p-a', `/ip4/${pubB}/tcp/${DNAT.p2p}/p2p/${peerId}`], {
      label: 'p2p-a',
    })
    const tlsAesP = a.spawn(
      lab.node,
      [self, 'tls-a', certDir, String(PORTS.tlsAes), pubB, String(DNAT.tls), 'default'],
      { label: 'tls-a-aes' },
    )
    const tlsChachaP = a.spawn(
      lab.node,
      [
        self,
        'tls-a',
        certDir,
        String(PORTS.tlsChacha),
        pubB,
        String(DNAT.tls),
        'TLS_CHACHA20_POLY1305_SHA256',
      ],
      { label: 'tls-a-chacha' },
    )
    const sshP = a.spawn(
      'ssh',
      [
        // Before sshArgs: ssh keeps the first value of an option, and sshArgs says LogLevel=ERROR.
        '-o',
        'LogLevel=DEBUG1',
        ...sshd.sshArgs('b', { port: DNAT.ssh }),
        '-N',
        '-o',
        'ExitOnForwardFailure=yes',
        '-L',
        `127.0.0.1:${PORTS.sshL}:127.0.0.1:${PORTS.sink}`,
        pubB,
      ],
      { label: 'ssh-L' },
    )
    await Promise.all([
      p2pAP.waitForOutput(/ready/, 20_000),
      tlsAesP.waitForOutput(/ready/, 15_000),
      tlsChachaP.waitForOutput(/ready/, 15_000),
    ])
    await a.waitForPort(PORTS.sshL, { timeoutMs: 15_000 })
    const sshCipher = sshP.output().match(/kex: client->server cipher: (\S+)/)?.[1] ?? '?'
    console.log(`ssh cipher a→b: ${sshCipher}; libp2p connection: ${p2pAP.output().trim()}`)

    const target: Record<Variant, { host: string; port: number }> = {
      raw: { host: pubB, port: DNAT.raw },
      'ssh-L': { host: '127.0.0.1', port: PORTS.sshL },
      libp2p: { host: '127.0.0.1', port: PORTS.p2pA },
      'tls-aes': { host: '127.0.0.1', port: PORTS.tlsAes },
      'tls-chacha': { host: '127.0.0.1', port: PORTS.tlsChacha },
    }
    const sshdPids = () => nsPids(b.ns).filter((p) => comm(p) === 'sshd')
    const roles = (v: Variant): Record<string, () => number[]> => {
      const pid = (p: { pid?: number | undefined }) => () => (p.pid === undefined ? [] : [p.pid])
      const sinkRole = { sink: pid(sinkP) }
      switch (v) {
        case 'raw':
          return sinkRole
        case 'ssh-L':
          return { 'tunnel-a (ssh)': pid(sshP), 'tunnel-b (sshd)': sshdPids, ...sinkRole }
        case 'libp2p':
          return { 'tunnel-a (p2p-a)': pid(p2pAP), 'tunnel-b (p2p-b)': pid(p2pBP), ...sinkRole }
        case 'tls-aes':
          return { 'tunnel-a (tls-a)': pid(tlsAesP), 'tunnel-b (tls-b)': pid(tlsBP), ...sinkRole }
        case 'tls-chacha':
          return { 'tunnel-a (tls-a)': pid(tlsChachaP), 'tunnel-b (tls-b)': pid(tlsBP), ...sinkRole }
      }
    }
    const transfer = async (v: Variant, n: number) => {
      const t = target[v]
      const r = await a.run(lab.node, [self, 'source', t.host, String(t.port), String(n)], {
        timeoutMs: 300_000,
      })
      if (r.code !== 0) {
        throw new Error(`source ${v} failed: ${r.stderr || r.stdout}`)
      }
      return JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '{}') as { mbps: number; cpuMs: number }
    }

    // Warm-up: every path once (JIT, the sshd session, the libp2p connection's windows).
    for (const v of VARIANTS) {
      await transfer(v, 64 * 1024 * 1024)
    }
    for (let run = 0; run < runs; run++) {
      const order = run % 2 === 0 ? VARIANTS : [...VARIANTS].reverse()
      for (const v of order) {
        let b0 = await busy()
        for (let waited = 0; b0 > 0.15 && waited < 24; waited++) {
          console.error(`machine ${(b0 * 100).toFixed(0)} % busy before ${v}: waiting`)
          await delay(5000)
          b0 = await busy()
        }
        const load = loadavg()
        const r = roles(v)
        const before = Object.fromEntries(
          Object.entries(r).map(([k, f]) => [k, f().reduce((s, p) => s + cpuTicks(p), 0)]),
        )
        const res = await transfer(v, bytes)
        const cpu: Record<string, number> = { source: res.cpuMs / mb }
        for (const [k, f] of Object.entries(r)) {
          cpu[k] = ((f().reduce((s, p) => s + cpuTicks(p), 0) - (before[k] ?? 0)) * TICK_MS) / mb
        }
        const sample = { variant: v, run: run + 1, mbps: res.mbps, load, busyBefore: b0, cpu }
        samples.push(sample)
        console.log(JSON.stringify(sample))
        await delay(2000)
      }
    }
  } catch (err) {
    console.error(lab.dumpLogs())
    throw err
  } finally {
    await lab.close()
  }
  report(samples, runs, mib)
}

function stats(xs: number[]): string {
  const s = [...xs].sort((x, y) => x - y)
  const mid =
    s.length % 2 === 1 ? s[(s.length - 1) / 2]! : ((s[s.length / 2 - 1] ?? 0) + (s[s.length / 2] ?? 0)) / 2
  const f = (x: number) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2))
  return `${f(mid)} (${f(s[0] ?? 0)}–${f(s.at(-1) ?? 0)})`
}

function report(samples: Sample[], runs: number, mib: number): void {
  const loads = samples.map((s) => s.load)
  console.log(
    `\n${runs} runs × ${mib} MiB per variant, a → b; load average (1 min) at the start of a transfer ${Math.min(...loads).toFixed(2)}–${Math.max(...loads).toFixed(2)}; CPU busy before a transfer ${(Math.min(...samples.map((s) => s.busyBefore)) * 100).toFixed(0)}–${(Math.max(...samples.map((s) => s.busyBefore)) * 100).toFixed(0)} %\n`,
  )
  console.log(
    '| variant | MB/s median (min–max) | tunnel CPU ms/MB, a + b | tunnel a | tunnel b | source | sink |',
  )
  console.log('| --- | --- | --- | --- | --- | --- | --- |')
  for (const v of VARIANTS) {
    const ss = samples.filter((s) => s.variant === v)
    if (ss.length === 0) {
      continue
    }
    const key = (prefix: string) => Object.keys(ss[0]?.cpu ?? {}).find((k) => k.startsWith(prefix))
    const ka = key('tunnel-a')
    const kb = key('tunnel-b')
    const col = (k: string | undefined) => (k === undefined ? '–' : stats(ss.map((s) => s.cpu[k] ?? 0)))
    const tunnel =
      ka === undefined
        ? '–'
        : stats(ss.map((s) => (s.cpu[ka] ?? 0) + (kb === undefined ? 0 : (s.cpu[kb] ?? 0))))
    console.log(
      `| ${v} | ${stats(ss.map((s) => s.mbps))} | ${tunnel} | ${ka === undefined ? '–' : `${col(ka)} ${ka.slice(9)}`} | ${kb === undefined ? '–' : `${col(kb)} ${kb.slice(9)}`} | ${col('source')} | ${col('sink')} |`,
    )
  }
}

const [mode, ...args] = process.argv.slice(2)
switch (mode) {
  case 'sink':
    sink(Number(args[0]))
    break
  case 'source':
    await source(args[0] ?? '', Number(args[1]), Number(args[2]))
    break
  case 'p2p-b':
    await p2pB()
    break
  case 'p2p-a':
    await p2pA(args[0] ?? '')
    break
  case 'tls-b':
    await tlsB(args[0] ?? '')
    break
  case 'tls-a':
    await tlsA(args[0] ?? '', Number(args[1]), args[2] ?? '', Number(args[3]), args[4] ?? 'default')
    break
  default:
    await harness(mode === undefined ? 5 : Number(mode), args[0] === undefined ? 1024 : Number(args[0]))
}
