/**
 * The resumable session as a state machine, over in-memory links that the test cuts, replaces
 * and delays at will: bytes both ways with half-close, acknowledgements freeing the window, a
 * link lost and attached again (nothing lost, repeated or reordered), a session moved to another
 * link while bytes flow, an attach that replaces a live link, a RESET, a link that stops
 * answering, and the grace period running out.
 */

import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { describe, it } from 'node:test'
import type { Chunk, EndEvents } from '../../../src/pipe/end.ts'
import { FRAME, type Frame, FrameParser } from '../../../src/pipe/frames.ts'
import type { Link, LinkEvents } from '../../../src/pipe/link.ts'
import {
  handshake,
  newSessionId,
  Session,
  SessionExpiredError,
  type SessionInit,
  SessionRefusedError,
} from '../../../src/pipe/session.ts'

const ALL = [FRAME.DATA, FRAME.FIN, FRAME.RESET, FRAME.ATTACH, FRAME.ACK]

/** One side of an in-memory link: what is sent arrives, parsed, at the other side a tick later. */
class MemoryLink implements Link {
  readonly peer: string
  other: MemoryLink | undefined
  #events: LinkEvents | undefined
  #held: Frame[] = []
  #holding = true
  #gone = false
  readonly #parser = new FrameParser(1024 * 1024, ALL)
  /** Sent frames are dropped instead of delivered (a path that went dead without a word). */
  blackhole = false
  /** Arriving frames this says no to are dropped (a test's knife: only some frames get through). */
  admit: ((frame: Frame) => boolean) | undefined
  /** Sends say "wait for drain" (they still arrive), as a socket with a full buffer does, until {@link MemoryLink.release}. */
  full = false

  constructor(peer: string) {
    this.peer = peer
  }

  send(frames: Chunk): boolean {
    if (this.#gone) {
      throw new Error('link gone')
    }
    const bytes = Buffer.from(frames.subarray())
    const other = this.other
    setImmediate(() => other?.receive(bytes))
    return !this.full
  }

  /** Takes sends again: the drain a full socket reports once its buffer emptied. */
  release(): void {
    this.full = false
    this.#events?.drain()
  }

  receive(bytes: Uint8Array): void {
    if (this.#gone || this.other?.blackhole === true) {
      return
    }
    for (const frame of this.#parser.push(bytes)) {
      if (this.admit !== undefined && !this.admit(frame)) {
        continue
      }
      if (this.#holding) {
        this.#held.push(frame)
      } else {
        this.#events?.frame(frame)
      }
    }
  }

