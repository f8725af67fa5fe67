/**
 * patches/node-datachannel+0.33.4.patch: the polyfill's data channel delivers its messages in an event
 * of its own, not in Node's global MessageEvent, whose first use loads all of undici (about 8 MB of
 * memory kept by every daemon that once used WebRTC). Two peer connections in a child process (so
 * that nothing the test runner loaded counts) exchange a string and binary data over loopback.
 */

import * as assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { describe, it } from 'node:test'
import { promisify } from 'node:util'

const CHILD = `
const { RTCPeerConnection } = await import('node-datachannel/polyfill')
const { cleanup } = await import('node-datachannel')
const a = new RTCPeerConnection({ iceServers: [] })
const b = new RTCPeerConnection({ iceServers: [] })
a.onicecandidate = (e) => { if (e.candidate) b.addIceCandidate(e.candidate).catch(() => {}) }
b.onicecandidate = (e) => { if (e.candidate) a.addIceCandidate(e.candidate).catch(() => {}) }
const received = []
const done = new Promise((resolve) => {
  b.ondatachannel = ({ channel }) => {
    channel.binaryType = 'arraybuffer'
    channel.onmessage = (e) => {
      received.push({
        isEvent: e instanceof Event,
        type: e.type,
        data: typeof e.data === 'string' ? e.data : [...new Uint8Array(e.data)],
      })
      if (received.length === 2) resolve()
    }
  }
})
const channel = a.createDataChannel('test')
channel.onopen = () => {
  channel.send('hello')
  channel.send(new Uint8Array([1, 2, 3]))
}
await a.setLocalDescription(await a.createOffer())
await b.setRemoteDescription(a.localDescription)
await b.setLocalDescription(await b.createAnswer())
await a.setRemoteDescription(b.localDescription)
await done
a.close()
b.close()
cleanup()
const undici = process.moduleLoadList.some((m) => m.includes('undici'))
console.log(JSON.stringify({ received, undici }))
`

describe('node-datachannel polyfill (patched)', () => {
  it('delivers messages without loading undici', { timeout: 30_000 }, async () => {
    const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', CHILD], {
      timeout: 25_000,
      killSignal: 'SIGKILL',
    })
    const out = JSON.parse(stdout.trim().split('\n').at(-1) ?? '{}')
    assert.deepEqual(out.received, [
      { isEvent: true, type: 'message', data: 'hello' },
      { isEvent: true, type: 'message', data: [1, 2, 3] },
    ])
    assert.equal(out.undici, false, 'the first message loaded undici (the MessageEvent global)')
  })
})
