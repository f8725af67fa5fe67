/**
 * Builds the single executable `dist/peerup` (and `dist/relay-server`, a symlink to it): bundles the
 * sources to one CommonJS file with esbuild, turns it into a SEA blob with this very Node binary,
 * and injects the blob into a copy of that binary with postject. Run with `npm run build`.
 *
 * Options (environment):
 * - PEERUP_BUILD_ENTRY: entry file instead of bin/peerup.js (e.g. a throwaway script for experiments).
 * - PEERUP_BUILD_STRIP=0: keep the binary's symbol table (bigger, but native crashes symbolize).
 * - SOURCE_DATE_EPOCH: build date to embed, for reproducible builds.
 */

import { execFileSync, spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import * as fs from 'node:fs'
import { createRequire } from 'node:module'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
import * as esbuild from 'esbuild'

const root = path.dirname(fileURLToPath(import.meta.url))
const require = createRequire(import.meta.url)
const buildDir = path.join(root, '.build')
const distDir = path.join(root, 'dist')
const bundleFile = path.join(buildDir, 'peerup.cjs')
const blobFile = path.join(buildDir, 'sea-prep.blob')
const seaConfigFile = path.join(buildDir, 'sea-config.json')
const exeFile = path.join(distDir, 'peerup')
// Must match DATACHANNEL_ADDON in src/native/datachannel.ts.
const DATACHANNEL_ASSET = 'node_datachannel.node'
// node-unix-socket's addon: Unix datagram sockets, for sd_notify (src/daemon/notify.ts).
const UNIX_SOCKET_ASSET = 'node_unix_socket.node'
// The web dashboard's files (src/daemon/ui.ts reads them with sea.getAsset under these names).
const UI_DIR = path.join(root, 'src/daemon/ui')
const UI_ASSETS = {
  'ui/index.html': path.join(UI_DIR, 'index.html'),
  'ui/app.js': path.join(UI_DIR, 'app.js'),
  'ui/app.css': path.join(UI_DIR, 'app.css'),
  // The ES module of the QR library `peerup invite` uses, for the browser to import.
  'ui/uqr.mjs': path.join(path.dirname(require.resolve('uqr')), 'index.mjs'),
}
const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2'
// Measured: the V8 code cache cut `--version` from 0.10 s to 0.07 s and `debug selftest` from 0.125 s to
// 0.10 s; with the whole libp2p stack imported eagerly, a cold start went from 0.17 s to 0.10 s. The
// price: V8's cache is not byte-for-byte reproducible, so two builds of one commit differ (without it,
// and with SOURCE_DATE_EPOCH set, the blob is reproducible).
const USE_CODE_CACHE = true

const started = performance.now()

// The blob embeds V8 data of the Node that wrote it: only the same binary can run it.
if (process.versions.node.split('.')[0] !== '24') {
  fail(`run the build with Node 24 (npm run build), not ${process.version}`)
}

// bin/peerup.js, not src/main.ts: main.ts only exports main(), the bin file is what calls it.
const entry = path.resolve(process.env.PEERUP_BUILD_ENTRY ?? path.join(root, 'bin/peerup.js'))
if (!fs.existsSync(entry)) {
  fail(`entry ${entry} does not exist`)
}

const addon = resolveDatachannelAddon()
const addonSha256 = createHash('sha256').update(fs.readFileSync(addon)).digest('hex')
const unixSocketAddon = resolveUnixSocketAddon()
const unixSocketSha256 = createHash('sha256').update(fs.readFileSync(unixSocketAddon)).digest('hex')
const info = {
  version: JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).version,
  commit: gitCommit(),
  buildDate: buildDate(),
}

fs.mkdirSync(buildDir, { recursive: true })
fs.mkdirSync(distDir, { recursive: true })

