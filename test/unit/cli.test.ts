import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runCli, runBin } from '../helpers/cli.js';

test('unknown command: one line, exit 2', async () => {
  const r = await runCli(['frobnicate']);
  assert.equal(r.code, 2);
  assert.match(
    r.stderr,
    /^nestvirt: unknown command "frobnicate"\n  fix: see `nestvirt --help`\n$/,
  );
});

test('unknown flag: one line naming the flag, exit 2', async () => {
  const r = await runCli(['version', '--bogus']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /unknown flag --bogus/);
  assert.doesNotMatch(r.stderr, /at .*\.js/);
});

test('--help lists commands and exits 0; bare nestvirt exits 2', async () => {
  const r = await runCli(['--help']);
  assert.equal(r.code, 0);
  assert.match(r.stdout, /commands:/);
  assert.equal((await runCli([])).code, 2);
});

test('bin/nestvirt runs the built CLI', async () => {
  const r = await runBin(['version', '--json']);
  assert.equal(r.code, 0);
  assert.match(JSON.parse(r.stdout).version, /^\d+\.\d+\.\d+/);
});
