// Bundles the compiled CLI (dist/src, from tsc) into one CommonJS file,
// dist/cli/main.cjs, with npm packages left external (they load on first use).
//
// Why: a command's start-up is most of what `nestvirt run` adds to QEMU.
// node 20 loads an ES module graph file by file (~1.5 ms a module on a
// small VM, ten times that under TCG, and `run` pulled ~40), and its ESM
// loader and built-in module facades cost more than require(). One CommonJS
// file: `nestvirt ls` 184 -> 155 ms against 114-126 ms for `node -e 0`
// (docs/performance.md). bin/nestvirt runs it; tests and benches import
// the per-module build in dist/src.
import { build } from 'esbuild';
import { rm } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
await rm(`${root}dist/cli`, { recursive: true, force: true });
await build({
  absWorkingDir: root,
  entryPoints: ['dist/src/cli/main.js'],
  outfile: 'dist/cli/main.cjs',
  bundle: true,
  format: 'cjs',
  platform: 'node',
  target: 'node20',
  packages: 'external',
  // import.meta.url (version.ts finds package.json by it) as in an ES module.
  define: { 'import.meta.url': '__nestvirtModuleUrl' },
  banner: { js: 'var __nestvirtModuleUrl = require("node:url").pathToFileURL(__filename).href;' },
  sourcemap: 'linked',
  logLevel: 'warning',
});
