/**
 * `nestvirt demo` for real: this machine → a TCG VM with emulated SVM (the
 * `hypervisor` image, running this very nestvirt) → a KVM VM inside it.
 * Images are seeded from the shared test images so the demo reuses them.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, symlink, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runBin, tempHome } from '../helpers/cli.js';
import { seedImage, TEST_CACHE } from '../helpers/images.js';
import type { DemoResult } from '../../src/demo/demo.js';

async function demoHome(): Promise<string> {
  const home = await tempHome('nestvirt-demo-');
  await seedImage(home, 'tiny');
  await seedImage(home, 'hypervisor');
  return home;
}

async function noVmsLeft(home: string): Promise<void> {
  const ls = await runBin(['ls', '--json'], { env: { NESTVIRT_HOME: home } });
  assert.equal(ls.code, 0, ls.stderr);
  assert.deepEqual(JSON.parse(ls.stdout).vms, []);
}

test(
  'demo runs the three-level chain; the innermost VM runs under KVM',
  { timeout: 900_000 },
  async () => {
    const home = await demoHome();
    try {
      const r = await runBin(['demo', '--json'], {
        env: { NESTVIRT_HOME: home, NESTVIRT_CACHE: TEST_CACHE },
        timeoutMs: 880_000,
      });
      const d = JSON.parse(r.stdout) as DemoResult;
      assert.equal(r.code, 0, `${r.stderr}\n${JSON.stringify(d.steps, null, 2)}`);
      assert.equal(d.ok, true);
      assert.equal(d.chain.length, 3);
      assert.deepEqual(
        d.chain.map((c) => c.role),
        ['host', 'outer', 'inner'],
      );
      // This machine is a VM (level 1); the demo's VMs are levels 2 and 3.
      assert.deepEqual(
        d.chain.map((c) => c.level),
        [1, 2, 3],
      );
      assert.equal(d.chain[1]!.accel, 'tcg');
      assert.equal(d.chain[2]!.accel, 'kvm');
      assert.equal(d.innermost?.accel, 'kvm');
      assert.equal(d.innermost?.hypervisor, 'KVM');
      assert.equal(d.innermost?.level, 3);
      assert.ok(d.toInnermostMs! > 0);
      assert.deepEqual(
        d.steps.map((s) => s.id),
        ['doctor', 'images', 'outer', 'outer-doctor', 'inner', 'process', 'cleanup'],
      );
      await noVmsLeft(home);
    } finally {
      await rm(home, { recursive: true, force: true });
    }
  },
);

test(
  'demo --no-nested stops at step 4 with the outer VM doctor explanation',
  { timeout: 600_000 },
  async () => {
    const home = await demoHome();
    try {
      const r = await runBin(['demo', '--no-nested', '--json'], {
        env: { NESTVIRT_HOME: home, NESTVIRT_CACHE: TEST_CACHE },
        timeoutMs: 580_000,
      });
      assert.equal(r.code, 1, r.stderr);
      const d = JSON.parse(r.stdout) as DemoResult;
      const failed = d.steps.find((s) => !s.ok)!;
      assert.equal(failed.id, 'outer-doctor');
      assert.equal(failed.error?.level, 2);
      assert.match(failed.error!.message, /cannot run accelerated VMs/);
      assert.ok(failed.error?.fix, 'doctor gave a fix');
      assert.equal(d.innermost, null);
      await noVmsLeft(home);
      // The person sees the failing level, the reason and the fix.
      const human = await runBin(['demo', '--no-nested'], {
        env: { NESTVIRT_HOME: home, NESTVIRT_CACHE: TEST_CACHE },
        timeoutMs: 580_000,
      });
      assert.equal(human.code, 1);
      assert.match(
        human.stderr,
        /failed at L2 \(nestvirt doctor inside .*\): .*cannot run accelerated VMs/,
      );
      assert.match(human.stderr, /fix: /);
    } finally {
      await rm(home, { recursive: true, force: true });
    }
  },
);

test('demo on a host that can run no guest stops at step 1', { timeout: 120_000 }, async () => {
  // A PATH with every program but QEMU: no KVM here and no TCG either.
  const bin = await mkdtemp(join(tmpdir(), 'nestvirt-noqemu-'));
  const home = await tempHome('nestvirt-demo-');
  try {
    for (const dir of ['/usr/local/bin', '/usr/bin', '/bin', '/usr/sbin', '/sbin'])
      for (const f of await readdir(dir).catch(() => [] as string[]))
        if (!f.startsWith('qemu-system'))
          await symlink(join(dir, f), join(bin, f)).catch(() => undefined);
    const r = await runBin(['demo', '--json'], { env: { NESTVIRT_HOME: home, PATH: bin } });
    assert.equal(r.code, 1, r.stderr);
    const d = JSON.parse(r.stdout) as DemoResult;
    assert.deepEqual(
      d.steps.map((s) => [s.id, s.ok]),
      [['doctor', false]],
    );
    assert.equal(d.chain.length, 1);
    assert.ok(d.steps[0]!.error!.message.length > 0);
  } finally {
    await rm(bin, { recursive: true, force: true });
    await rm(home, { recursive: true, force: true });
  }
});
