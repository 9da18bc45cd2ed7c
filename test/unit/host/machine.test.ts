import { test } from 'node:test';
import assert from 'node:assert/strict';
import { detectMachine, DMI_FIELDS, type Dmi } from '../../../src/host/machine.js';
import { parseCpuinfo } from '../../../src/host/cpuinfo.js';

const cpu = parseCpuinfo(
  'processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 hypervisor\n\n',
)!;
const dmi = Object.fromEntries(DMI_FIELDS.map((k) => [k, null])) as unknown as Dmi;
const inputs = (kmsg: string[]) => ({
  cpu,
  dmi,
  sysHypervisor: { type: null, uuid: null },
  sysinfo: null,
  kmsg,
});

test('a PVM guest whose early boot lines left the ring buffer is still known by kvm_pvm', () => {
  const m = detectMachine(
    inputs(['[    0.305729] kvm-pvm: this kernel is itself a kvm-pvm guest; not binding']),
  );
  assert.equal(m.virtual, true);
  assert.equal(m.hypervisor, 'pvm');
  assert.ok(m.evidence.some((e) => /kvm-pvm guest/.test(e)));
});

test('the early PVM line alone gives the same answer, with one piece of evidence', () => {
  const m = detectMachine(inputs(['[    0.000000] Booting paravirtualized kernel on PVM']));
  assert.equal(m.hypervisor, 'pvm');
  assert.equal(m.evidence.filter((e) => /PVM|pvm/.test(e)).length, 1);
});
