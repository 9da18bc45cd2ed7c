/**
 * The VM lifecycle with real QEMU (TCG here) and the built-in tiny image:
 * run --wait, exec (output and exit code), a port forward, console attach
 * and detach on a pty, logs, stop (ACPI), start, a QEMU killed with -9
 * reconciled, rm.
 */
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, stat, readdir } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { vmTestHome, json, onPty, type VmTestHome } from './vm-helpers.js';
import type { VmInfo } from '../../src/vm/types.js';

let h: VmTestHome;
before(async () => {
  h = await vmTestHome();
});
after(async () => {
  await h?.cleanup();
});

function httpGet(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/hostname', timeout: 10_000 }, (res) => {
      let body = '';
      res.on('data', (b: Buffer) => (body += b.toString()));
      res.on('end', () => resolve(body));
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.end();
  });
}

test('tiny: run --wait, exec, port forward, console, logs, stop, start, kill -9 reconciled, restart, rm', async () => {
  const port = 20000 + Math.floor(Math.random() * 20000);
  const run = await h.nv([
    'run',
    'tiny',
    '--name',
    'life',
    '--wait',
    '--port',
    `${port}:8080`,
    '--json',
  ]);
  assert.equal(run.code, 0, run.stderr);
  const vm = json<VmInfo & { readyMs: number }>(run);
  assert.equal(vm.status, 'running');
  assert.ok(vm.readyMs > 0 && vm.readyMs < 300_000);
  assert.ok(vm.pid! > 0);
  assert.deepEqual(vm.ports, [
    { proto: 'tcp', hostAddr: '127.0.0.1', hostPort: port, guestPort: 8080 },
  ]);
  assert.equal(vm.level, vm.chain!.chain.at(-1)!.level);
  assert.equal(vm.chain!.chain.at(-1)!.name, 'life');
  if (vm.accel.effective === 'tcg' && vm.accel.requested === 'auto')
    assert.match(run.stderr, /KVM unavailable here: .+; using TCG \(software emulation\)/);

  // exec: stdout, stderr and the exit code come back.
  const ex = await h.nv([
    'exec',
    'life',
    '--',
    'sh',
    '-c',
    'echo out-$((20+22)); echo err-line >&2; exit 7',
  ]);
  assert.equal(ex.code, 7);
  assert.equal(ex.stdout, 'out-42\n');
  assert.equal(ex.stderr, 'err-line\n');
  const exj = json<{ exitCode: number; stdout: string; stderr: string }>(
    await h.nv(['exec', 'life', '--json', '--', 'hostname']),
  );
  assert.deepEqual(exj, { exitCode: 0, signal: null, stdout: 'life\n', stderr: '' });
  const nf = await h.nv(['exec', 'life', '--', 'no-such-program']);
  assert.equal(nf.code, 127);
  assert.match(nf.stderr, /cannot run "no-such-program"/);

  // port forward: a web server in the guest, reached on the host's loopback.
  // (the daemon must not hold the agent's output pipes, or guest-exec never ends)
  const srv = await h.nv([
    'exec',
    'life',
    '--',
    'sh',
    '-c',
    'mkdir -p /tmp/www && hostname >/tmp/www/hostname && busybox httpd -p 8080 -h /tmp/www </dev/null >/dev/null 2>&1',
  ]);
  assert.equal(srv.code, 0, srv.stderr);
  assert.equal(await httpGet(port), 'life\n');

  // console on a pty: keys reach the guest shell, Ctrl-] detaches, the terminal is restored.
  const pty = onPty(['console', 'life'], h.env, '; stty -a');
  await pty.expect(/detach with Ctrl-\]/);
  pty.write('\r');
  pty.write('echo con-$((6*7))\r');
  await pty.expect(/con-42/);
  const second = await h.nv(['console', 'life']);
  assert.equal(second.code, 1);
  assert.match(second.stderr, /console is in use by another client/);
  pty.write(Buffer.from([0x1d]));
  await pty.expect(/Detached from VM life's console/);
  assert.equal(await pty.exited, 0);
  assert.match(pty.output(), /[^-]icanon/, 'the terminal is back in canonical mode after detach');
  assert.equal(json<VmInfo>(await h.nv(['info', 'life', '--json'])).status, 'running');

  // console with piped input (no TTY) answers and returns.
  const piped = await h.nv(['console', 'life'], { input: 'echo pipe-$((2*21))\n' });
  assert.equal(piped.code, 0);
  assert.match(piped.stdout, /pipe-42/);

  // logs: the console output, kept.
  const logs = await h.nv(['logs', 'life']);
  assert.match(logs.stdout, /nestvirt-guest-ready/);
  assert.match(logs.stdout, /con-42/);
  assert.equal(
    json<{ lines: string[] }>(await h.nv(['logs', 'life', '-n', '2', '--json'])).lines.length,
    2,
  );

  // stop: the guest powers off on the ACPI button.
  const stop = json<{ how: string }>(await h.nv(['stop', 'life', '--json']));
  assert.equal(stop.how, 'powerdown');
  const stopped = json<VmInfo>(await h.nv(['info', 'life', '--json']));
  assert.equal(stopped.status, 'stopped');
  assert.equal(stopped.lastExit?.reason, 'stopped');
  for (const f of ['qmp.sock', 'qga.sock', 'serial.sock', 'qemu.pid'])
    await assert.rejects(stat(join(stopped.dir, f)), /ENOENT/, `${f} removed after stop`);
  const exStopped = await h.nv(['exec', 'life', '--', 'true']);
  assert.equal(exStopped.code, 1);
  assert.match(exStopped.stderr, /VM life is not running/);

  // start again, then QEMU killed with -9 behind nestvirt's back.
  const st = await h.nv(['start', 'life', '--wait', '--json']);
  assert.equal(st.code, 0, st.stderr);
  assert.equal((await h.nv(['exec', 'life', '--', 'true'])).code, 0);
  const pid = Number((await readFile(join(stopped.dir, 'qemu.pid'), 'utf8')).trim());
  process.kill(pid, 'SIGKILL');
  await new Promise((r) => setTimeout(r, 300));
  const ls = json<{ vms: VmInfo[] }>(await h.nv(['ls', '--json']));
  const dead = ls.vms.find((v) => v.name === 'life')!;
  assert.equal(dead.status, 'stopped');
  assert.equal(dead.lastExit?.reason, 'exited');
  assert.ok(dead.lastExit!.consoleTail.length > 0);
  assert.match(dead.lastExit!.consoleTail.join('\n'), /nestvirt-guest-ready|login|#/);
  const infoText = await h.nv(['info', 'life']);
  assert.match(infoText.stdout, /QEMU ended without nestvirt/);
  assert.match(infoText.stdout, /last console lines:/);

  // the stale state blocks nobody: restart (stop is a no-op now, then start) and remove.
  const rs = json<{ stop: { how: string }; start: { pid: number; readyMs: number } }>(
    await h.nv(['restart', 'life', '--force', '--wait', '--json']),
  );
  assert.equal(rs.stop.how, 'none');
  assert.ok(rs.start.pid > 0 && rs.start.readyMs > 0);
  assert.equal((await h.nv(['exec', 'life', '--', 'true'])).code, 0);
  const rmRunning = await h.nv(['rm', 'life']);
  assert.equal(rmRunning.code, 1);
  assert.match(rmRunning.stderr, /VM life is running/);
  const rm = await h.nv(['rm', '--force', 'life']);
  assert.equal(rm.code, 0, rm.stderr);
  assert.deepEqual(
    (await readdir(join(h.home, 'vms'))).filter((n) => n.includes('life')),
    [],
  );
});

test('--nested under TCG: kvm_amd loads with nested=1 and /dev/kvm appears; the chain is in fw_cfg', async () => {
  const run = await h.nv(['run', 'tiny', '--name', 'nest', '--nested', '--wait', '--json']);
  assert.equal(run.code, 0, run.stderr);
  const vm = json<VmInfo>(run);
  const r = await h.nv([
    'exec',
    'nest',
    '--',
    'sh',
    '-c',
    'modprobe kvm_amd || modprobe kvm_intel; cat /sys/module/kvm_amd/parameters/nested 2>/dev/null || cat /sys/module/kvm_intel/parameters/nested; test -c /dev/kvm && echo kvm-device',
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^(1|Y)\nkvm-device\n$/);
  const c = await h.nv([
    'exec',
    'nest',
    '--',
    'cat',
    '/sys/firmware/qemu_fw_cfg/by_name/opt/org.nestvirt/chain/raw',
  ]);
  assert.equal(c.code, 0, c.stderr);
  const chain = JSON.parse(c.stdout) as {
    level: number | null;
    relative: number;
    chain: { name: string; runner: string }[];
  };
  assert.deepEqual(chain, vm.chain);
  assert.equal(chain.chain.at(-1)!.name, 'nest');
  assert.equal(chain.chain.at(-1)!.runner, vm.accel.effective);
  assert.equal((await h.nv(['rm', '--force', 'nest'])).code, 0);
});

test('20 concurrent runs with one name: exactly one succeeds, the others fail with one line, nothing left over', async () => {
  const results = await Promise.all(
    Array.from({ length: 20 }, () =>
      h.nv(['run', 'tiny', '--name', 'race', '--no-start'], { timeoutMs: 180_000 }),
    ),
  );
  const ok = results.filter((r) => r.code === 0);
  assert.equal(ok.length, 1, results.map((r) => `${r.code}: ${r.stderr}`).join('\n'));
  for (const r of results.filter((x) => x.code !== 0)) {
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /^nestvirt: a VM named "race" already exists\n  fix: .+\n$/);
  }
  assert.deepEqual(
    (await readdir(join(h.home, 'vms'))).filter(
      (n) => n.startsWith('race') || n.startsWith('.race'),
    ),
    ['race'],
  );
  const locks = (await readdir(join(h.home, 'locks')).catch(() => [] as string[])).filter((l) =>
    l.startsWith('vm.'),
  );
  assert.deepEqual(locks, []);
  const info = json<VmInfo>(await h.nv(['info', 'race', '--json']));
  assert.equal(info.status, 'stopped');
  assert.equal((await h.nv(['rm', 'race'])).code, 0);
});
