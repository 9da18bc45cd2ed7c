/**
 * `bin/nestvirt doctor --json` on this very machine: a Firecracker microVM
 * under PVM with kvm_pvm built in but not binding and no /dev/kvm. The TCG
 * probe really boots the probe firmware under QEMU (-cpu max). Also checks
 * that --capture writes a tarball `--root` reads back to the same verdict.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runBin } from '../helpers/cli.js';
import { run } from '../../src/util/exec.js';

test(
  'doctor on this machine: level 1 under PVM, kvm_pvm, no accelerated VMs, TCG fallback probed',
  { timeout: 60_000 },
  async () => {
    const r = await runBin(['doctor', '--json'], { timeoutMs: 50_000 });
    assert.equal(r.code, 1, r.stderr);
    const j = JSON.parse(r.stdout);
    assert.equal(j.schemaVersion, 1);
    assert.equal(j.level, 1);
    assert.equal(j.cpu.arch, 'x86_64');
    assert.equal(j.machine.virtual, true);
    assert.equal(j.machine.hypervisor, 'pvm');
    assert.equal(j.kvm.module, 'kvm_pvm');
    assert.equal(j.kvm.device, false);
    // kvm_pvm's own line says so until it leaves the ring buffer (hours of
    // VMs on this machine); then the same verdict is inferred.
    const said = (j.kernel.messages as string[]).some((l) => /kvm-pvm: .*not binding/.test(l));
    assert.equal(j.kvm.pvmNotBinding, said);
    if (!said)
      assert.ok(
        (j.machine.evidence as string[]).some((e) => /^inferred: kvm_pvm is present/.test(e)),
        JSON.stringify(j.machine.evidence),
      );
    assert.equal(j.verdict.acceleratedVMs, false);
    assert.equal(j.verdict.acceleratedNestedVMs, false);
    assert.equal(j.verdict.problems[0].id, 'kvm.pvm-guest');
    assert.equal(j.verdict.fallback.accel, 'tcg');
    assert.equal(j.verdict.fallback.nestedInGuest, true);
    // The TCG probe really ran a guest, and that guest saw SVM.
    assert.equal(j.tcg.probe.ran, true);
    assert.equal(j.tcg.probe.ok, true, j.tcg.probe.detail);
    assert.deepEqual(j.tcg.probe.guestSees, { vmx: false, svm: true });
    assert.equal(j.verdict.fallback.works, true);
    assert.equal(j.kvm.probe.ran, false);
    assert.equal(j.kvm.probe.stage, 'device');
  },
);

test(
  '--capture writes a tarball that --root reads back to the same verdict',
  { timeout: 60_000 },
  async () => {
    const dir = await mkdtemp(join(tmpdir(), 'nv-capture-'));
    try {
      const file = join(dir, 'doctor.tar.gz');
      const c = await runBin(['doctor', '--capture', file], { timeoutMs: 50_000 });
      assert.equal(c.code, 1, c.stderr);
      assert.match(
        c.stdout,
        /captured \d+ files to .*doctor\.tar\.gz: attach it to your bug report/,
      );
      const tree = join(dir, 'tree');
      await mkdir(tree);
      await run(['tar', '-xzf', file, '-C', tree]);
      const list = (await run(['tar', '-tzf', file])).stdout;
      for (const p of [
        './proc/cpuinfo',
        './nestvirt/doctor.json',
        './nestvirt/dmesg.txt',
        './nestvirt/uname.txt',
        './sys/module/kvm_pvm/',
      ])
        assert.ok(list.includes(p), `capture holds ${p}`);
      const r = await runBin(['doctor', '--json', '--root', tree]);
      assert.equal(r.code, 1, r.stderr);
      const j = JSON.parse(r.stdout);
      assert.equal(j.kvm.module, 'kvm_pvm');
      assert.equal(j.machine.hypervisor, 'pvm');
      assert.deepEqual(
        j.verdict.problems.map((p: { id: string }) => p.id),
        ['kvm.pvm-guest'],
      );
      assert.equal(j.kvm.probe, null);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  },
);

test(
  'chooseAccel (for --accel auto) picks TCG here, whose guests can nest',
  { timeout: 60_000 },
  async () => {
    const { chooseAccel } = await import('../../src/host/doctor.js');
    const c = await chooseAccel({ run });
    assert.equal(c.accel, 'tcg');
    assert.equal(c.nested, true);
    assert.equal(c.report.tcg.probe?.ok, true);
  },
);

test('--no-probe skips both probes and still gives the verdict', { timeout: 30_000 }, async () => {
  const r = await runBin(['doctor', '--json', '--no-probe']);
  assert.equal(r.code, 1);
  const j = JSON.parse(r.stdout);
  assert.equal(j.kvm.probe, null);
  assert.equal(j.tcg.probe, null);
  assert.equal(j.verdict.fallback.works, null);
  assert.equal(j.verdict.problems[0].id, 'kvm.pvm-guest');
});
