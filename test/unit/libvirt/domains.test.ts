import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, existsSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { listDomains, nestDomain, unnestDomain } from '../../../src/libvirt/domains.js';
import { Virsh } from '../../../src/libvirt/virsh.js';
import { unifiedDiff } from '../../../src/libvirt/diff.js';
import { readEntry } from '../../../src/state/ledger.js';
import { NestvirtError } from '../../../src/errors.js';
import { PROJECT_ROOT } from '../../../src/version.js';
import { runCli } from '../../helpers/cli.js';
import { fakeVirsh, type FakeDomain } from './fake-virsh.js';

const fixture = (name: string): string =>
  readFileSync(join(PROJECT_ROOT, 'test/fixtures/libvirt', name), 'utf8').replace(/\n$/, '');
const AMD_CAPS =
  "<capabilities>\n  <host>\n    <cpu>\n      <arch>x86_64</arch>\n      <vendor>AMD</vendor>\n      <feature name='svm'/>\n    </cpu>\n  </host>\n</capabilities>\n";
const URI = 'qemu+ssh://example/system'; // remote: the test machine's /sys is not read

async function setup(domains: [string, FakeDomain][]) {
  const map = new Map(domains);
  const { runner, calls } = fakeVirsh(map, AMD_CAPS);
  const virsh = new Virsh(runner, URI, {});
  const root = await mkdtemp(join(tmpdir(), 'nv-lv-unit-'));
  return { map, virsh, root, calls, runner };
}

test('nest then unnest restores the saved XML byte for byte, with a ledger entry in between', async () => {
  const original = fixture('amd-passthrough.xml');
  const { map, virsh, root } = await setup([['amd-vm', { inactive: original, state: 'shut off' }]]);
  const r = await nestDomain(virsh, 'amd-vm', root, {});
  assert.equal(r.applied, true);
  assert.equal(r.extension, 'svm');
  assert.match(map.get('amd-vm')!.inactive, /<feature policy='require' name='svm'\/>/);
  assert.equal(readFileSync(r.originalPath!, 'utf8'), original + '\n');
  const entry = await readEntry(root, 'libvirt:amd-vm');
  assert.equal(entry?.changes[0]?.kind, 'libvirt-define');
  // Nesting again: nothing to do, the first original is kept.
  const again = await nestDomain(virsh, 'amd-vm', root, {});
  assert.equal(again.changed, false);
  const u = await unnestDomain(virsh, 'amd-vm', root, { diff: unifiedDiff });
  assert.equal(u.restored, true);
  assert.equal(map.get('amd-vm')!.inactive, original);
  assert.equal(await readEntry(root, 'libvirt:amd-vm'), undefined);
  assert.equal(existsSync(join(root, 'libvirt', 'amd-vm')), false);
});

test('dry run changes nothing and records nothing', async () => {
  const original = fixture('amd-no-cpu.xml');
  const { map, virsh, root, calls } = await setup([
    ['amd-plain', { inactive: original, state: 'shut off' }],
  ]);
  const r = await nestDomain(virsh, 'amd-plain', root, { dryRun: true });
  assert.equal(r.changed, true);
  assert.equal(r.applied, false);
  assert.equal(map.get('amd-plain')!.inactive, original);
  assert.equal(
    calls.some((c) => c.includes('define')),
    false,
  );
  assert.equal(await readEntry(root, 'libvirt:amd-plain'), undefined);
});

test('unnest refuses when the domain changed after nest, shows the change, --force restores', async () => {
  const original = fixture('amd-passthrough.xml');
  const { map, virsh, root } = await setup([['amd-vm', { inactive: original, state: 'shut off' }]]);
  await nestDomain(virsh, 'amd-vm', root, {});
  map.get('amd-vm')!.inactive = map
    .get('amd-vm')!
    .inactive.replace("<vcpu placement='static'>4</vcpu>", "<vcpu placement='static'>8</vcpu>");
  await assert.rejects(
    unnestDomain(virsh, 'amd-vm', root, { diff: unifiedDiff }),
    (e: unknown) =>
      e instanceof NestvirtError &&
      e.code === 'libvirt.changed-since' &&
      /\+  <vcpu placement='static'>8<\/vcpu>/.test(
        (e as unknown as { changedSince: string }).changedSince,
      ),
  );
  const u = await unnestDomain(virsh, 'amd-vm', root, { diff: unifiedDiff, force: true });
  assert.equal(u.forced, true);
  assert.equal(map.get('amd-vm')!.inactive, original);
});