// 1. Bundle. In a SEA `require()` reaches only built-in modules, so everything else goes in.
let loaderReplacements = 0
let unixSocketReplacements = 0
const result = await esbuild
  .build({
    entryPoints: [entry],
    outfile: bundleFile,
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node24',
    // Bundling renames clashing top-level names (two `TimeoutError` classes become `TimeoutError2`);
    // keepNames keeps `.name` as written for code that reports or compares it.
    keepNames: true,
    // No minifying: it made no measurable difference to start-up (the code cache does the real work),
    // and Node prints the source line of an uncaught error, which in a minified bundle is a megabyte.
    legalComments: 'eof',
    metafile: true,
    // Lets an entry outside the repo (PEERUP_BUILD_ENTRY) find the repo's packages too.
    nodePaths: [path.join(root, 'node_modules')],
    logLevel: 'warning',
    // CJS output has no import.meta: point its fields at what the banner and CommonJS provide.
    banner: { js: "const __peerup_import_meta_url = require('node:url').pathToFileURL(__filename).href;" },
    define: {
      'import.meta.url': '__peerup_import_meta_url',
      'import.meta.filename': '__filename',
      'import.meta.dirname': '__dirname',
      __PEERUP_VERSION__: JSON.stringify(info.version),
      __PEERUP_COMMIT__: JSON.stringify(info.commit),
      __PEERUP_BUILD_DATE__: JSON.stringify(info.buildDate),
      __PEERUP_NATIVE_ASSETS__: JSON.stringify({
        [DATACHANNEL_ASSET]: addonSha256,
        [UNIX_SOCKET_ASSET]: unixSocketSha256,
      }),
    },
    plugins: [
      {
        // node-datachannel finds its addon with a computed require() of a platform package, which a
        // bundle cannot follow and a SEA cannot run. Replace exactly that loader module with one that
        // unpacks the addon embedded as a SEA asset; the rest of the package is bundled unchanged.
        name: 'embed-node-datachannel-addon',
        setup(build) {
          const loaderTs = path.join(root, 'src/native/addon.ts')
          build.onLoad(
            {
              filter: /[\\/]node-datachannel[\\/]dist[\\/](esm|cjs)[\\/]lib[\\/]node-datachannel\.(mjs|cjs)$/,
            },
            (args) => {
              loaderReplacements++
              const call = `loadEmbeddedAddon(${JSON.stringify(DATACHANNEL_ASSET)})`
              // Same export shape as the originals: index.mjs imports the default, index.cjs reads `.default`.
              const contents = args.path.endsWith('.mjs')
                ? `import { loadEmbeddedAddon } from ${JSON.stringify(loaderTs)}\nexport default ${call}\n`
                : `Object.defineProperty(exports, '__esModule', { value: true })\n` +
                  `const { loadEmbeddedAddon } = require(${JSON.stringify(loaderTs)})\nexports.default = ${call}\n`
              return { contents, loader: 'js', resolveDir: path.dirname(args.path) }
            },
          )
        },
      },
      {
        // node-unix-socket (napi-rs) picks its addon with a require() per platform package; replace
        // that one module with the SEA asset loader, like node-datachannel's above.
        name: 'embed-node-unix-socket-addon',
        setup(build) {
          const loaderTs = path.join(root, 'src/native/addon.ts')
          build.onLoad({ filter: /[\\/]node-unix-socket[\\/]js[\\/]addon\.js$/ }, () => {
            unixSocketReplacements++
            return {
              contents:
                `const { loadEmbeddedAddon } = require(${JSON.stringify(loaderTs)})\n` +
                `module.exports = loadEmbeddedAddon(${JSON.stringify(UNIX_SOCKET_ASSET)})\n`,
              loader: 'js',
              resolveDir: root,
            }
          })
        },
      },
    ],
  })
  .catch(() => fail('esbuild failed (errors above)'))
checkBundle(result.metafile)
const escaped = asciiOnly(bundleFile)

