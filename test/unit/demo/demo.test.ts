import { test } from 'node:test';
import assert from 'node:assert/strict';
import { planChain, type DoctorReport } from '../../../src/demo/plan.js';
import { parseWhoami } from '../../../src/demo/whoami.js';
import { runDemo, demoExitCode, type SelfRunner } from '../../../src/demo/demo.js';

const base: DoctorReport = {
  level: 1,
  cpu: { arch: 'x86_64', vendor: 'amd', extensions: null },
  kvm: { device: false, module: 'kvm_pvm', nested: null },
  machine: { virtual: true, hypervisor: 'PVM', cloud: null },
  verdict: {
    acceleratedVMs: false,
    acceleratedNestedVMs: false,
    problems: [{ id: 'kvm.pvm', message: 'PVM only', fix: 'use TCG' }],
    fallback: { accel: 'tcg', works: true, nestedInGuest: true },
  },
};

test('planChain: which way the chain runs', () => {
  const cases: [string, DoctorReport, Partial<ReturnType<typeof planChain>>][] = [
    [
      'PVM host falls back to TCG with SVM',
      base,
      { possible: true, outerAccel: 'tcg', hostRunner: 'pvm' },
    ],
    [
      'KVM host that nests runs both under KVM',
      {
        ...base,
        level: 0,
        machine: { virtual: false },
        verdict: { acceleratedVMs: true, acceleratedNestedVMs: true, problems: [] },
      },
      { possible: true, outerAccel: 'kvm', hostRunner: 'bare-metal' },
    ],
    [
      'KVM without nesting still uses TCG outside',
      { ...base, verdict: { ...base.verdict, acceleratedVMs: true } },
      { possible: true, outerAccel: 'tcg' },
    ],
    [
      'no guest at all',
      { ...base, verdict: { ...base.verdict, fallback: null } },
      { possible: false },
    ],
    [
      'TCG probe failed (no QEMU)',
      {
        ...base,
        verdict: {
          ...base.verdict,
          fallback: {
            accel: 'tcg',
            works: null,
            detail: 'qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)',
          },
        },
      },
      { possible: false },
    ],
  ];
  for (const [name, d, want] of cases) {
    const got = planChain(d, { nested: true });
    for (const [k, v] of Object.entries(want))
      assert.equal((got as unknown as Record<string, unknown>)[k], v, `${name}: ${k}`);
  }
});

test('parseWhoami reads the level and the accelerator', () => {
  const chain = { level: 3, relative: 2, chain: [] };
  const w = parseWhoami(
    `junk\nnestvirt-whoami hypervisor=KVM clocksource=kvm-clock virt-cpus=0\nchain=${JSON.stringify(chain)}\n`,
  );
  assert.equal(w?.accel, 'kvm');
  assert.equal(w?.chain?.level, 3);
  assert.equal(
    parseWhoami('nestvirt-whoami hypervisor=none clocksource=tsc virt-cpus=2\nchain=\n')?.accel,
    'tcg',
  );
  assert.equal(parseWhoami('nothing'), undefined);
});

test('runDemo stops at step 1 when no guest can run, and exits 1', async () => {
  const calls: string[][] = [];
  const self: SelfRunner = async (argv) => {
    calls.push(argv);
    return {
      code: 1,
      stdout: JSON.stringify({ ...base, verdict: { ...base.verdict, fallback: null } }),
      stderr: '',
    };
  };
  const r = await runDemo(
    self,
    { step: (_t, fn) => fn(() => {}) },
    { nested: true, keep: false, memory: '2G', cpus: 2, stepTimeoutMs: 1000 },
  );
  assert.equal(r.ok, false);
  assert.deepEqual(calls, [['doctor', '--json']]);
  assert.equal(r.steps[0]?.id, 'doctor');
  assert.equal(r.steps[0]?.ok, false);
  assert.equal(r.steps[0]?.error?.level, 1);
  assert.equal(demoExitCode(r), 1);
});
