import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runCli, runBin, tempHome } from '../helpers/cli.js';
import { restoreDeferredEnv } from '../../src/cli/main.js';

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

test('bin/nestvirt defers NODE_EXTRA_CA_CERTS for commands without HTTPS, keeps it for image and gcp', async () => {
  // node warns at start-up when it cannot load the file: the warning shows whether it tried.
  const env = { NODE_EXTRA_CA_CERTS: '/nonexistent/extra-ca.pem', NESTVIRT_HOME: await tempHome() };
  const ls = await runBin(['ls', '--json'], { env });
  assert.equal(ls.code, 0, ls.stderr);
  assert.doesNotMatch(ls.stderr, /extra-ca\.pem/);
  const img = await runBin(['image', 'ls', '--json'], { env });
  assert.equal(img.code, 0, img.stderr);
  assert.match(img.stderr, /Ignoring extra certs from .*extra-ca\.pem/);
});

test('the deferred NODE_EXTRA_CA_CERTS goes back into the environment programs inherit', () => {
  const env: NodeJS.ProcessEnv = { NESTVIRT_DEFERRED_CA_CERTS: '/etc/extra.pem', PATH: '/bin' };
  restoreDeferredEnv(env);
  assert.deepEqual(env, { NODE_EXTRA_CA_CERTS: '/etc/extra.pem', PATH: '/bin' });
  const empty: NodeJS.ProcessEnv = { PATH: '/bin' };
  restoreDeferredEnv(empty);
  assert.deepEqual(empty, { PATH: '/bin' });
});
