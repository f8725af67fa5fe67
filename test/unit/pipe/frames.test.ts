/** The one frame codec of the data plane (src/pipe/frames.ts). */

import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { FrameError } from '../../../src/pipe/errors.ts'
import { creditFrame, dataFrame, FRAME, FrameParser, finFrame, resetFrame } from '../../../src/pipe/frames.ts'
import { flowControlledProtocol, isFlowControlled } from '../../../src/pipe/stream.ts'

const ALL = [FRAME.DATA, FRAME.FIN, FRAME.RESET, FRAME.CREDIT]

describe('frames', () => {
  it('parse back whatever way the bytes are cut', () => {
    const payload = new Uint8Array(70_000).map((_, i) => i % 251)
    const wire = Buffer.concat([
      dataFrame(payload).subarray(),
      creditFrame(123_456),
      finFrame(),
      resetFrame('the far side failed\nand more'),
    ])
    for (const cut of [1, 7, 4096, 65_536, wire.length]) {
      const parser = new FrameParser(1024 * 1024, ALL)
      const frames = []
      for (let i = 0; i < wire.length; i += cut) {
        frames.push(...parser.push(wire.subarray(i, i + cut)))
      }
      assert.equal(frames.length, 4, `cut every ${cut} bytes`)
      assert.deepEqual(
        frames[0]?.type === 'data' && Buffer.from(frames[0].payload.subarray()),
        Buffer.from(payload),
      )
      assert.deepEqual(frames[1], { type: 'credit', bytes: 123_456 })
      assert.deepEqual(frames[2], { type: 'fin' })
      // One line of reason: what a user will read.
      assert.deepEqual(frames[3], { type: 'reset', reason: 'the far side failed' })
    }
  })

  it('refuse what is not a frame, or not one this connection carries', () => {
    for (const [bad, types] of [
      [Buffer.from([9, 0, 0, 0, 0]), ALL],
      [Buffer.from([0, 0, 0x10, 0, 1]), ALL], // a payload over the limit
      [Buffer.from([FRAME.FIN, 0, 0, 0, 2, 0, 0]), ALL],
      [Buffer.from([FRAME.CREDIT, 0, 0, 0, 1, 0]), ALL],
      [Buffer.from(creditFrame(5)), [FRAME.DATA, FRAME.FIN, FRAME.RESET]],
      [Buffer.from(resetFrame('x')), [FRAME.DATA, FRAME.FIN, FRAME.CREDIT]],
    ] as const) {
      assert.throws(() => new FrameParser(1024 * 1024, types).push(bad), FrameError)
    }
  })

  it('flow-controlled services have a protocol of their own', () => {
    assert.equal(flowControlledProtocol('ssh'), '/peerup/ssh/fc/1.0.0')
    assert.equal(isFlowControlled('/peerup/ssh/fc/1.0.0'), true)
    assert.equal(isFlowControlled('/peerup/ssh/1.0.0'), false)
    assert.equal(isFlowControlled(undefined), false)
  })
})
