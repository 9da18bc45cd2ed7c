/** The pure parts: cpuinfo parsing, module parameters, the probe firmware, and verdict cases fixtures can't show. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { parseCpuinfo, cpuExtension } from '../../../src/host/cpuinfo.js';
import { parseBoolParam } from '../../../src/host/modules.js';
import { probeFirmware, decodeProbeExit, PROBE_EXIT_CODES } from '../../../src/host/probe.js';
import { gatherFacts, type HostFacts } from '../../../src/host/facts.js';
import { diagnose } from '../../../src/host/verdict.js';
import { run } from '../../../src/util/exec.js';
import { PROJECT_ROOT } from '../../helpers/cli.js';

const fx = (n: string): string => join(PROJECT_ROOT, 'test', 'fixtures', 'host', n);
const facts = (n: string): Promise<HostFacts> => gatherFacts({ root: fx(n), run });

test('module parameters: Y/N/1/0', () => {
  for (const [v, b] of [
    ['Y', true],
    ['N', false],
    ['1', true],
    ['0', false],
    ['y\n', true],
    ['', undefined],
    ['maybe', undefined],
  ] as const)
    assert.equal(parseBoolParam(v), b, JSON.stringify(v));
});

test('cpuinfo: garbage is not a cpuinfo; each architecture is recognised', () => {
  assert.equal(parseCpuinfo('hello\nworld\n'), undefined);
  assert.equal(parseCpuinfo(''), undefined);
  assert.equal(parseCpuinfo('vendor_id : IBM/S390\nfeatures : esan3 zarch sie\n')?.arch, 's390x');
  assert.equal(
    parseCpuinfo('processor : 0\ncpu : POWER9 (raw)\n\nplatform : PowerNV\n')?.arch,
    'ppc64le',
  );
  const arm = parseCpuinfo('processor : 0\nFeatures : fp asimd\nCPU implementer : 0x41\n');
  assert.equal(arm?.arch, 'aarch64');
  assert.equal(arm?.vendor, 'arm');
  const x = parseCpuinfo(
    'processor : 0\nvendor_id : GenuineIntel\nflags : fpu vmx\nvmx flags : ept vpid\n',
  )!;
  assert.equal(x.vendor, 'intel');
  assert.equal(cpuExtension(x), 'vmx');
});

test('probe firmware: 64 KiB, reset vector jumps to the code, exit codes decode', () => {
  const fw = probeFirmware();
  assert.equal(fw.length, 65536);
  assert.deepEqual([...fw.subarray(0xfff0, 0xfff3)], [0xe9, 0x0d, 0xff]);
  assert.equal(0xfff3 + (0xff0d - 0x10000), 0xff00, 'the near jump lands on the code');
  assert.deepEqual(PROBE_EXIT_CODES, [65, 67, 69, 71]);
  assert.deepEqual(decodeProbeExit(69), { vmx: false, svm: true });
  assert.deepEqual(decodeProbeExit(67), { vmx: true, svm: false });
  assert.equal(decodeProbeExit(1), null);
  assert.equal(decodeProbeExit(null), null);
});

test('a PVM host whose probe guest hangs: no accelerated VMs, the hang is named', async () => {
  const f = await facts('pvm-host-devkvm');
  f.kvm.probe = {
    ran: true,
    ok: false,
    detail:
      'KVM initialises (API version 12) but a standard guest did not run within 4 s (a PVM host runs only PVM guest kernels)',
    ms: 4100,
    stage: 'guest',
    guestSees: null,
  };
  const v = diagnose(f);
  assert.equal(v.acceleratedVMs, false);
  assert.equal(v.problems[0]!.id, 'kvm.pvm-only');
  assert.match(v.problems[0]!.message, /did not run within 4 s/);
  assert.equal(v.fallback?.accel, 'tcg');
});

test('/dev/kvm not accessible to the user: join the group', async () => {
  const f = await facts('intel-i7-baremetal-nested');
  f.kvm.access = {
    user: 'alice',
    uid: 1000,
    readable: false,
    writable: false,
    group: 'kvm',
    mode: '0660',
    inGroup: false,
  };
  const v = diagnose(f);
  assert.equal(v.acceleratedVMs, false);
  assert.equal(v.problems[0]!.id, 'kvm.no-access');
  assert.match(v.problems[0]!.fix, /^`usermod -aG kvm alice`/);
});

test('a probe that ran a guest but saw no VMX although nested=Y', async () => {
  const f = await facts('intel-i7-baremetal-nested');
  f.kvm.probe = {
    ran: true,
    ok: true,
    detail: 'ran',
    ms: 30,
    stage: 'guest',
    guestSees: { vmx: false, svm: false },
  };
  const v = diagnose(f);
  assert.equal(v.acceleratedVMs, true);
  assert.equal(v.acceleratedNestedVMs, false);
  assert.deepEqual(
    v.problems.map((p) => p.id),
    ['kvm.nested-not-exposed'],
  );
});

test('bare metal with VT-x disabled by the firmware', async () => {
  const f = await facts('intel-i7-baremetal-nested');
  f.kvm.device = false;
  f.kvm.module = null;
  f.kvm.disabledByFirmware = true;
  const v = diagnose(f);
  assert.equal(v.problems[0]!.id, 'cpu.disabled-by-firmware');
  assert.match(v.problems[0]!.fix, /firmware setup/);
});

test('a built-in kvm_intel with nested off: the fix is the kernel command line', async () => {
  const f = await facts('intel-i7-baremetal-nested-off');
  const m = f.kvm.modules.find((x) => x.name === 'kvm_intel')!;
  m.builtin = true;
  const v = diagnose(f);
  assert.match(v.problems[0]!.fix, /kvm_intel\.nested=1/);
});

test('a libvirt/KVM L1 without VMX: the fix is on the L0', async () => {
  const f = await facts('tcg-qemu64-nosvm');
  f.machine.hypervisor = 'kvm';
  const v = diagnose(f);
  assert.match(v.problems[0]!.fix, /host-passthrough/);
  assert.match(v.problems[0]!.fix, /nestvirt libvirt nest DOMAIN/);
});

test('POWER8-style kvm_hv without a nested parameter: nesting unsupported, not "set nested=1"', async () => {
  const f = await facts('power9-powernv');
  f.kvm.nested = null;
  const v = diagnose(f);
  assert.equal(v.acceleratedVMs, true);
  assert.deepEqual(
    v.problems.map((p) => p.id),
    ['kvm.nested-unsupported'],
  );
});

test('a kvm_pvm whose probe guest did run: accelerated VMs yes, nesting no', async () => {
  const f = await facts('pvm-host-devkvm');
  f.kvm.probe = {
    ran: true,
    ok: true,
    detail: 'ran',
    ms: 20,
    stage: 'guest',
    guestSees: { vmx: false, svm: false },
  };
  const v = diagnose(f);
  assert.equal(v.acceleratedVMs, true);
  assert.equal(v.acceleratedNestedVMs, false);
  assert.deepEqual(
    v.problems.map((p) => p.id),
    ['kvm.nested-unsupported'],
  );
});
