/**
 * Preloaded into the bench's daemons and relays (`NODE_OPTIONS=--require bench/memprobe.cjs`, which
 * the executable honours): once a second, writes `process.memoryUsage()` and the V8 heap spaces to
 * `$PEERUP_BENCH_MEMFILE`, so the harness can say what an RSS figure is made of. The timer is
 * unref'd and the write is a few hundred bytes; nothing else changes in the process.
 */
const fs = require('node:fs')
const v8 = require('node:v8')

const file = process.env.PEERUP_BENCH_MEMFILE
if (file) {
  const write = () => {
    const spaces = {}
    for (const s of v8.getHeapSpaceStatistics()) {
      spaces[s.space_name] = s.space_used_size
    }
    try {
      fs.writeFileSync(`${file}.tmp`, JSON.stringify({ at: Date.now(), ...process.memoryUsage(), spaces }))
      fs.renameSync(`${file}.tmp`, file)
    } catch {}
  }
  setInterval(write, 1000).unref()
  write()
}
