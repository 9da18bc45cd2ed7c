/**
 * Planning `enable` / `disable` from machine trees (no host changes: the
 * effects here only record what they were asked to do).
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  readNestingFacts as readFacts,
  parseNested,
  type NestingModule,
} from '../../../src/host/nesting/facts.js';
import { run } from '../../../src/util/exec.js';
import { planDisable, planEnable, type NestingEffects } from '../../../src/host/nesting/plan.js';
import {
  confContent,
  findNestedOptions,
  NESTVIRT_CONF,
} from '../../../src/host/nesting/modprobe-d.js';
import { qemuName } from '../../../src/host/nesting/users.js';
import { planScript, planText } from '../../../src/host/plan.js';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { cleanupTrees, FIXTURES, makeTree, type TreeSpec } from './enable-tree.js';

after(cleanupTrees);

const readNestingFacts = (root: string, o: { module?: NestingModule } = {}) =>
  readFacts(root, { run, ...o });

const fx = (root: string): NestingEffects => ({
  root,
  stateRoot: root + '/state',
  modprobe: async () => assert.fail('planning must not run modprobe'),
});

async function plan(spec: TreeSpec, persist = false) {
  const root = await makeTree(spec);
  const f = await readNestingFacts(root);
  const others = f.module ? await findNestedOptions(root, f.module) : [];
  const current = spec.files?.[NESTVIRT_CONF.slice(1)];
  return { f, p: planEnable(f, { current, others }, { persist }, fx(root)) };
}

const shells = (p: { plan: { steps: { shell: string[] }[] } }) =>
  p.plan.steps.flatMap((s) => s.shell);

test('parseNested reads bool and int parameters', () => {
  assert.equal(parseNested('Y\n'), true);
  assert.equal(parseNested('1'), true);
  assert.equal(parseNested('N'), false);
  assert.equal(parseNested('0'), false);
  assert.equal(parseNested(null), null);
  assert.equal(parseNested('maybe'), null);
});

test('cpuinfo: arch, vendor and extension per architecture', async () => {
  const cases: [TreeSpec['cpu'], string, string | null, string | null][] = [
    ['amd', 'x86_64', 'amd', 'svm'],
    ['intel', 'x86_64', 'intel', 'vmx'],
    ['amd-vm-nosvm', 'x86_64', 'amd', null],
    ['s390x', 's390x', 'ibm', 'sie'],
    ['power9', 'ppc64le', 'ibm', 'power-hv'],
    ['aarch64', 'aarch64', 'arm', null],
  ];
  for (const [cpu, arch, vendor, ext] of cases) {
    const f = await readNestingFacts(await makeTree({ cpu }));
    assert.deepEqual([f.arch, f.vendor, f.extension], [arch, vendor, ext], cpu);
  }
});

test('module per CPU: kvm_amd, kvm_intel, s390x kvm, POWER kvm_hv', async () => {
  const cases: [TreeSpec['cpu'], string][] = [
    ['amd', 'kvm_amd'],
    ['intel', 'kvm_intel'],
    ['s390x', 'kvm'],
    ['power9', 'kvm_hv'],
  ];
  for (const [cpu, m] of cases) {
    const { f, p } = await plan({ cpu });
    assert.equal(f.module, m, cpu);
    assert.equal(f.moduleState, 'not-loaded');
    assert.equal(p.problem, null);
    assert.deepEqual(shells(p)[0], `modprobe ${m} nested=1`, cpu);
  }
});

test('loaded with nested=0: check users, unload, load with nested=1, verify', async () => {
  const { f, p } = await plan({
    cpu: 'amd',
    loaded: { kvm: { nested: '' }, kvm_amd: { nested: '0' } },
  });
  assert.equal(f.moduleState, 'loaded');
  assert.equal(f.nested, false);
  assert.deepEqual(
    p.plan.steps.map((s) => s.title),
    [
      'check that no VM uses kvm_amd',
      'unload kvm_amd',
      'load kvm_amd with nested=1',
      'check that kvm_amd nested reads Y or 1',
    ],
  );
  assert.deepEqual(shells(p).slice(1, 3), ['modprobe -r kvm_amd', 'modprobe kvm_amd nested=1']);
  assert.equal(p.before, false);
  assert.equal(p.after, true);
  assert.match(
    planText(p.plan),
    /^enable KVM nesting for kvm_amd \(until reboot\):\n  1\. check that no VM uses kvm_amd\n/,
  );
  const script = planScript(p.plan);
  assert.match(script, /^#!\/bin\/sh\n/);
  assert.match(
    script,
    /\nmodprobe -r kvm_amd\n\n# load kvm_amd with nested=1\nmodprobe kvm_amd nested=1\n/,
  );
});

test("Intel with --persist writes nestvirt's own modprobe.d file first", async () => {
  const { p } = await plan({ cpu: 'intel', loaded: { kvm_intel: { nested: 'N' } } }, true);
  assert.equal(p.plan.steps[0]!.title, `write ${NESTVIRT_CONF} (options kvm_intel nested=1)`);
  assert.equal(p.plan.steps[0]!.shell[0], 'mkdir -p /etc/modprobe.d');
  assert.match(
    p.plan.steps[0]!.shell[1]!,
    /^printf '%s\\n' '# Written by nestvirt .*' 'options kvm_intel nested=1' > \/etc\/modprobe.d\/nestvirt-nested.conf$/,
  );
  assert.match(confContent('kvm_intel', 1), /^# Written by nestvirt/);
});

test('already on: nothing to do; with --persist only the file', async () => {
  const on = await plan({ cpu: 'amd', loaded: { kvm_amd: { nested: '1' } } });
  assert.equal(on.p.plan.steps.length, 0);
  assert.match(planText(on.p.plan), /nothing to do/);
  const persist = await plan({ cpu: 'amd', loaded: { kvm_amd: { nested: '1' } } }, true);
  assert.deepEqual(
    persist.p.plan.steps.map((s) => s.title),
    [`write ${NESTVIRT_CONF} (options kvm_amd nested=1)`],
  );
  const done = await plan(
    {
      cpu: 'amd',
      loaded: { kvm_amd: { nested: '1' } },
      files: { [NESTVIRT_CONF.slice(1)]: confContent('kvm_amd', 1) },
    },
    true,
  );
  assert.equal(done.p.plan.steps.length, 0);
});

test('built-in module: runtime impossible, the fix is the kernel command line', async () => {
  const { f, p } = await plan({ cpu: 'amd', builtin: { kvm_amd: { nested: '0' } } });
  assert.equal(f.moduleState, 'builtin');
  assert.equal(p.problem?.id, 'nesting.builtin');
  assert.match(p.problem!.fix, /kvm_amd\.nested=1 to the kernel command line/);
  assert.equal(p.plan.steps.length, 0);
  const on = await plan({ cpu: 'amd', builtin: { kvm_amd: { nested: '1' } } });
  assert.equal(on.p.problem, null);
  assert.equal(on.p.plan.steps.length, 0);
});

test('built-in from modules.builtin when not in sysfs', async () => {
  const { f } = await plan({
    cpu: 'intel',
    files: {
      'lib/modules/6.1.0-fake/modules.builtin':
        'kernel/arch/x86/kvm/kvm.ko\nkernel/arch/x86/kvm/kvm-intel.ko\n',
    },
  });
  assert.equal(f.moduleState, 'builtin');
});

test('a VM without svm (this machine: PVM): nothing to enable, the fix is at the layer below', async () => {
  const { f, p } = await plan({ base: 'pvm-firecracker' });
  assert.equal(f.isVm, true);
  assert.equal(f.hypervisor, 'pvm');
  assert.equal(f.module, 'kvm_amd');
  assert.equal(p.problem?.id, 'nesting.no-kvm');
  assert.match(p.problem!.message, /^nothing to enable here: this machine is itself a PVM guest/);
  assert.match(p.problem!.fix, /PVM host \(kvm_pvm\) does not pass VT-x\/AMD-V/);
});

test('aarch64: nesting is a kernel mode, not a module parameter', async () => {
  const { p } = await plan({ cpu: 'aarch64' });
  assert.equal(p.problem?.id, 'nesting.arm64');
  assert.match(p.problem!.fix, /kvm-arm\.mode=nested/);
});

test("the user's conflicting modprobe.d options are noted, never touched", async () => {
  const { p } = await plan(
    {
      cpu: 'amd',
      loaded: { kvm_amd: { nested: '0' } },
      files: {
        'etc/modprobe.d/kvm.conf': '# mine\noptions kvm_amd nested=0 avic=1\n',
        'lib/modprobe.d/zz-vendor.conf': 'options kvm-amd nested=0\n',
        'etc/modprobe.d/zz-vendor.conf': '# hides the /lib one of the same name\n',
        'usr/lib/modprobe.d/other.conf': 'options kvm_intel nested=0\n',
      },
    },
    true,
  );
  const notes = p.plan.notes.join('\n');
  assert.match(
    notes,
    /\/etc\/modprobe\.d\/kvm\.conf:2 has `options kvm_amd nested=0 avic=1` \(the user's, left alone\); nestvirt's file is read after it and wins/,
  );
  assert.doesNotMatch(notes, /zz-vendor/);
  assert.doesNotMatch(notes, /other\.conf/);
  assert.ok(p.plan.steps.every((s) => s.shell.every((l) => !l.includes('kvm.conf'))));
  const later = await plan(
    {
      cpu: 'amd',
      loaded: { kvm_amd: { nested: '0' } },
      files: { 'run/modprobe.d/zz.conf': 'options kvm_amd nested=0\n' },
    },
    true,
  );
  assert.match(
    later.p.plan.notes.join('\n'),
    /\/run\/modprobe\.d\/zz\.conf:1 .* it is read after nestvirt's file and wins at the next load/,
  );
});

test('--module plans for a tree that says nothing about it (guarded unload)', async () => {
  const root = await makeTree({ cpu: 'amd-vm-nosvm' });
  const f = await readNestingFacts(root, { module: 'kvm_amd' });
  assert.equal(f.moduleState, 'unknown');
  const p = planEnable(f, { current: undefined, others: [] }, { persist: false }, fx(root));
  assert.equal(p.problem, null);
  assert.deepEqual(shells(p).slice(1, 3), [
    "if grep -q '^kvm_amd ' /proc/modules; then modprobe -r kvm_amd; fi",
    'modprobe kvm_amd nested=1',
  ]);
  assert.match(p.plan.notes.join('\n'), /planned for kvm_amd as asked/);
});

test("disable: with a record, back to the recorded value and remove only nestvirt's file", async () => {
  const root = await makeTree({ cpu: 'intel', loaded: { kvm_intel: { nested: 'Y' } } });
  const f = await readNestingFacts(root);
  const record = [
    {
      kind: 'nesting.file',
      path: NESTVIRT_CONF,
      previous: null,
      content: confContent('kvm_intel', 1),
    },
    { kind: 'nesting.param', module: 'kvm_intel', before: 'N', after: '1' },
  ];
  const p = planDisable(
    f,
    { current: confContent('kvm_intel', 1), others: [] },
    record,
    { persist: false },
    fx(root),
  );
  assert.deepEqual(
    p.plan.steps.map((s) => s.title),
    [
      `remove ${NESTVIRT_CONF} (nestvirt's own file)`,
      'check that no VM uses kvm_intel',
      'unload kvm_intel',
      'load kvm_intel with nested=0',
      'check that kvm_intel nested reads N or 0',
    ],
  );
  // Recorded as on before (enable only wrote the file): the runtime stays as it was.
  const keep = planDisable(
    f,
    { current: confContent('kvm_intel', 1), others: [] },
    [
      {
        kind: 'nesting.file',
        path: NESTVIRT_CONF,
        previous: 'options kvm_intel nested=1\n',
        content: confContent('kvm_intel', 1),
      },
    ],
    { persist: false },
    fx(root),
  );
  assert.deepEqual(
    keep.plan.steps.map((s) => s.title),
    [`restore ${NESTVIRT_CONF} as it was before nestvirt`],
  );
  assert.equal(
    keep.plan.steps[0]!.shell[1],
    `printf '%s\\n' 'options kvm_intel nested=1' > ${NESTVIRT_CONF}`,
  );
  // The file was edited since: left alone.
  const edited = planDisable(
    f,
    { current: 'options kvm_intel nested=1 # mine\n', others: [] },
    record.slice(0, 1),
    { persist: false },
    fx(root),
  );
  assert.equal(edited.plan.steps.length, 0);
  assert.match(edited.plan.notes.join('\n'), /changed since nestvirt wrote it; left alone/);
});

test('disable: without a record, nested off if on; --persist writes nested=0', async () => {
  const root = await makeTree({ cpu: 'amd', loaded: { kvm_amd: { nested: '1' } } });
  const f = await readNestingFacts(root);
  const p = planDisable(
    f,
    { current: undefined, others: [] },
    undefined,
    { persist: true },
    fx(root),
  );
  assert.match(p.plan.notes[0]!, /no record of `nestvirt enable` found/);
  assert.deepEqual(
    shells(p).filter((l) => l.startsWith('modprobe')),
    ['modprobe -r kvm_amd', 'modprobe kvm_amd nested=0'],
  );
  assert.match(
    p.plan.steps[0]!.shell[1]!,
    /'options kvm_amd nested=0' > \/etc\/modprobe.d\/nestvirt-nested.conf$/,
  );
  const off = await makeTree({ cpu: 'amd', loaded: { kvm_amd: { nested: '0' } } });
  const q = planDisable(
    await readNestingFacts(off),
    { current: undefined, others: [] },
    undefined,
    { persist: false },
    fx(off),
  );
  assert.equal(q.plan.steps.length, 0);
});

test('qemuName reads -name in both forms', () => {
  assert.equal(qemuName(['qemu-system-x86_64', '-name', 'web']), 'web');
  assert.equal(qemuName(['qemu', '-name', 'guest=db,debug-threads=on']), 'db');
  assert.equal(qemuName(['qemu', '-m', '512']), null);
});

// Every doctor fixture (real captures from TCG guests and this machine, and
// trees written from vendor documentation): what `enable` plans there.
const FIXTURE_PLANS: Record<string, { module: string | null; problem?: string; reload?: boolean }> =
  {
    'arm64-ampere-altra-baremetal': { module: null, problem: 'nesting.arm64' },
    'aws-c5-metal': { module: 'kvm_intel' },
    'aws-c6g-graviton2': { module: null, problem: 'nesting.arm64' },
    'aws-m5-large': { module: 'kvm_intel', problem: 'nesting.no-kvm' },
    'azure-dv2-no-nesting': { module: 'kvm_intel', problem: 'nesting.no-kvm' },
    'azure-dv3-nested': { module: 'kvm_intel' },
    'gce-e2-no-nesting': { module: 'kvm_intel', problem: 'nesting.no-kvm' },
    'gce-n2-nested': { module: 'kvm_intel' },
    'intel-i7-baremetal-nested': { module: 'kvm_intel' },
    'intel-i7-baremetal-nested-off': { module: 'kvm_intel', reload: true },
    'power9-powernv': { module: 'kvm_hv' },
    'power9-pseries-guest': { module: 'kvm_hv', problem: 'nesting.no-kvm' },
    'pvm-firecracker': { module: 'kvm_amd', problem: 'nesting.no-kvm' },
    'pvm-host-devkvm': { module: 'kvm_amd', problem: 'nesting.no-kvm' },
    's390x-kvm-guest': { module: 'kvm', problem: 'nesting.no-kvm' },
    's390x-lpar': { module: 'kvm', reload: true },
    'tcg-cascadelake-server': { module: 'kvm_intel', problem: 'nesting.no-kvm' },
    'tcg-max-kvm_amd-nested0': { module: 'kvm_amd', reload: true },
    'tcg-max-kvm_amd-nested1': { module: 'kvm_amd' },
    'tcg-max-nestvirt-chain': { module: 'kvm_amd' },
    'tcg-max-no-module': { module: 'kvm_amd' },
    'tcg-qemu64-nosvm': { module: 'kvm_amd', problem: 'nesting.no-kvm' },
    'tcg-skylake-server': { module: 'kvm_intel', problem: 'nesting.no-kvm' },
  };

test('enable plans on every doctor fixture', async () => {
  const names = (await readdir(FIXTURES, { withFileTypes: true }))
    .filter((d) => d.isDirectory())
    .map((d) => d.name);
  assert.deepEqual(
    names.sort(),
    Object.keys(FIXTURE_PLANS).sort(),
    'a fixture without an expected plan',
  );
  const got: Record<string, unknown> = {};
  for (const name of names) {
    const root = join(FIXTURES, name);
    const f = await readNestingFacts(root);
    const p = planEnable(f, { current: undefined, others: [] }, { persist: false }, fx(root));
    const reload = shells(p).some((l) => l === `modprobe -r ${f.module}`);
    got[name] = {
      module: p.module,
      ...(p.problem ? { problem: p.problem.id } : {}),
      ...(reload ? { reload } : {}),
    };
    if (!p.problem && f.nested === true)
      assert.equal(p.plan.steps.length, 0, `${name}: already on`);
  }
  assert.deepEqual(got, FIXTURE_PLANS);
});

test('kvm_amd.nested=0 on the kernel command line is noted', async () => {
  const root = await makeTree({
    cpu: 'amd',
    loaded: { kvm_amd: { nested: '0' } },
    files: { 'proc/cmdline': 'BOOT_IMAGE=/vmlinuz ro kvm-amd.nested=0 quiet\n' },
  });
  const f = await readNestingFacts(root);
  assert.equal(f.cmdlineNested, '0');
  const p = planEnable(f, { current: undefined, others: [] }, { persist: true }, fx(root));
  assert.match(
    p.plan.notes.join('\n'),
    /the kernel command line has kvm_amd\.nested=0; .* remove it from the boot loader for the change to last/,
  );
});
