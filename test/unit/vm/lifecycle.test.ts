import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tempHome, PROJECT_ROOT } from '../../helpers/cli.js';
import {
  createVm,
  startVm,
  rmVm,
  launchSpec,
  type CreateOptions,
  type VmDeps,
} from '../../../src/vm/lifecycle.js';
import { vmPaths, reconcile } from '../../../src/vm/state.js';
import { run } from '../../../src/util/exec.js';
import type { HostVerdict } from '../../../src/vm/host.js';
import type { QemuFeatures } from '../../../src/vm/features.js';

const hostVerdict: HostVerdict = {
  key: 'test',
  kvm: false,
  kvmNested: false,
  reason: 'there is no /dev/kvm',
  fix: 'load the KVM module',
  nestedReason: null,
  nestedFix: null,
  chain: {
    level: 0,
    relative: 0,
    chain: [{ level: 0, relative: 0, name: 'metal', runner: 'bare-metal' }],
  },
};

async function setup() {
  const root = await tempHome();
  const kernel = join(root, 'vmlinux');
  await writeFile(kernel, 'not really a kernel');
  const notes: string[] = [];
  const deps: VmDeps = { root, run, env: process.env, note: (l) => notes.push(l), hostVerdict };
  const opts: CreateOptions = {
    name: 'v',
    kernel,
    cpus: 1,
    memoryMiB: 128,
    nested: false,
    accel: 'auto',
    nics: [{ kind: 'user', forwards: [] }],
  };
  return { root, kernel, deps, opts, notes };
}

test('createVm writes the spec; 20 concurrent creates of one name: exactly one wins', async () => {
  const { root, deps, opts } = await setup();
  const results = await Promise.allSettled(Array.from({ length: 20 }, () => createVm(opts, deps)));
  assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
  for (const r of results)
    if (r.status === 'rejected')
      assert.match(String((r.reason as Error).message), /a VM named "v" already exists/);
  assert.deepEqual(await readdir(join(root, 'vms')), ['v']);
  const spec = JSON.parse(await readFile(join(root, 'vms', 'v', 'spec.json'), 'utf8'));
  assert.equal(spec.kernel, opts.kernel);
  assert.equal(spec.image, null);
  assert.deepEqual(await readdir(join(root, 'locks')), []);
});

test('createVm with --disk-size makes a blank qcow2; the chain for the child is one level down', async () => {
  const { deps, opts } = await setup();
  const spec = await createVm({ ...opts, name: 'd', diskSizeBytes: 2 ** 30 }, deps);
  assert.equal(spec.disk?.sizeBytes, 2 ** 30);
  const info = await run(['qemu-img', 'info', '--output=json', spec.disk!.path]);
  assert.equal(JSON.parse(info.stdout)['virtual-size'], 2 ** 30);
  const l = launchSpec(spec, vmPaths(deps.root, 'd'), 'tcg', hostVerdict);
  assert.deepEqual(l.chain, {
    level: 1,
    relative: 1,
    chain: [
      { level: 0, relative: 0, name: 'metal', runner: 'bare-metal' },
      { level: 1, relative: 1, name: 'd', runner: 'tcg' },
    ],
  });
  assert.deepEqual(l.disks, [{ path: spec.disk!.path, format: 'qcow2' }]);
});

test('startVm: a QEMU that fails at start is reported with its message; the VM stays stopped', async () => {
  const { deps, opts, notes } = await setup();
  await createVm(opts, deps);
  const features: QemuFeatures = {
    binary: join(PROJECT_ROOT, 'test', 'fixtures', 'vm', 'fake-qemu-fails'),
    version: '7.2.0',
    versionNum: [7, 2, 0],
    accels: ['tcg', 'kvm'],
    machines: ['q35'],
    cpuModels: ['max'],
  };
  await assert.rejects(
    startVm('v', { ...deps, features }),
    (e: Error & { code?: string; exitCode?: number }) => {
      assert.equal(e.code, 'vm.qemu-failed');
      assert.equal(e.exitCode, 1);
      assert.match(e.message, /QEMU exited at start \(1\): .*could not load kernel/);
      return true;
    },
  );
  assert.deepEqual(notes, [
    'KVM unavailable here: there is no /dev/kvm; using TCG (software emulation)',
  ]);
  const r = await reconcile(vmPaths(deps.root, 'v'));
  assert.equal(r.runtime.state, 'stopped');
  await rmVm('v', deps);
  assert.deepEqual(await readdir(join(deps.root, 'vms')), []);
});

test("startVm --accel kvm where KVM cannot run: exit 1 with doctor's reason and fix", async () => {
  const { deps, opts } = await setup();
  await createVm({ ...opts, accel: 'kvm' }, deps);
  const features: QemuFeatures = {
    binary: '/bin/false',
    version: '7.2.0',
    versionNum: [7, 2, 0],
    accels: ['tcg', 'kvm'],
    machines: ['q35'],
    cpuModels: ['max'],
  };
  await assert.rejects(
    startVm('v', { ...deps, features }),
    (e: Error & { hint?: string; exitCode?: number }) => {
      assert.equal(e.message, '--accel kvm is not possible here: there is no /dev/kvm');
      assert.equal(e.hint, 'load the KVM module');
      assert.equal(e.exitCode, 1);
      return true;
    },
  );
});
