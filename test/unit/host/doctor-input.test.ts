/** Bad input to doctor: one clear line on stderr, exit 2, no stack trace. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, writeFile, chmod, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli, runBin, binForOtherUsers } from '../../helpers/cli.js';
import { run } from '../../../src/util/exec.js';

function oneLineError(stderr: string, re: RegExp): void {
  const lines = stderr.trimEnd().split('\n');
  assert.ok(lines.length <= 2, `at most the message and its fix, got:\n${stderr}`);
  assert.match(lines[0]!, re);
  assert.doesNotMatch(stderr, /\n\s+at /, 'no stack trace');
}

test('unknown flag', async () => {
  const r = await runCli(['doctor', '--frobnicate']);
  assert.equal(r.code, 2);
  oneLineError(r.stderr, /^nestvirt: doctor: unknown flag --frobnicate$/);
});

test('--root that does not exist', async () => {
  const r = await runCli(['doctor', '--root', '/nonexistent/nestvirt-tree']);
  assert.equal(r.code, 2);
  oneLineError(r.stderr, /--root \/nonexistent\/nestvirt-tree: not a readable directory/);
});

test('--root that is a file', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'nv-doctor-'));
  try {
    await writeFile(join(dir, 'f'), 'x');
    const r = await runCli(['doctor', '--root', join(dir, 'f')]);
    assert.equal(r.code, 2);
    oneLineError(r.stderr, /not a (readable )?directory/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('--root without proc/cpuinfo', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'nv-doctor-'));
  try {
    const r = await runCli(['doctor', '--json', '--root', dir]);
    assert.equal(r.code, 2);
    assert.equal(r.stdout, '');
    oneLineError(r.stderr, /proc\/cpuinfo: not a captured tree/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('--root with garbage cpuinfo', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'nv-doctor-'));
  try {
    await mkdir(join(dir, 'proc'));
    await writeFile(
      join(dir, 'proc', 'cpuinfo'),
      'hello world\nthis is not a cpuinfo\n\x00\x01\x02',
    );
    const r = await runBin(['doctor', '--root', dir]);
    assert.equal(r.code, 2);
    oneLineError(r.stderr, /has no recognisable CPU description/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('--root that is not readable by the invoking user', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'nv-doctor-'));
  try {
    await mkdir(join(dir, 'tree', 'proc'), { recursive: true });
    await writeFile(
      join(dir, 'tree', 'proc', 'cpuinfo'),
      'vendor_id : GenuineIntel\nflags : fpu vmx\n',
    );
    await chmod(join(dir, 'tree'), 0o700);
    await chmod(dir, 0o755);
    // Root ignores permission bits: run the CLI as nobody (setpriv, util-linux).
    const argv = [await binForOtherUsers(), 'doctor', '--root', join(dir, 'tree')];
    const cmd =
      process.getuid?.() === 0
        ? ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', ...argv]
        : argv;
    const r = await run(cmd, { check: false, env: { ...process.env, NO_COLOR: '1' } });
    assert.equal(r.code, 2, r.stderr);
    oneLineError(r.stderr, /not a readable directory/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('--capture with --root is refused', async () => {
  const r = await runCli(['doctor', '--root', '/', '--capture', '/tmp/x.tar.gz']);
  assert.equal(r.code, 2);
  oneLineError(r.stderr, /cannot be combined with --root/);
});

test('--capture into a missing directory', async () => {
  const r = await runCli(['doctor', '--no-probe', '--capture', '/nonexistent/dir/c.tar.gz']);
  assert.equal(r.code, 2);
  oneLineError(r.stderr, /directory \/nonexistent\/dir does not exist/);
});

test('--capture into a directory the user cannot write', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'nv-doctor-'));
  try {
    await chmod(dir, 0o555);
    const argv = [
      await binForOtherUsers(),
      'doctor',
      '--no-probe',
      '--capture',
      join(dir, 'c.tar.gz'),
    ];
    const cmd =
      process.getuid?.() === 0
        ? ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', ...argv]
        : argv;
    const r = await run(cmd, { check: false, env: { ...process.env, NO_COLOR: '1' } });
    assert.equal(r.code, 2, r.stderr);
    oneLineError(r.stderr, /is not writable/);
  } finally {
    await chmod(dir, 0o755);
    await rm(dir, { recursive: true, force: true });
  }
});
