// Bundles the compiled CLI (dist/src, from tsc) into one CommonJS file,
// dist/cli/app.cjs, with npm packages left external (they load on first
// use); copies its loader (scripts/cli-loader.cjs) to dist/cli/main.cjs; and
// writes V8's code cache for the bundle, dist/cli/app.cjs.cache.
//
// Why: a command's start-up is most of what `nestvirt run` adds to QEMU.
// node 20 loads an ES module graph file by file (~1.5 ms a module on a
// small VM, ten times that under TCG, and `run` pulled ~40), and its ESM
// loader and built-in module facades cost more than require(). One CommonJS
// file: `nestvirt ls` 184 -> 155 ms against 114-126 ms for `node -e 0`; the
// code cache then spares compiling it (docs/performance.md). bin/nestvirt
// runs the loader; tests and benches import the per-module build in dist/src.
import { build } from 'esbuild';
import { mkdtemp, readFile, rm, copyFile, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const out = join(root, 'dist', 'cli');
await rm(out, { recursive: true, force: true });
await build({
  absWorkingDir: root,
  entryPoints: ['dist/src/cli/main.js'],
  outfile: 'dist/cli/app.cjs',
  bundle: true,
  format: 'cjs',
  platform: 'node',
  target: 'node20',
  packages: 'external',
  // import.meta.url (version.ts finds package.json by it) as in an ES module.
  define: { 'import.meta.url': '__nestvirtModuleUrl' },
  banner: { js: 'var __nestvirtModuleUrl = require("node:url").pathToFileURL(__filename).href;' },
  // Whitespace and syntax only: a third less to read and deserialise at
  // every start (~3 ms here), names kept for stack traces.
  minifyWhitespace: true,
  minifySyntax: true,
  sourcemap: 'linked',
  logLevel: 'warning',
});

// The loader compiles app.cjs with vm.Script, where import() has no loader
// to call: every dynamic import must have become a require (src/util/lazy.ts).
const app = await readFile(join(out, 'app.cjs'), 'utf8');
const dynamic = app.split('\n').filter((l) => /\bimport\(/.test(l) && !/^\s*(\/\/|\*)/.test(l));
if (dynamic.length > 0) {
  console.error(`bundle: dist/cli/app.cjs still calls import():\n${dynamic.join('\n')}`);
  console.error('  fix: load the module with a static import or through src/util/lazy.ts');
  process.exit(1);
}
await copyFile(join(root, 'scripts', 'cli-loader.cjs'), join(out, 'main.cjs'));

// The code cache: compile app.cjs as the loader does, run the commands whose
// start-up matters (every command's module loads for the root --help) so
// their functions are compiled too, then serialise. Written by this node, so
// valid for the node that runs nestvirt here and in the hypervisor image
// (which ships this same binary).
const loader = createRequire(import.meta.url)(join(out, 'main.cjs'));
const { app: cli, script } = loader.load();
const home = await mkdtemp(join(tmpdir(), 'nestvirt-bundle-'));
const sink = new Writable({ write: (_c, _e, cb) => cb() });
const ctx = {
  out: { stdout: sink, stderr: sink, color: false, interactive: false },
  run: async () => {
    throw new Error('no programs are run while writing the code cache');
  },
  env: { PATH: process.env.PATH, NESTVIRT_HOME: home, NO_COLOR: '1' },
  uid: 0,
};
try {
  for (const argv of [
    ['--help'],
    ['version', '--json'],
    ['ls', '--json'],
    ['ls'],
    ['info', 'absent', '--json'],
    ['image', 'ls', '--json'],
    ['run', '--help'],
  ])
    await cli.main(argv, ctx);
} finally {
  await rm(home, { recursive: true, force: true });
}
await writeFile(loader.CACHE, script.createCachedData());
