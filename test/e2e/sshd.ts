/**
 * A real OpenSSH server inside a lab host, with throwaway host and client keys, for end-to-end tests
 * that must prove an ssh session really gets through.
 *
 * @packageDocumentation
 */

import { execFile } from 'node:child_process'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import { promisify } from 'node:util'
import type { LabHost, LabProcess } from './lab.ts'

const execFileP = promisify(execFile)

// sshd re-executes itself by its own path, so it must be started by an absolute one.
const SSHD = '/usr/sbin/sshd'

/** Options of {@link startSshd}. */
export interface SshdOptions {
  /** Default 22: each host is its own namespace, so the port is free. */
  port?: number
  /** Where keys, config and logs go; default a new directory in the lab's temp dir (removed by stop()). */
  dir?: string
  /** How long to wait for the port to accept connections. Default 10 s. */
  timeoutMs?: number
}

/** A running sshd and what a client needs to log in to it as root. */
export interface Sshd {
  readonly host: LabHost
  readonly port: number
  readonly dir: string
  /** The client's private key, authorized for root. */
  readonly clientKey: string
  /** A known_hosts file trusting this server's host key under any name. */
  readonly knownHosts: string
  readonly process: LabProcess
  /**
   * ssh options that log in as root with {@link Sshd.clientKey}, check the host key strictly and never
   * prompt; add the destination and command: `ssh ...sshArgs('relay') 198.18.0.1 echo ok`.
   */
  sshArgs(hostAlias: string, options?: { port?: number }): string[]
  /** Stops sshd (SIGTERM, then SIGKILL) and removes its directory if startSshd made it. */
  stop(): Promise<void>
}

/** Starts `sshd -D -e` in `host`'s namespace and resolves once it accepts TCP connections. */
export async function startSshd(host: LabHost, options: SshdOptions = {}): Promise<Sshd> {
  const port = options.port ?? 22
  const ownDir = options.dir === undefined
  const dir = options.dir ?? (await fsp.mkdtemp(path.join(host.tmpDir, `sshd-${host.name}-`)))
  await fsp.mkdir(dir, { recursive: true })
  try {
    await fsp.access(SSHD)
  } catch {
    throw new Error(`${SSHD} is missing: install openssh-server`)
  }
  // The privilege separation directory; Debian's package creates it at boot, a container may not have it.
  await fsp.mkdir('/run/sshd', { recursive: true, mode: 0o755 })

  const hostKey = path.join(dir, 'ssh_host_ed25519_key')
  const clientKey = path.join(dir, 'client_ed25519')
  await Promise.all([keygen(hostKey, 'peerup-lab-host'), keygen(clientKey, 'peerup-lab-client')])
  const knownHosts = path.join(dir, 'known_hosts')
  const authorizedKeys = path.join(dir, 'authorized_keys')
  // `*`: the tests reach this server through proxies and aliases under many names; what matters is
  // that the key is checked, not which name it is filed under.
  await fsp.writeFile(knownHosts, `* ${(await fsp.readFile(`${hostKey}.pub`, 'utf8')).trim()}\n`)
  await fsp.writeFile(authorizedKeys, await fsp.readFile(`${clientKey}.pub`, 'utf8'), { mode: 0o600 })
  const config = path.join(dir, 'sshd_config')
  await fsp.writeFile(
    config,
    [
      `ListenAddress 0.0.0.0:${port}`,
      `HostKey ${hostKey}`,
      `PidFile ${path.join(dir, 'sshd.pid')}`,
      `AuthorizedKeysFile ${authorizedKeys}`,
      // No PAM and no ownership checks: the keys live in a temp dir and the lab has no login setup.
      'UsePAM no',
      'StrictModes no',
      'PermitRootLogin prohibit-password',
      'AuthenticationMethods publickey',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'PrintMotd no',
      'UseDNS no',
      // Tests open many connections at once; the default (10:30:100) would randomly refuse some.
      'MaxStartups 100',
      // scp speaks SFTP since OpenSSH 9.0; sshd's own server needs no sftp-server binary.
      'Subsystem sftp internal-sftp',
      'LogLevel VERBOSE',
      '',
    ].join('\n'),
  )

  const proc = host.spawn(SSHD, ['-D', '-e', '-f', config], { label: `sshd:${port}` })
  const timeoutMs = options.timeoutMs ?? 10_000
  const deadline = Date.now() + timeoutMs
  let exited = false
  void proc.exited.then(() => {
    exited = true
  })
  while (!(await host.canConnect('127.0.0.1', port, 500))) {
    if (exited || Date.now() > deadline) {
      await proc.stop()
      const why = exited ? 'exited' : `did not accept connections within ${timeoutMs} ms`
      throw new Error(`sshd on ${host.name}:${port} ${why}:\n${proc.output()}`)
    }
    await delay(50)
  }

  return {
    host,
    port,
    dir,
    clientKey,
    knownHosts,
    process: proc,
    sshArgs: (hostAlias, opts) => [
      '-F',
      '/dev/null',
      // ssh takes the first -p it is given: a caller going through a local forward passes its port here.
      '-p',
      String(opts?.port ?? port),
      '-l',
      'root',
      '-i',
      clientKey,
      '-o',
      'IdentitiesOnly=yes',
      '-o',
      `UserKnownHostsFile=${knownHosts}`,
      '-o',
      'GlobalKnownHostsFile=/dev/null',
      '-o',
      'StrictHostKeyChecking=yes',
      '-o',
      'UpdateHostKeys=no',
      '-o',
      'BatchMode=yes',
      '-o',
      `HostKeyAlias=${hostAlias}`,
      '-o',
      'ConnectTimeout=10',
      '-o',
      'LogLevel=ERROR',
    ],
    async stop() {
      await proc.stop()
      if (ownDir) {
        await fsp.rm(dir, { recursive: true, force: true })
      }
    },
  }
}

async function keygen(file: string, comment: string): Promise<void> {
  await execFileP('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', file])
}