  listen(events: LinkEvents): void {
    this.#events = events
    this.#holding = false
    while (!this.#holding && this.#held.length > 0) {
      events.frame(this.#held.shift() as Frame)
    }
  }

  hold(): void {
    this.#holding = true
  }

  /** After what was sent has arrived, as a stream's close(). */
  close(): Promise<void> {
    return new Promise((resolve) =>
      setImmediate(() => {
        this.cut()
        resolve()
      }),
    )
  }

  abort(err: Error): void {
    this.cut(err)
  }

  /** Both sides see the link go. */
  cut(err?: Error): void {
    for (const side of [this, this.other]) {
      if (side !== undefined && !side.#gone) {
        side.#gone = true
        const events = side.#events
        setImmediate(() => events?.gone(err))
      }
    }
  }
}

function linkPair(): [MemoryLink, MemoryLink] {
  const a = new MemoryLink('acceptor-peer')
  const b = new MemoryLink('opener-peer')
  a.other = b
  b.other = a
  return [a, b]
}

/** What a session handed to its local end, and its events. */
function collector() {
  const chunks: Buffer[] = []
  const log: string[] = []
  let resolveEnd: () => void = () => {}
  let resolveFinish: () => void = () => {}
  let rejectError: (err: Error) => void = () => {}
  const ended = new Promise<void>((resolve) => {
    resolveEnd = resolve
  })
  const finished = new Promise<void>((resolve) => {
    resolveFinish = resolve
  })
  const failed = new Promise<Error>((resolve) => {
    rejectError = resolve
  })
  const events: EndEvents = {
    data: (c) => chunks.push(Buffer.from(c.subarray())),
    end: () => {
      log.push('end')
      resolveEnd()
    },
    drain: () => log.push('drain'),
    finish: () => {
      log.push('finish')
      resolveFinish()
    },
    error: (err) => {
      log.push(`error: ${err.message}`)
      rejectError(err)
    },
  }
  return { events, chunks, log, ended, finished, failed, bytes: () => Buffer.concat(chunks) }
}

/**
 * A session pair over one link, opened as the daemon opens one: the opener's handshake, the
 * acceptor's answer. `relink` gives the opener a fresh link whose other side the acceptor resumes.
 */
async function openPair(options: Partial<SessionInit> = {}) {
  const id = newSessionId()
  const acceptor = new Session({ id, name: 'acceptor', role: 'acceptor', graceMs: 5_000, ...options })
  const links: MemoryLink[][] = []
  const answer = (theirs: MemoryLink): void => {
    // The accepting side, as its protocol handler: the first frame is ATTACH.
    theirs.listen({
      frame: (f) => {
        if (f.type !== 'attach') {
          return
        }
        theirs.hold()
        if (f.resume) {
          acceptor.resumeOn(theirs, f.received)
        } else {
          theirs.send(Buffer.from(attachReply(id, 0)))
          acceptor.attach(theirs, f.received)
        }
      },
      drain: () => {},
      gone: () => {},
    })
  }
  const relink = async (): Promise<Link> => {
    const [theirs, ours] = linkPair()
    links.push([ours, theirs])
    answer(theirs)
    return ours
  }
  const opener = new Session({
    id,
    name: 'opener',
    role: 'opener',
    graceMs: 5_000,
    reconnect: relink,
    ...options,
  })
  const first = (await relink()) as MemoryLink
  const theirs = await handshake(
    first,
    { id, resume: false, received: 0, service: 'test' },
    AbortSignal.timeout(2_000),
  )
  opener.attach(first, theirs)
  const a = collector()
  const b = collector()
  opener.start(a.events)
  acceptor.start(b.events)
  /** A fresh link whose acceptor side answers only when the test says so (its ATTACH waits, held). */
  const relinkLater = (): { ours: MemoryLink; theirs: MemoryLink; answer: () => void } => {
    const [theirs, ours] = linkPair()
    links.push([ours, theirs])
    return { ours, theirs, answer: () => answer(theirs) }
  }
  return { opener, acceptor, a, b, links, relink, relinkLater, current: () => links.at(-1) as MemoryLink[] }
}

function attachReply(id: Uint8Array, received: number): Uint8Array {
  const payload = Buffer.alloc(2 + 16 + 8)
  payload[0] = 1
  payload[1] = 1
  Buffer.from(id).copy(payload, 2)
  payload.writeBigUInt64BE(BigInt(received), 18)
  const header = Buffer.alloc(5)
  header[0] = FRAME.ATTACH
  header.writeUInt32BE(payload.length, 1)
  return Buffer.concat([header, payload])
}

function sha(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex')
}

/** Writes `data` in chunks of `size`, each after the session took the previous (respecting drain). */
async function writeAll(
  session: Session,
  data: Buffer,
  size: number,
  onChunk?: (i: number) => void,
): Promise<void> {
  for (let i = 0; i * size < data.length; i++) {
    onChunk?.(i)
    session.write(data.subarray(i * size, (i + 1) * size))
    await new Promise((resolve) => setImmediate(resolve))
  }
}

async function until(cond: () => boolean): Promise<void> {
  while (!cond()) {
    await new Promise((resolve) => setImmediate(resolve))
  }
}

describe('resumable session', { timeout: 20_000 }, () => {
  it('carries bytes both ways and each direction ends on its own', async () => {
    const { opener, acceptor, a, b } = await openPair()
    const up = randomBytes(300_000)
    const down = randomBytes(100_000)
    await writeAll(opener, up, 64 * 1024)
    opener.end()
    await b.ended
    assert.equal(sha(b.bytes()), sha(up))
    await a.finished
    await writeAll(acceptor, down, 10_000)
    acceptor.end()
    await a.ended
    await b.finished
    assert.equal(sha(a.bytes()), sha(down))
    assert.deepEqual(a.log, ['finish', 'end'])
  })

  it('holds the writer back at the window and lets it go as acknowledgements come', async () => {
    const { opener, a, b } = await openPair({ windowBytes: 64 * 1024 })
    assert.equal(opener.write(Buffer.alloc(60 * 1024)), true)
    assert.equal(opener.write(Buffer.alloc(10 * 1024)), false, 'the window is full')
    await until(() => a.log.includes('drain'))
    assert.equal(b.bytes().length, 70 * 1024)
  })

  it('survives its link going: the opener attaches again, nothing lost, repeated or reordered', async () => {
    const { opener, acceptor, a, b, current } = await openPair()
    const up = randomBytes(2_000_000)
    const down = randomBytes(1_000_000)
    const cutAt = new Set([3, 11, 20])
    const writing = writeAll(
      opener,
      up,
      50_000,
      (i) => cutAt.has(i) && current()[0]?.cut(new Error('test: link cut')),
    )
    await writeAll(acceptor, down, 40_000, (i) => i === 7 && current()[0]?.cut(new Error('test: link cut')))
    await writing
    opener.end()
    acceptor.end()
    await Promise.all([a.ended, b.ended, a.finished, b.finished])
    assert.equal(sha(b.bytes()), sha(up), 'what the acceptor delivered is what the opener wrote')
    assert.equal(sha(a.bytes()), sha(down))
  })

  it('moves to another link while bytes flow, each byte delivered once', async () => {
    const { opener, acceptor, a, b, relink } = await openPair()
    const up = randomBytes(1_000_000)
    const writing = writeAll(opener, up, 20_000, (i) => {
      if (i === 10 || i === 30) {
        void relink().then((link) => opener.moveTo(link, AbortSignal.timeout(2_000)))
      }
    })
    await writeAll(acceptor, Buffer.from('hello over two links'), 4)
    await writing
    opener.end()
    acceptor.end()
    await Promise.all([a.ended, b.ended])
    assert.equal(sha(b.bytes()), sha(up))
    assert.equal(a.bytes().toString(), 'hello over two links')
  })

  it('a move whose handshake is slow: what came meanwhile over the old link is not acknowledged before it came again', async () => {
    // The acceptor's socket is full when the move lands: it sends again from where the opener's
    // ATTACH said, a frame at a time. An ACK of where the opener's reading stands by then, arriving
    // first, made it let go of bytes it still had to send ("index is out of bounds" in CI, a
    // bulk link lost, a stalled session).
    const { opener, acceptor, a, relinkLater } = await openPair()
    const down = randomBytes(1_500_000)
    acceptor.write(down.subarray(0, 100_000))
    await until(() => a.bytes().length === 100_000)
    const next = relinkLater()
    next.theirs.full = true
    const moving = opener.moveTo(next.ours, AbortSignal.timeout(2_000))
    acceptor.write(down.subarray(100_000, 700_000))
    await until(() => a.bytes().length === 700_000)
    next.answer()
    await moving
    await new Promise((resolve) => setTimeout(resolve, 20))
    assert.equal(opener.link, next.ours, 'the move held: no link was lost')
    next.theirs.release()
    acceptor.write(down.subarray(700_000))
    acceptor.end()
    await a.ended
    assert.equal(sha(a.bytes()), sha(down))
    assert.equal(opener.link, next.ours)
  })

  it('a link lost while a move still skips what came twice: the next link skips nothing', async () => {
    const { opener, acceptor, a, relinkLater } = await openPair()
    const down = randomBytes(900_000)
    acceptor.write(down.subarray(0, 100_000))
    await until(() => a.bytes().length === 100_000)
    const next = relinkLater()
    // Only the ATTACH gets through to the opener: the bytes sent again after it never come.
    next.ours.admit = (f) => f.type !== 'data'
    const moving = opener.moveTo(next.ours, AbortSignal.timeout(2_000))
    acceptor.write(down.subarray(100_000, 300_000))
    await until(() => a.bytes().length === 300_000)
    next.answer()
    await moving
    // The link goes with 200 000 bytes still to skip; the opener attaches again (relink) and says
    // it read 300 000, so that is where the acceptor sends from.
    next.ours.cut(new Error('test: the new link went'))
    acceptor.write(down.subarray(300_000))
    acceptor.end()
    await a.ended
    assert.equal(a.bytes().length, down.length)
    assert.equal(sha(a.bytes()), sha(down))
  })

  it('an attach over a new link replaces a live one: the old link is dropped, its late frames count for nothing', async () => {
    const { opener, acceptor, b, relink, current } = await openPair()
    opener.write(Buffer.from('one '))
    await until(() => b.bytes().length === 4)
    const [oldOurs] = current() as [MemoryLink, MemoryLink]
    const next = await relink()
    await opener.moveTo(next, AbortSignal.timeout(2_000))
    // A frame that was still on its way over the old link: the acceptor no longer listens there.
    assert.throws(() => oldOurs.send(Buffer.from([FRAME.DATA, 0, 0, 0, 4, 120, 120, 120, 120])))
    opener.write(Buffer.from('two'))
    opener.end()
    await b.ended
    assert.equal(b.bytes().toString(), 'one two')
    assert.ok(acceptor.attached)
  })

  it('a RESET from the other side fails the session there and here', async () => {
    const { opener, acceptor, a, b } = await openPair()
    acceptor.reset(new Error('the local service went away'))
    const err = await a.failed
    assert.match(err.message, /the local service went away/)
    assert.equal(b.log.length, 0)
    assert.equal(opener.attached, false)
  })

  it('a link that stops answering is probed and left for another', async () => {
    let probes = 0
    const { opener, acceptor, a, b, current } = await openPair({
      probe: async () => {
        probes++
        throw new Error('test: no pong')
      },
    })
    void acceptor
    // The path goes dead without a word: nothing arrives, nothing says so.
    const dead = current()
    ;(dead[1] as MemoryLink).blackhole = true
    opener.write(Buffer.from('lost in the hole, sent again'))
    opener.end()
    await b.ended
    assert.equal(b.bytes().toString(), 'lost in the hole, sent again')
    await a.finished
    assert.ok(probes >= 1)
  })

  it('a link that stops answering is probed a stall time after the first byte it left unacknowledged, however often the local end writes', async () => {
    const stallMs = 200
    const probed: number[] = []
    const { opener, current } = await openPair({
      stallMs,
      probe: async () => {
        probed.push(performance.now())
        throw new Error('test: no pong')
      },
    })
    for (const side of current()) {
      side.blackhole = true
    }
    // An interactive session over a dead path: a keystroke every 50 ms, each well within the
    // stall time of the one before; the first is never acknowledged.
    const started = performance.now()
    for (let i = 0; i < 30 && probed.length === 0; i++) {
      opener.write(Buffer.from('k'))
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    assert.ok(probed.length > 0, 'probed while the keystrokes kept coming')
    const after = (probed[0] as number) - started
    assert.ok(after < stallMs + 150, `probed ${after.toFixed(0)} ms after the first unacknowledged byte`)
  })

  it('resets both sides when the link does not come back within the grace period, and lets go', async () => {
    const { opener, acceptor, a, b, current } = await openPair({
      graceMs: 200,
      reconnect: async () => {
        throw new Error('test: no way to the peer')
      },
    })
    opener.write(Buffer.alloc(100_000))
    current()[0]?.cut(new Error('test: link cut'))
    const [ea, eb] = await Promise.all([a.failed, b.failed])
    assert.ok(ea instanceof SessionExpiredError)
    assert.ok(eb instanceof SessionExpiredError)
    assert.equal(opener.attached, false)
    assert.equal(acceptor.attached, false)
    assert.throws(() => opener.write(Buffer.from('x')), /over/)
  })

  it('the opener gives up at once when the other side no longer knows the session', async () => {
    const id = newSessionId()
    const [theirs, ours] = linkPair()
    theirs.listen({
      frame: () => theirs.send(Buffer.from([FRAME.RESET, 0, 0, 0, 7, ...Buffer.from('unknown')])),
      drain: () => {},
      gone: () => {},
    })
    await assert.rejects(
      handshake(ours, { id, resume: true, received: 0, service: '' }, AbortSignal.timeout(2_000)),
      (err: unknown) => err instanceof SessionRefusedError && /unknown/.test(err.message),
    )
  })

  it('the opener keeps trying, with growing waits, until a link comes; then nothing is lost', async () => {
    let failures = 0
    const tries: number[] = []
    const holder: { relink?: () => Promise<Link> } = {}
    const { opener, acceptor, a, b, current, relink } = await openPair({
      reconnect: async () => {
        tries.push(performance.now())
        if (failures < 4) {
          failures++
          throw new Error('test: no way to the peer yet')
        }
        return (holder.relink as () => Promise<Link>)()
      },
    })
    holder.relink = relink
    const data = randomBytes(300_000)
    current()[0]?.cut(new Error('test: link cut'))
    await writeAll(opener, data, 10_000)
    opener.end()
    await b.ended
    assert.equal(sha(b.bytes()), sha(data))
    assert.equal(tries.length, 5)
    // Each wait at least as long as the one before, minus jitter: backoff, not a busy loop.
    const waits = tries.slice(1).map((t, i) => t - (tries[i] as number))
    assert.ok(
      waits.every((w, i) => i === 0 || w >= (waits[i - 1] as number) * 0.7),
      waits.join(','),
    )
    acceptor.end()
    await a.ended
  })

  it('an ACK for more than was sent is a protocol error: both sides fail, nothing more is delivered', async () => {
    const { opener, a, b, current } = await openPair()
    const [ours] = current()
    // Forged from the acceptor's side of the link: it acknowledges bytes never sent.
    const ack = Buffer.alloc(13)
    ack[0] = FRAME.ACK
    ack.writeUInt32BE(8, 1)
    ack.writeBigUInt64BE(1_000_000n, 5)
    ;(ours as MemoryLink).receive(ack)
    const err = await a.failed
    assert.match(err.message, /acknowledged more than was sent/)
    await b.failed
    assert.equal(opener.state, 'over')
  })
})
