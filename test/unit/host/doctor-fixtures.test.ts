/**
 * Runs `doctor --root` on every fixture tree under test/fixtures/host and
 * compares with its expected.json (verdict and key facts); asserts the JSON
 * schema's keys on each.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { runCli, runBin, PROJECT_ROOT } from '../../helpers/cli.js';

const FIXTURES = join(PROJECT_ROOT, 'test', 'fixtures', 'host');
const names = readdirSync(FIXTURES, { withFileTypes: true })
  .filter((d) => d.isDirectory())
  .map((d) => d.name)
  .sort();

interface Expected {
  exitCode: number;
  level: number | null;
  levelSource: string;
  cpu: Record<string, unknown>;
  machine: Record<string, unknown>;
  kvm: Record<string, unknown>;
  verdict: {
    acceleratedVMs: boolean;
    acceleratedNestedVMs: boolean;
    problems: string[];
    fallback: string | null;
    nestedInGuest: boolean | null;
  };
}

/** Every key DESIGN.md fixes, plus doctor's documented additions. */
function assertSchema(r: Record<string, any>): void {
  assert.equal(r.schemaVersion, 1);
  for (const k of [
    'level',
    'levelExact',
    'levelSource',
    'cpu',
    'machine',
    'chain',
    'kvm',
    'tcg',
    'kernel',
    'verdict',
    'source',
  ])
    assert.ok(k in r, `missing key ${k}`);
  for (const k of ['arch', 'vendor', 'extensions', 'secondLevelPaging'])
    assert.ok(k in r.cpu, `missing cpu.${k}`);
  for (const k of ['virtual', 'hypervisor', 'cloud', 'product', 'evidence'])
    assert.ok(k in r.machine, `missing machine.${k}`);
  for (const k of ['device', 'access', 'module', 'nested', 'modules', 'probe'])
    assert.ok(k in r.kvm, `missing kvm.${k}`);
  for (const k of ['acceleratedVMs', 'acceleratedNestedVMs', 'problems', 'fallback', 'notes'])
    assert.ok(k in r.verdict, `missing verdict.${k}`);
  assert.ok(['x86_64', 'aarch64', 'ppc64le', 's390x'].includes(r.cpu.arch));
  for (const p of r.verdict.problems) {
    assert.equal(typeof p.id, 'string');
    assert.ok(p.message.length > 10, `problem ${p.id} has a message`);
    assert.ok(p.fix.length > 10, `problem ${p.id} has a fix`);
  }
  assert.equal(typeof r.verdict.acceleratedVMs, 'boolean');
  assert.equal(typeof r.verdict.acceleratedNestedVMs, 'boolean');
}

test('there are at least 15 fixtures, each with SOURCE and expected.json', () => {
  assert.ok(names.length >= 15, `only ${names.length} fixtures`);
  for (const n of names) {
    assert.ok(existsSync(join(FIXTURES, n, 'SOURCE')), `${n}/SOURCE`);
    assert.ok(existsSync(join(FIXTURES, n, 'expected.json')), `${n}/expected.json`);
  }
});

for (const name of names) {
  test(`doctor --root ${name} matches expected.json`, async () => {
    const dir = join(FIXTURES, name);
    const exp = JSON.parse(readFileSync(join(dir, 'expected.json'), 'utf8')) as Expected;
    const r = await runCli(['doctor', '--json', '--root', dir]);
    assert.equal(r.code, exp.exitCode, r.stderr);
    const j = JSON.parse(r.stdout);
    assertSchema(j);
    assert.equal(j.level, exp.level);
    assert.equal(j.levelSource, exp.levelSource);
    for (const [k, v] of Object.entries(exp.cpu)) assert.deepEqual(j.cpu[k], v, `cpu.${k}`);
    for (const [k, v] of Object.entries(exp.machine))
      assert.deepEqual(j.machine[k], v, `machine.${k}`);
    for (const [k, v] of Object.entries(exp.kvm)) assert.deepEqual(j.kvm[k], v, `kvm.${k}`);
    assert.equal(j.verdict.acceleratedVMs, exp.verdict.acceleratedVMs);
    assert.equal(j.verdict.acceleratedNestedVMs, exp.verdict.acceleratedNestedVMs);
    assert.deepEqual(
      j.verdict.problems.map((p: { id: string }) => p.id),
      exp.verdict.problems,
    );
    assert.equal(j.verdict.fallback?.accel ?? null, exp.verdict.fallback);
    assert.equal(j.verdict.fallback?.nestedInGuest ?? null, exp.verdict.nestedInGuest);
    // --root never probes.
    assert.equal(j.kvm.probe, null);
    assert.equal(j.tcg.probe, null);
    assert.equal(j.source.live, false);
  });
}

test('human output through bin/nestvirt: grouped, each failed check followed by its fix', async () => {
  const r = await runBin(['doctor', '--root', join(FIXTURES, 'tcg-max-kvm_amd-nested0')]);
  assert.equal(r.code, 0, r.stderr);
  for (const h of ['CPU', 'Machine', 'KVM', 'Verdict'])
    assert.match(r.stdout, new RegExp(`^${h}$`, 'm'));
  assert.match(
    r.stdout,
    /✗ kvm_amd is loaded with nested=0.*\n\s+fix: now: `nestvirt enable`.*modprobe kvm_amd nested=1/,
  );
  assert.doesNotMatch(r.stdout, /\x1b\[/, 'no colour when not a TTY');
});

test('bin/nestvirt doctor --json --root on a negative verdict exits 1 with JSON only on stdout', async () => {
  const r = await runBin(['doctor', '--json', '--root', join(FIXTURES, 'aws-m5-large')]);
  assert.equal(r.code, 1);
  const j = JSON.parse(r.stdout);
  assert.equal(j.machine.cloud, 'aws');
  assert.match(j.verdict.problems[0].fix, /\.metal/);
  assert.equal(r.stderr, '');
});

test('the nestvirt chain sets an exact level', async () => {
  const r = await runBin(['doctor', '--json', '--root', join(FIXTURES, 'tcg-max-nestvirt-chain')]);
  const j = JSON.parse(r.stdout);
  assert.equal(j.level, 2);
  assert.equal(j.levelExact, true);
  assert.equal(j.chain.source, 'fw_cfg');
  assert.equal(j.chain.chain[0].name, 'l1');
});

test('pvm-firecracker after its PVM lines left the ring buffer: the PVM guest is inferred', async () => {
  const { cp, mkdtemp, rm, writeFile } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const dir = await mkdtemp(join(tmpdir(), 'nv-pvm-rotated-'));
  try {
    await cp(join(FIXTURES, 'pvm-firecracker'), dir, { recursive: true });
    // What a long-running machine's ring buffer still holds: nothing about PVM.
    await writeFile(
      join(dir, 'nestvirt', 'dmesg.txt'),
      '[    0.355300] In-situ OAM (IOAM) with IPv6\n[ 9000.1] br0: port 1(tap0) entered forwarding state\n',
    );
    const r = await runCli(['doctor', '--root', dir, '--json']);
    assert.equal(r.code, 1, r.stderr);
    const j = JSON.parse(r.stdout);
    assert.equal(j.machine.hypervisor, 'pvm');
    assert.ok(
      (j.machine.evidence as string[]).some((e) => /^inferred: kvm_pvm is present/.test(e)),
      JSON.stringify(j.machine.evidence),
    );
    assert.equal(j.kvm.pvmNotBinding, false);
    assert.equal(j.verdict.problems[0].id, 'kvm.pvm-guest');
    assert.match(j.verdict.problems[0].message, /no longer in the ring buffer/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