test('a running domain: nest says it needs a power cycle; ls reports it', async () => {
  const original = fixture('amd-passthrough.xml');
  const { virsh, root } = await setup([
    ['amd-vm', { inactive: original, live: original, state: 'running' }],
  ]);
  const r = await nestDomain(virsh, 'amd-vm', root, {});
  assert.equal(r.needsPowerCycle, true);
  const ls = await listDomains(virsh, { stateRoot: root });
  const row = ls.domains[0]!;
  assert.equal(row.needsPowerCycle, true);
  assert.equal(row.configured, true);
  assert.equal(row.canNest, false);
  assert.equal(row.nestedByNestvirt, true);
  assert.match(row.reason, /power-cycled.*a reboot inside the guest is not enough/);
});

test('CLI: unknown domain is one line with exit 2; unnest of an untouched domain exit 2', async () => {
  const { runner, root } = await setup([
    ['amd-vm', { inactive: fixture('amd-passthrough.xml'), state: 'shut off' }],
  ]);
  const env = { NESTVIRT_HOME: root };
  const r = await runCli(['libvirt', 'nest', 'nope', '--connect', URI], { runner, env });
  assert.equal(r.code, 2);
  assert.equal(r.stderr.split('\n')[0], `nestvirt: no libvirt domain "nope" at ${URI}`);
  const u = await runCli(['libvirt', 'unnest', 'amd-vm', '--connect', URI], { runner, env });
  assert.equal(u.code, 2);
  assert.match(u.stderr, /^nestvirt: nestvirt has not changed domain amd-vm/);
  const m = await runCli(['libvirt', 'nest', 'amd-vm', '--mode', 'turbo', '--connect', URI], {
    runner,
    env,
  });
  assert.equal(m.code, 2);
  assert.match(m.stderr, /--mode must be one of host-passthrough, host-model, custom, maximum/);
});

test('CLI: nest --json prints the documented keys; the diff is the one line', async () => {
  const { runner, root } = await setup([
    ['amd-vm', { inactive: fixture('amd-passthrough.xml'), state: 'shut off' }],
  ]);
  const r = await runCli(['libvirt', 'nest', 'amd-vm', '--connect', URI, '--json'], {
    runner,
    env: { NESTVIRT_HOME: root },
  });
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout) as Record<string, unknown>;
  for (const k of [
    'domain',
    'uri',
    'extension',
    'changed',
    'applied',
    'dryRun',
    'diff',
    'notes',
    'state',
    'needsPowerCycle',
    'restarted',
    'forcedOff',
    'warnings',
    'originalPath',
    'host',
  ])
    assert.ok(k in j, k);
  assert.match(
    j.diff as string,
    /^-    <feature policy='disable' name='svm'\/>\n\+    <feature policy='require' name='svm'\/>$/m,
  );
});

