/** The frames of flow-controlled service streams (src/proxy/flow.ts). */

import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import {
  creditFrame,
  dataFrame,
  FlowFrameError,
  FrameParser,
  finFrame,
  flowControlledProtocol,
  isFlowControlled,
} from '../../../src/proxy/flow.ts'

describe('flow-control frames', () => {
  it('parse back whatever way the bytes are cut', () => {
    const payload = new Uint8Array(70_000).map((_, i) => i % 251)
    const wire = Buffer.concat([dataFrame(payload).subarray(), creditFrame(123_456), finFrame()])
    for (const cut of [1, 7, 4096, 65_536, wire.length]) {
      const parser = new FrameParser()
      const frames = []
      for (let i = 0; i < wire.length; i += cut) {
        frames.push(...parser.push(wire.subarray(i, i + cut)))
      }
      assert.equal(frames.length, 3, `cut every ${cut} bytes`)
      assert.deepEqual(frames[0]?.type === 'data' && Buffer.from(frames[0].payload), Buffer.from(payload))
      assert.deepEqual(frames[1], { type: 'credit', bytes: 123_456 })
      assert.deepEqual(frames[2], { type: 'fin' })
    }
  })

  it('refuse what is not a frame', () => {
    for (const bad of [
      Buffer.from([9, 0, 0, 0, 0]),
      Buffer.from([0, 0xff, 0xff, 0xff, 0xff]), // a payload over FLOW_MAX_FRAME_BYTES
      Buffer.from([1, 0, 0, 0, 2, 0, 0]),
      Buffer.from([2, 0, 0, 0, 1, 0]),
    ]) {
      assert.throws(() => new FrameParser().push(bad), FlowFrameError)
    }
  })

  it('name their protocol apart from the plain one', () => {
    assert.equal(flowControlledProtocol('ssh'), '/peerup/ssh/fc/1.0.0')
    assert.equal(isFlowControlled('/peerup/ssh/fc/1.0.0'), true)
    assert.equal(isFlowControlled('/peerup/ssh/1.0.0'), false)
    assert.equal(isFlowControlled(undefined), false)
  })
})
