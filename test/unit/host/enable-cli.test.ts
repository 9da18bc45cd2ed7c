/**
 * `nestvirt enable` / `disable` end to end in-process, against temp machine
 * trees: modprobe is the FAKE in test/fixtures/bin (first on PATH), which
 * edits the tree the way the kernel would show it; files go through the
 * tree (NESTVIRT_HOST_ROOT); the ledger lives in a temp NESTVIRT_HOME.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, readdir, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { runCli } from '../../helpers/cli.js';
import { confContent, NESTVIRT_CONF } from '../../../src/host/nesting/modprobe-d.js';
import { cleanupTrees, makeTree, tempDir, treeEnv, type TreeSpec } from './enable-tree.js';

after(cleanupTrees);

const CONF = NESTVIRT_CONF.slice(1);

async function setup(spec: TreeSpec, extra: NodeJS.ProcessEnv = {}) {
  const root = await makeTree(spec);
  const home = await tempDir('nestvirt-enable-home-');
  const env = treeEnv(root, home, extra);
  const cli = (argv: string[], uid = 0) => runCli(argv, { env, uid });
  const read = (p: string) => readFile(join(root, p), 'utf8').catch(() => undefined);
  const ledger = () =>
    readFile(join(home, 'ledger', 'nesting.json'), 'utf8')
      .then(JSON.parse)
      .catch(() => undefined);
  const calls = async () =>
    ((await read('fake-modprobe.log')) ?? '').trim().split('\n').filter(Boolean);
  return { root, home, env, cli, read, ledger, calls };
}

const AMD0: TreeSpec = { cpu: 'amd', loaded: { kvm: { nested: '' }, kvm_amd: { nested: '0' } } };

test('enable reloads kvm_amd with nested=1, verifies, records; disable undoes exactly that', async () => {
  const h = await setup(AMD0);
  const r = await h.cli(['enable']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^nesting is on: kvm_amd nested=on \(until reboot\)\n/);
  assert.match(r.stderr, /✓ unload kvm_amd/);
  assert.equal((await h.read('sys/module/kvm_amd/parameters/nested'))?.trim(), '1');
  assert.deepEqual(await h.calls(), ['modprobe -r kvm_amd', 'modprobe kvm_amd nested=1']);
  const entry = await h.ledger();
  assert.deepEqual(entry.changes, [
    { kind: 'nesting.param', module: 'kvm_amd', before: '0', after: '1' },
  ]);

  const again = await h.cli(['enable']);
  assert.equal(again.code, 0);
  assert.match(again.stdout, /^nesting is already on \(kvm_amd nested=1\); nothing to do\n/);

  // A captured tree is another machine: this machine's record is not used for it.
  const other = JSON.parse(
    (await h.cli(['disable', '--dry-run', '--json', '--root', h.root])).stdout,
  );
  assert.equal(other.record, false);
  assert.match(other.notes[0], /no record of `nestvirt enable` found/);

  const d = await h.cli(['disable', '--json']);
  assert.equal(d.code, 0, d.stderr);
  const j = JSON.parse(d.stdout);
  assert.equal(j.action, 'disable');
  assert.equal(j.record, true);
  assert.equal(j.before, true);
  assert.equal(j.after, false);
  assert.equal(j.changed, true);
  assert.equal((await h.read('sys/module/kvm_amd/parameters/nested'))?.trim(), '0');
  assert.equal(await h.ledger(), undefined);
});

test("enable --persist writes only nestvirt's file; disable removes it and leaves the user's alone", async () => {
  const user = 'options kvm_amd nested=0\n';
  const h = await setup({ ...AMD0, files: { 'etc/modprobe.d/kvm.conf': user } });
  const r = await h.cli(['enable', '--persist', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.deepEqual(
    {
      module: j.module,
      before: j.before,
      after: j.after,
      persist: j.persist,
      changed: j.changed,
      dryRun: j.dryRun,
    },
    { module: 'kvm_amd', before: false, after: true, persist: true, changed: true, dryRun: false },
  );
  assert.deepEqual(Object.keys(j.steps[0]), ['title', 'shell']);
  assert.equal(await h.read(CONF), confContent('kvm_amd', 1));
  assert.match(j.notes.join('\n'), /kvm\.conf:1 has `options kvm_amd nested=0`/);
  // The fake applies modprobe.d then the command line, like kmod: nestvirt's file wins over kvm.conf.
  const d = await h.cli(['disable']);
  assert.equal(d.code, 0, d.stderr);
  assert.equal(await h.read(CONF), undefined);
  assert.equal(await h.read('etc/modprobe.d/kvm.conf'), user);
  assert.equal((await h.read('sys/module/kvm_amd/parameters/nested'))?.trim(), '0');
});

test('enable --persist over an existing nestvirt-nested.conf: disable restores its content', async () => {
  const old = 'options kvm_intel nested=1 # written by hand\n';
  const h = await setup({
    cpu: 'intel',
    loaded: { kvm_intel: { nested: 'Y' } },
    files: { [CONF]: old },
  });
  const r = await h.cli(['enable', '--persist']);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(await h.calls(), [], 'nested was already on: no reload');
  assert.equal(await h.read(CONF), confContent('kvm_intel', 1));
  const d = await h.cli(['disable']);
  assert.equal(d.code, 0, d.stderr);
  assert.equal(await h.read(CONF), old);
  assert.deepEqual(await h.calls(), [], 'nested was on before enable: disable leaves it on');
});

test('enable loads a module that is not loaded; disable without a record turns nesting off and says so', async () => {
  const h = await setup({ cpu: 'intel' });
  const r = await h.cli(['enable']);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(await h.calls(), ['modprobe kvm_intel nested=1']);
  assert.equal((await h.read('sys/module/kvm_intel/parameters/nested'))?.trim(), 'Y');
  const h2 = await setup({ cpu: 'intel', loaded: { kvm_intel: { nested: 'Y' } } });
  const d = await h2.cli(['disable']);
  assert.equal(d.code, 0, d.stderr);
  assert.match(
    d.stdout,
    /note: no record of `nestvirt enable` found: turning nesting off if it is on/,
  );
  assert.equal((await h2.read('sys/module/kvm_intel/parameters/nested'))?.trim(), 'N');
});

test('verification fails (the kernel keeps nested off): exit 1, undone, nothing recorded', async () => {
  const h = await setup(AMD0, { NESTVIRT_FAKE_REFUSE_NESTED: '1' });
  const r = await h.cli(['enable', '--persist']);
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    /nestvirt: after reloading kvm_amd with nested=1, \/sys\/module\/kvm_amd\/parameters\/nested reads "0"; the change was undone\n  fix: the kernel refused nesting/,
  );
  assert.doesNotMatch(r.stderr, /at .*\.js/);
  assert.equal(await h.read(CONF), undefined);
  assert.equal((await h.read('sys/module/kvm_amd/parameters/nested'))?.trim(), '0');
  assert.match((await h.read('proc/modules')) ?? '', /^kvm_amd /m);
  assert.deepEqual((await h.calls()).slice(-2), [
    'modprobe -r kvm_amd',
    'modprobe kvm_amd nested=0',
  ]);
  assert.equal(await h.ledger(), undefined);
});

test("modprobe fails (module not installed): exit 1 with modprobe's reason, nothing left behind", async () => {
  const h = await setup({ cpu: 'amd' }, { NESTVIRT_FAKE_MODPROBE_MISSING: 'kvm_amd' });
  const r = await h.cli(['enable', '--persist']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^✗ load kvm_amd with nested=1/m);
  assert.match(
    r.stderr,
    /nestvirt: `modprobe kvm_amd nested=1` failed: modprobe: FATAL: Module kvm_amd not found/,
  );
  assert.equal(await h.read(CONF), undefined);
  assert.equal(await h.ledger(), undefined);
});

test('enable while VMs use the module: one line naming them, exit 1, nothing changed', async () => {
  // The VMs are fake /proc entries in the temp tree (fd links to /dev/kvm and
  // a KVM VM fd), so the test needs no real VM; refcnt 2 as the kernel shows it.
  const h = await setup({
    cpu: 'amd',
    loaded: { kvm: { nested: '' }, kvm_amd: { nested: '0', refcnt: 2 } },
    procs: {
      123: {
        comm: 'qemu-system-x86',
        cmdline: ['qemu-system-x86_64', '-name', 'guest=web,debug-threads=on', '-accel', 'kvm'],
        fds: { 3: '/dev/null', 11: '/dev/kvm' },
      },
      456: {
        comm: 'firecracker',
        cmdline: ['firecracker', '--api-sock', '/tmp/fc.sock'],
        fds: { 9: 'anon_inode:kvm-vm' },
      },
      789: { comm: 'bash', cmdline: ['bash'], fds: { 0: '/dev/pts/0' } },
    },
  });
  await mkdir(join(h.home, 'vms', 'web'), { recursive: true });
  await writeFile(join(h.home, 'vms', 'web', 'qemu.pid'), '123\n');
  const r = await h.cli(['enable']);
  assert.equal(r.code, 1);
  const errLines = r.stderr.split('\n').filter((l) => l.startsWith('nestvirt:'));
  assert.deepEqual(errLines, [
    'nestvirt: kvm_amd is in use by 2 VMs: web (pid 123, qemu-system-x86), pid 456 (firecracker); stop them first (nestvirt stop web, shut down pid 456) and retry',
  ]);
  assert.deepEqual(await h.calls(), []);
  assert.equal((await h.read('sys/module/kvm_amd/parameters/nested'))?.trim(), '0');
  // --dry-run still shows the plan.
  const dry = await h.cli(['enable', '--dry-run']);
  assert.equal(dry.code, 0);
  assert.match(dry.stdout, /1\. check that no VM uses kvm_amd/);
  assert.match(
    dry.stdout,
    /note: kvm_amd is in use by 2 VMs: web \(pid 123, qemu-system-x86\), pid 456 \(firecracker\): the plan stops at "check that no VM uses kvm_amd" until they are stopped \(nestvirt stop web, shut down pid 456\)/,
  );
  const j = JSON.parse((await h.cli(['enable', '--dry-run', '--json'])).stdout);
  assert.deepEqual(j.users, [
    { pid: 123, comm: 'qemu-system-x86', name: 'web', nestvirt: true },
    { pid: 456, comm: 'firecracker', name: null, nestvirt: false },
  ]);
});

test('not root: one line naming the command to re-run, exit 2; --dry-run works without root', async () => {
  const h = await setup(AMD0);
  const r = await h.cli(['enable', '--persist'], 1000);
  assert.equal(r.code, 2);
  assert.equal(r.stderr, 'nestvirt: enable needs root: run `sudo nestvirt enable --persist`\n');
  const on1 = await setup({ cpu: 'amd', loaded: { kvm_amd: { nested: '1' } } });
  const d = await on1.cli(['disable'], 1000);
  assert.equal(d.code, 2);
  assert.equal(d.stderr, 'nestvirt: disable needs root: run `sudo nestvirt disable`\n');
  const dry = await h.cli(['enable', '--dry-run', '--persist'], 1000);
  assert.equal(dry.code, 0, dry.stderr);
  assert.match(dry.stdout, /^enable KVM nesting for kvm_amd \(now and at every boot\):\n/);
  assert.deepEqual(await h.calls(), []);
  // Already on: no root needed to be told so.
  const on = await setup({ cpu: 'amd', loaded: { kvm_amd: { nested: '1' } } });
  assert.equal((await on.cli(['enable'], 1000)).code, 0);
});

test('no KVM extension (a PVM guest like this machine): exit 1 with the explanation; --dry-run and --json too', async () => {
  const h = await setup({ base: 'pvm-firecracker' });
  const r = await h.cli(['enable']);
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    /^nestvirt: nothing to enable here: this machine is itself a PVM guest: .*\n  fix: none from inside this VM: a PVM host \(kvm_pvm\) does not pass VT-x\/AMD-V to its guests/,
  );
  assert.equal(r.stderr.split('\n').length, 3);
  const dry = await h.cli(['enable', '--dry-run']);
  assert.equal(dry.code, 1);
  assert.match(dry.stdout, /nothing to do\n  note: nothing to enable here/);
  const j = await h.cli(['enable', '--json']);
  assert.equal(j.code, 1);
  assert.equal(JSON.parse(j.stdout).problem.id, 'nesting.no-kvm');
  // disable there: nesting cannot be on, which is what disable wants.
  const off = await h.cli(['disable']);
  assert.equal(off.code, 0, off.stderr);
  assert.match(
    off.stdout,
    /^nesting is already off; nothing to do\n.*\n  note: nothing to disable here: this machine is itself a PVM guest/,
  );
});

test('bad input: unknown flag, --root without --dry-run, bad --module, missing --root dir: exit 2, one line', async () => {
  const h = await setup(AMD0);
  const cases: [string[], RegExp][] = [
    [
      ['enable', '--now'],
      /^nestvirt: enable: unknown flag --now\n  fix: see `nestvirt enable --help`\n$/,
    ],
    [['disable', '--force'], /^nestvirt: disable: unknown flag --force\n/],
    [
      ['enable', '--root', h.root],
      /^nestvirt: enable: --root DIR only plans for a captured tree; it needs --dry-run or --script\n/,
    ],
    [
      ['enable', '--dry-run', '--module', 'kvm_arm'],
      /^nestvirt: enable: --module must be one of kvm_intel, kvm_amd, kvm_hv, kvm, got "kvm_arm"\n$/,
    ],
    [
      ['enable', '--dry-run', '--root', join(h.root, 'nope')],
      /^nestvirt: enable: --root ".*nope" is not a directory\n/,
    ],
    [
      ['enable', '--script', '--json'],
      /^nestvirt: enable: --script and --json cannot be combined\n/,
    ],
    [['enable', 'now'], /^nestvirt: enable: unexpected argument "now"/],
  ];
  for (const [argv, re] of cases) {
    const r = await h.cli(argv);
    assert.equal(r.code, 2, argv.join(' '));
    assert.match(r.stderr, re, argv.join(' '));
  }
  assert.deepEqual(await h.calls(), []);
});

test('--script prints a POSIX script; --root plans for a captured tree', async () => {
  const h = await setup(AMD0);
  const r = await h.cli(['enable', '--script', '--persist', '--root', h.root]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(
    r.stdout,
    /^#!\/bin\/sh\n# enable KVM nesting for kvm_amd \(now and at every boot\)\n/,
  );
  assert.match(r.stdout, /\nmodprobe -r kvm_amd\n/);
  assert.deepEqual(await h.calls(), []);
  assert.deepEqual(await readdir(h.home), []);
});

test('a garbage --root tree: one line, exit 2', async () => {
  const h = await setup(AMD0);
  const empty = await tempDir('nestvirt-enable-empty-');
  const r = await h.cli(['enable', '--dry-run', '--root', empty]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /^nestvirt: cannot read .*\/proc\/cpuinfo: not a captured tree/);
  await writeFile(join(empty, 'garbage'), 'x');
  await mkdir(join(empty, 'proc'));
  await writeFile(join(empty, 'proc', 'cpuinfo'), '\x00\x01 not cpuinfo\n');
  const g = await h.cli(['enable', '--script', '--root', empty]);
  assert.equal(g.code, 2);
  assert.match(g.stderr, /has no recognisable CPU description/);
  assert.equal(g.stdout, '');
});

test('another enable/disable holding the nesting lock: exit 4, nothing changed', async () => {
  const h = await setup(AMD0);
  await mkdir(join(h.home, 'locks'), { recursive: true });
  // This test process is alive, so the lock is not stale.
  await writeFile(
    join(h.home, 'locks', 'nesting.lock'),
    JSON.stringify({ pid: process.pid, cmd: 'enable' }),
  );
  const r = await h.cli(['enable']);
  assert.equal(r.code, 4);
  assert.match(r.stderr, /^nestvirt: KVM nesting is busy: pid \d+ \(nestvirt enable\)\n/);
  assert.deepEqual(await h.calls(), []);
});