test('libvirtSummary (for doctor): domains with verdicts; unreachable daemon becomes error + fix, never a throw', async () => {
  const { libvirtSummary } = await import('../../../src/libvirt/index.js');
  const { renderLibvirtSummary } = await import('../../../src/libvirt/render.js');
  const out = { stdout: process.stdout, stderr: process.stderr, color: false, interactive: false };
  const { runner } = await setup([
    ['amd-vm', { inactive: fixture('amd-passthrough.xml'), state: 'shut off' }],
  ]);
  const s = await libvirtSummary({ uri: URI, run: runner, env: { PATH: process.env.PATH } });
  assert.deepEqual(
    s.domains.map((d) => [d.name, d.canNest]),
    [['amd-vm', false]],
  );
  assert.equal(s.reachable, true);
  assert.match(
    renderLibvirtSummary(s, out),
    /^libvirt\n {2}amd-vm {2}no {2}the <cpu> disables svm/,
  );
  const down: typeof runner = async (argv) => ({
    argv,
    code: 1,
    signal: null,
    stdout: '',
    stderr:
      "error: failed to connect to the hypervisor\nerror: Failed to connect socket to '/var/run/libvirt/libvirt-sock': No such file or directory\n",
    timedOut: false,
  });
  const d = await libvirtSummary({
    uri: 'qemu:///system',
    run: down,
    env: { PATH: process.env.PATH },
  });
  assert.equal(d.present, true);
  assert.equal(d.reachable, false);
  assert.match(d.error!, /^libvirtd is not running/);
  assert.match(d.fix!, /systemctl start libvirtd/);
  const none = await libvirtSummary({ run: down, env: { PATH: '/nonexistent' } });
  assert.deepEqual(none, { present: false, uri: 'qemu:///system', reachable: false, domains: [] });
});

test('libvirt refusing the edited XML leaves the domain and nestvirt state unchanged', async () => {
  const original = fixture('amd-passthrough.xml');
  const { virsh, root, runner } = await setup([
    ['amd-vm', { inactive: original, state: 'shut off' }],
  ]);
  const refusing: typeof runner = async (argv, opts) =>
    argv.includes('define')
      ? {
          argv,
          code: 1,
          signal: null,
          stdout: '',
          stderr:
            'error: Failed to define domain from x.xml\nerror: unsupported configuration: guest and host CPU are not compatible\n',
          timedOut: false,
        }
      : runner(argv, opts);
  const v2 = new Virsh(refusing, virsh.uri, {});
  await assert.rejects(
    nestDomain(v2, 'amd-vm', root, {}),
    (e: unknown) =>
      e instanceof NestvirtError &&
      e.exitCode === 1 &&
      /guest and host CPU are not compatible/.test(e.message),
  );
  assert.equal(existsSync(join(root, 'libvirt', 'amd-vm')), false);
  assert.equal(await readEntry(root, 'libvirt:amd-vm'), undefined);
});

for (const f of [
  'intel-host-model.xml',
  'intel-optional-vmx.xml',
  'amd-no-cpu.xml',
  'power9.xml',
  'odd-format.xml',
  'tcg.xml',
])
  test(`nest + unnest round trip restores ${f} byte for byte`, async () => {
    const original = fixture(f);
    const name = /<name>([^<]+)<\/name>/.exec(original)![1]!;
    const { map, virsh, root } = await setup([[name, { inactive: original, state: 'shut off' }]]);
    const caps = f.startsWith('intel')
      ? AMD_CAPS.replace('AMD', 'Intel').replace("'svm'", "'vmx'")
      : AMD_CAPS;
    const v = new Virsh(fakeVirsh(map, caps).runner, virsh.uri, {});
    const r = await nestDomain(v, name, root, {});
    assert.equal(r.applied, true);
    assert.notEqual(map.get(name)!.inactive, original);
    await unnestDomain(v, name, root, { diff: unifiedDiff });
    assert.equal(map.get(name)!.inactive, original);
  });

test('nest after someone undid it: unnest restores their version, not the older one', async () => {
  const original = fixture('amd-passthrough.xml');
  const { map, virsh, root } = await setup([['amd-vm', { inactive: original, state: 'shut off' }]]);
  await nestDomain(virsh, 'amd-vm', root, {});
  const theirs = original.replace(
    "<vcpu placement='static'>4</vcpu>",
    "<vcpu placement='static'>6</vcpu>",
  );
  map.get('amd-vm')!.inactive = theirs;
  await nestDomain(virsh, 'amd-vm', root, {});
  await unnestDomain(virsh, 'amd-vm', root, { diff: unifiedDiff });
  assert.equal(map.get('amd-vm')!.inactive, theirs);
});
