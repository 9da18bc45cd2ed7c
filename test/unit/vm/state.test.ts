import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdir, writeFile, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { tempHome } from '../../helpers/cli.js';
import { vmPaths, reconcile, pidIsOurs, tailLines } from '../../../src/vm/state.js';
import { writeJson } from '../../../src/state/store.js';
import { listVms } from '../../../src/vm/list.js';
import { chooseAccel, type HostVerdict } from '../../../src/vm/host.js';
import type { VmSpec, VmRuntime } from '../../../src/vm/types.js';
import { NotPossibleError } from '../../../src/errors.js';

function spec(name: string): VmSpec {
  return {
    schema: 1,
    name,
    image: 'tiny',
    cpus: 1,
    memoryMiB: 256,
    nested: false,
    accel: 'auto',
    nics: [{ kind: 'user', forwards: [] }],
    imageFeatures: {
      guestAgent: true,
      sshd: false,
      cloudInit: false,
      kvmModules: true,
      nestvirt: false,
    },
    createdAt: '2026-01-01T00:00:00.000Z',
  };
}

/** A stand-in process (not a VM) whose argv carries the marker, like QEMU's `-pidfile PATH`. */
function standIn(marker: string) {
  return spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)', '--', '-pidfile', marker], {
    stdio: 'ignore',
  });
}

async function defineVm(root: string, name: string, rt: VmRuntime) {
  const p = vmPaths(root, name);
  await mkdir(p.dir, { recursive: true });
  await writeJson(p.spec, spec(name));
  await writeJson(p.runtime, rt);
  return p;
}

test('pidIsOurs: only a live process whose argv carries the marker', async () => {
  const child = standIn('/x/vms/a/qemu.pid');
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(await pidIsOurs(child.pid, '/x/vms/a/qemu.pid'), true);
  assert.equal(await pidIsOurs(child.pid, '/x/vms/b/qemu.pid'), false);
  assert.equal(await pidIsOurs(process.pid, '/x/vms/a/qemu.pid'), false);
  assert.equal(await pidIsOurs(null, 'x'), false);
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
  assert.equal(await pidIsOurs(child.pid, '/x/vms/a/qemu.pid'), false);
});

test('reconcile: recorded running + dead process -> stopped with the last console lines, stale files cleared', async () => {
  const root = await tempHome();
  const p = await defineVm(root, 'gone', {
    state: 'running',
    pid: 2 ** 22 + 7,
    accel: 'tcg',
    startedAt: '2026-01-01T00:00:00Z',
  });
  await writeFile(p.serialLog, 'booting\r\n\x1b[1mline two\x1b[0m\nlast words\n');
  await writeFile(p.pid, String(2 ** 22 + 7));
  await writeFile(p.qmp, '');
  const r = await reconcile(p, { write: 'try' });
  assert.equal(r.runtime.state, 'stopped');
  assert.equal(r.pid, null);
  assert.equal(r.runtime.lastExit?.reason, 'exited');
  assert.deepEqual(r.runtime.lastExit?.consoleTail, ['booting', 'line two', 'last words']);
  const saved = JSON.parse(await readFile(p.runtime, 'utf8')) as VmRuntime;
  assert.equal(saved.state, 'stopped');
  await assert.rejects(stat(p.qmp), /ENOENT/);
  await assert.rejects(stat(p.pid), /ENOENT/);
});

test('reconcile: a reused pid (another program) does not count as the VM', async () => {
  const root = await tempHome();
  const p = await defineVm(root, 'reused', { state: 'running', pid: process.pid, accel: 'tcg' });
  await writeFile(p.pid, String(process.pid));
  const r = await reconcile(p, { write: 'no' });
  assert.equal(r.runtime.state, 'stopped');
});

test('reconcile: a live process with this VM marker is running', async () => {
  const root = await tempHome();
  const p = await defineVm(root, 'alive', { state: 'running', pid: null, accel: 'tcg' });
  const child = standIn(p.pid);
  try {
    await writeFile(p.pid, String(child.pid));
    await new Promise((r) => setTimeout(r, 200));
    const r = await reconcile(p);
    assert.equal(r.runtime.state, 'running');
    assert.equal(r.pid, child.pid);
  } finally {
    child.kill('SIGKILL');
  }
});

test('ls: lists defined VMs, skips half-made dirs, reports unreadable specs', async () => {
  const root = await tempHome();
  await defineVm(root, 'a', { state: 'stopped', pid: null, accel: null });
  await defineVm(root, 'b', { state: 'stopped', pid: null, accel: null });
  await mkdir(join(root, 'vms', 'creating'), { recursive: true });
  await mkdir(join(root, 'vms', '.x.removing-1'), { recursive: true });
  await mkdir(join(root, 'vms', 'broken'), { recursive: true });
  await writeFile(join(root, 'vms', 'broken', 'spec.json'), '{not json');
  const l = await listVms(root);
  assert.deepEqual(
    l.vms.map((v) => v.name),
    ['a', 'b'],
  );
  assert.deepEqual(
    l.errors.map((e) => [e.name, e.code]),
    [['broken', 'vm.corrupt']],
  );
  assert.deepEqual(await listVms(join(root, 'nothing-here')), { vms: [], errors: [] });
});

test('tailLines: strips control codes, keeps the last lines', async () => {
  const root = await tempHome();
  const f = join(root, 'log');
  await writeFile(f, Array.from({ length: 30 }, (_, i) => `l${i}`).join('\r\n') + '\r\n');
  assert.deepEqual(await tailLines(f, 3), ['l27', 'l28', 'l29']);
  assert.deepEqual(await tailLines(join(root, 'none'), 3), []);
});

const chain = {
  level: 1,
  relative: 0,
  chain: [{ level: 1, relative: 0, name: 'h', runner: 'pvm' as const }],
};
const noKvm: HostVerdict = {
  key: 'k',
  kvm: false,
  kvmNested: false,
  reason: 'there is no /dev/kvm',
  fix: 'load kvm_amd',
  nestedReason: null,
  nestedFix: null,
  chain,
};
const kvmNoNest: HostVerdict = {
  ...noKvm,
  kvm: true,
  reason: null,
  fix: null,
  nestedReason: 'kvm_amd nested=0',
  nestedFix: '`nestvirt enable`',
};
const both = { accels: ['tcg', 'kvm'] };

test('accelerator choice: auto falls back with the reason, kvm refuses, nested warns', () => {
  assert.deepEqual(chooseAccel('tcg', false, kvmNoNest, both), { accel: 'tcg', notes: [] });
  const auto = chooseAccel('auto', false, noKvm, both);
  assert.equal(auto.accel, 'tcg');
  assert.deepEqual(auto.notes, [
    'KVM unavailable here: there is no /dev/kvm; using TCG (software emulation)',
  ]);
  assert.throws(
    () => chooseAccel('kvm', false, noKvm, both),
    (e) =>
      e instanceof NotPossibleError &&
      e.message === '--accel kvm is not possible here: there is no /dev/kvm' &&
      e.hint === 'load kvm_amd',
  );
  assert.deepEqual(chooseAccel('auto', false, kvmNoNest, both), { accel: 'kvm', notes: [] });
  const n = chooseAccel('auto', true, kvmNoNest, both);
  assert.equal(n.accel, 'kvm');
  assert.match(n.notes[0]!, /--nested: .*kvm_amd nested=0; fix: `nestvirt enable`/);
  assert.equal(chooseAccel('auto', false, kvmNoNest, { accels: ['tcg'] }).accel, 'tcg');
});
