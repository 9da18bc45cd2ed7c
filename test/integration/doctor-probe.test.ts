/**
 * The probe's paths with real QEMU on this machine: the probe firmware
 * reports what each CPU model offers; a guest that never reaches the exit
 * port is a timeout (what a PVM host's /dev/kvm does to standard guests);
 * QEMU failing to initialise KVM (no /dev/kvm here) is a clear failure.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { run, which } from '../../src/util/exec.js';
import { probeKvm, runProbeGuest } from '../../src/host/probe.js';

test('the probe firmware reports what the guest CPU offers', { timeout: 60_000 }, async () => {
  const bin = (await which('qemu-system-x86_64'))!;
  const max = await runProbeGuest({ run, bin, accel: 'tcg', cpu: 'max', timeoutMs: 20_000 });
  assert.deepEqual(max.sees, { vmx: false, svm: true }, max.result.stderr);
  const plain = await runProbeGuest({
    run,
    bin,
    accel: 'tcg',
    cpu: 'qemu64,-svm',
    timeoutMs: 20_000,
  });
  assert.deepEqual(plain.sees, { vmx: false, svm: false }, plain.result.stderr);
});

test(
  'a guest that never reaches the exit port is a timeout, not a result',
  { timeout: 60_000 },
  async () => {
    const bin = (await which('qemu-system-x86_64'))!;
    const t0 = performance.now();
    const hang = await runProbeGuest({
      run,
      bin,
      accel: 'tcg',
      cpu: 'max',
      timeoutMs: 1500,
      firmware: Buffer.alloc(0x10000, 0xf4),
    });
    assert.equal(hang.timedOut, true);
    assert.equal(hang.sees, null);
    assert.ok(performance.now() - t0 < 15_000, 'the timeout ends QEMU');
  },
);

test(
  "QEMU that cannot initialise KVM: the probe fails at the init stage with QEMU's reason",
  { timeout: 60_000 },
  async () => {
    assert.equal(existsSync('/dev/kvm'), false, 'this machine has no /dev/kvm');
    const p = await probeKvm({ run, arch: 'x86_64' });
    assert.equal(p.ran, true);
    assert.equal(p.ok, false);
    assert.equal(p.stage, 'init');
    assert.match(p.detail, /^QEMU cannot use KVM: .*No such file or directory/);
  },
);
