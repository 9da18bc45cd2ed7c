'use strict';
// nestvirt's entry, copied to dist/cli/main.cjs by scripts/bundle.mjs (and
// run by bin/nestvirt): compiles the bundled CLI, app.cjs, with V8's code
// cache for it, app.cjs.cache, and runs the command.
//
// Why: compiling the 0.5 MB bundle was ~20 ms of every command's start and
// the functions a command then calls another ~5 ms (ten times that under
// TCG, as inside the demo's outer VM); from the cache, ~7 ms in all
// (docs/performance.md). The cache is written at build time by this same
// node; V8 checks it against the source and its own version and flags, and
// a rejected or missing cache only means compiling as usual.
const { readFileSync } = require('node:fs');
const { Script } = require('node:vm');
const { createRequire, wrap } = require('node:module');
const { dirname, join } = require('node:path');

const APP = join(__dirname, 'app.cjs');
const CACHE = APP + '.cache';

/** Loads app.cjs the way require() would; returns its exports and the compiled script. */
function load() {
  let cachedData;
  try {
    cachedData = readFileSync(CACHE);
  } catch {
    cachedData = undefined;
  }
  const script = new Script(wrap(readFileSync(APP, 'utf8')), { filename: APP, cachedData });
  const mod = { exports: {}, filename: APP, id: APP, loaded: false };
  script.runInThisContext().call(mod.exports, mod.exports, createRequire(APP), mod, APP, dirname(APP));
  mod.loaded = true;
  return { app: mod.exports, script };
}

module.exports = { load, APP, CACHE };

if (require.main === module) {
  if (process.env.NESTVIRT_TRACE) process.stderr.write(`trace ${performance.now().toFixed(1)} ms node started\n`);
  // Exit as soon as the command is done (its exit code is in
  // process.exitCode): nothing is left to wait for, and stdout/stderr writes
  // are synchronous on Linux (files, pipes, terminals).
  load()
    .app.cli()
    .then(() => process.exit());
}