// 2. SEA blob, written by this Node binary. Paths relative to the repo (the step runs there): `main`
// is the file name stack traces show, which should not carry the build machine's checkout path.
fs.writeFileSync(
  seaConfigFile,
  `${JSON.stringify(
    {
      main: path.relative(root, bundleFile),
      output: path.relative(root, blobFile),
      disableExperimentalSEAWarning: true,
      useCodeCache: USE_CODE_CACHE,
      assets: {
        [DATACHANNEL_ASSET]: path.relative(root, addon),
        [UNIX_SOCKET_ASSET]: path.relative(root, unixSocketAddon),
        ...Object.fromEntries(
          Object.entries(UI_ASSETS).map(([name, file]) => [name, path.relative(root, file)]),
        ),
      },
      // V8's default young generation (semi-spaces up to 16 MB each) lets a relay or daemon moving
      // 40-60 MB/s leave 60-100 MB of dead buffers between scavenges, and glibc keeps those pages
      // after GC: a relay peaked at 229 MB RSS relaying 1 GiB through SSH. 2 MB semi-spaces keep
      // RSS flat (test/integration/relay/relay-memory.test.ts, test/e2e/mesh.test.ts; see
      // docs/benchmarks.md for the throughput it costs).
      execArgv: ['--max-semi-space-size=2'],
    },
    null,
    2,
  )}\n`,
)
run(process.execPath, ['--experimental-sea-config', seaConfigFile])

// 3. Executable: a copy of this Node, stripped, with the blob injected. Built under a temp name and
// renamed, so a running dist/peerup is never overwritten in place (ETXTBSY) and no half-built file
// is ever left as dist/peerup.
const tmpExe = path.join(distDir, `.peerup.${process.pid}.tmp`)
// A failed step must not leave 120 MB behind (after the rename below this removes nothing).
process.on('exit', () => fs.rmSync(tmpExe, { force: true }))
fs.copyFileSync(process.execPath, tmpExe)
fs.chmodSync(tmpExe, 0o755)
let stripped = false
// Strip before injecting: strip rewrites the ELF and could drop the injected note. It removes only the
// static symbol table; the dynamic symbols addons link against (napi_*) stay. No signature to remove
// on Linux (that step exists for macOS codesign and Windows signtool).
if (process.env.PEERUP_BUILD_STRIP !== '0' && hasCommand('strip')) {
  run('strip', ['--strip-all', tmpExe])
  stripped = true
}
// postject's CLI in a child, under this same Node, so its output can be kept for failures: LIEF prints
// a harmless "Can't find string offset for section name '.note.100'" per note section of the node
// binary (nodejs/postject#83).
run(process.execPath, [
  require.resolve('postject/dist/cli.js'),
  tmpExe,
  'NODE_SEA_BLOB',
  blobFile,
  '--sentinel-fuse',
  SEA_FUSE,
])
fs.renameSync(tmpExe, exeFile)

// The same file is the relay when invoked as relay-server (main.ts dispatches on argv0).
const relayLink = path.join(distDir, 'relay-server')
fs.rmSync(relayLink, { force: true })
fs.symlinkSync('peerup', relayLink)

const size = fs.statSync(exeFile).size
console.log(
  `built ${path.relative(root, exeFile)}: ${(size / 1e6).toFixed(1)} MB${stripped ? ', stripped' : ''}, ` +
    `peerup ${info.version} (${info.commit}, ${info.buildDate}), node ${process.version}, ` +
    `code cache ${USE_CODE_CACHE ? 'on' : 'off'}, ${escaped} non-ASCII characters of comments escaped, addon sha256 ${addonSha256.slice(0, 16)}, ` +
    `in ${((performance.now() - started) / 1000).toFixed(1)} s`,
)

// The SEA keeps the bundle's source in the V8 heap for as long as the process runs (V8 compiles
// functions lazily from it, and the code cache does not replace it). A source with one character
// above U+00FF becomes a two-byte string: the 6.7 MB bundle took 12.9 MB of an idle daemon's heap.
// esbuild escapes every non-ASCII character in code (its default charset, ascii) but copies
// comments as written; escape what is left the same way (`\uXXXX`, which inside a string, regular
// expression or identifier means the character itself, and in a comment is only text). Returns how
// many characters it escaped.
function asciiOnly(file) {
  const source = fs.readFileSync(file, 'utf8')
  let count = 0
  const ascii = source.replace(/[\u0080-\uffff]/g, (c) => {
    count++
    return `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`
  })
  if (count > 0) {
    fs.writeFileSync(file, ascii)
  }
  return count
}

function fail(message) {
  console.error(`build: ${message}`)
  process.exit(1)
}

// The prebuilt addon package node-datachannel itself would load on this machine, resolved from
// node-datachannel's own location (the platform packages are its optional dependencies). The
// platform choice mirrors getPackageName() in node-datachannel's dist/*/lib/node-datachannel.*.
function resolveDatachannelAddon() {
  const fromNdc = createRequire(require.resolve('node-datachannel'))
  const { platform, arch } = process
  let suffix = `${platform}-${arch}`
  if (platform === 'linux') {
    const { familySync, MUSL } = fromNdc('detect-libc')
    suffix += familySync() === MUSL ? '-musl' : '-gnu'
  } else if (platform === 'win32') {
    suffix += '-msvc'
  }
  const pkg = `@node-datachannel/${suffix}`
  try {
    return fromNdc.resolve(pkg)
  } catch (err) {
    fail(
      `cannot find node-datachannel's addon package ${pkg} (optional dependencies not installed?): ${err.message}`,
    )
  }
}

// node-unix-socket's prebuilt addon for this platform (its optional dependency), as its js/addon.js
// would pick it.
function resolveUnixSocketAddon() {
  const fromPkg = createRequire(require.resolve('node-unix-socket'))
  const { platform, arch } = process
  let suffix = `${platform}-${arch}`
  if (platform === 'linux') {
    const musl = !process.report?.getReport()?.header?.glibcVersionRuntime
    suffix += musl ? '-musl' : '-gnu'
  }
  const pkg = `node-unix-socket-${suffix}`
  try {
    return fromPkg.resolve(`${pkg}/node-unix-socket.${suffix}.node`)
  } catch (err) {
    fail(
      `cannot find node-unix-socket's addon package ${pkg} (optional dependencies not installed?): ${err.message}`,
    )
  }
}

function gitCommit() {
  const git = (...args) =>
    execFileSync('git', args, { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
  try {
    const commit = git('rev-parse', '--short=12', 'HEAD').trim()
    return git('status', '--porcelain').trim() === '' ? commit : `${commit}-dirty`
  } catch {
    return 'unknown'
  }
}

function buildDate() {
  const epoch = process.env.SOURCE_DATE_EPOCH
  const date = epoch === undefined || epoch === '' ? new Date() : new Date(Number(epoch) * 1000)
  if (Number.isNaN(date.getTime())) {
    fail(`SOURCE_DATE_EPOCH=${epoch} is not a number of seconds`)
  }
  return date.toISOString().replace(/\.\d{3}Z$/, 'Z')
}

// Runs a build step quietly, showing its output only when it fails.
function run(command, args) {
  const child = spawnSync(command, args, { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
  if (child.status !== 0) {
    process.stderr.write(child.stdout ?? '')
    process.stderr.write(child.stderr ?? '')
    fail(
      `${path.basename(command)} ${args.join(' ')} failed (${child.error?.message ?? `exit ${child.status}`})`,
    )
  }
}

function hasCommand(command) {
  return spawnSync(command, ['--version'], { stdio: 'ignore' }).status === 0
}

// Fails the build when the bundle would break at run time in ways esbuild does not report.
function checkBundle(metafile) {
  const inputs = Object.keys(metafile.inputs)
  // @libp2p/webrtc lists react-native-webrtc; with platform 'node' its "react-native" field is ignored.
  const reactNative = inputs.filter((input) => input.includes('react-native'))
  if (reactNative.length > 0) {
    fail(`bundle pulled in react-native code: ${reactNative.join(', ')}`)
  }
  if (inputs.some((input) => /[\\/]node-unix-socket[\\/]/.test(input)) && unixSocketReplacements === 0) {
    fail(
      "node-unix-socket is bundled but its addon loader was not replaced: did the package's layout change?",
    )
  }
  const usesDatachannel = inputs.some((input) => /[\\/]node-datachannel[\\/]/.test(input))
  if (usesDatachannel && loaderReplacements === 0) {
    fail(
      "node-datachannel is bundled but its addon loader was not replaced: did the package's layout change?",
    )
  }
}
