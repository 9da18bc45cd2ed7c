/**
 * A real L1: the built-in `tiny` image booted under TCG with `-cpu max`
 * (SVM with NPT), kvm_amd loaded inside it with nested=0. The guest has no
 * node, so nestvirt plans on the host for a tree captured from the guest
 * (`nestvirt enable --script --root TREE`) and the guest runs that POSIX
 * script through its guest agent. doctor reads the guest's captured tree
 * before and after (`nestvirt doctor --root TREE --json`). The same boot
 * also checks the script's refusal while a process holds /dev/kvm, and that
 * `nestvirt disable --script` turns nesting off again.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { testImage } from '../helpers/images.js';
import { runBin } from '../helpers/cli.js';
import { bootGuest, Qga, waitSerial } from './image-guest.js';
import { READY_MARKER } from '../../src/image/recipe.js';

/** What doctor and enable read, captured inside the guest as `@@@ PATH` + base64 blocks. */
const CAPTURE = `
for f in /proc/cpuinfo /proc/modules /proc/cmdline /proc/version /proc/sys/kernel/osrelease \\
  /sys/module/kvm*/parameters/* /sys/module/kvm*/refcnt /sys/module/kvm*/initstate \\
  /sys/class/dmi/id/sys_vendor /sys/class/dmi/id/product_name /sys/class/dmi/id/product_version \\
  /sys/class/dmi/id/bios_vendor /sys/class/dmi/id/bios_version /sys/class/dmi/id/board_vendor \\
  /sys/class/dmi/id/chassis_vendor; do
  [ -f "$f" ] && [ -r "$f" ] && { echo "@@@ $f"; base64 < "$f"; }
done
[ -c /dev/kvm ] && { echo "@@@ /dev/kvm"; echo "character device 10:232 (captured)" | base64; }
echo "@@@ /nestvirt/dmesg.txt"; dmesg | base64
true`;

/** Runs the capture in the guest and writes the tree into a fresh host directory. */
async function captureTree(qga: Qga, into: string): Promise<string> {
  const r = await qga.exec(CAPTURE);
  assert.equal(r.code, 0, r.err);
  await mkdir(into, { recursive: true });
  for (const block of r.out.split('@@@ ').slice(1)) {
    const nl = block.indexOf('\n');
    const path = block.slice(0, nl).trim();
    const data = Buffer.from(block.slice(nl + 1).replace(/\s+/g, ''), 'base64');
    await mkdir(dirname(join(into, path)), { recursive: true });
    await writeFile(join(into, path), data);
  }
  return into;
}

async function doctor(tree: string) {
  const r = await runBin(['doctor', '--root', tree, '--json']);
  assert.ok(r.code === 0 || r.code === 1, `doctor exit ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout) as {
    kvm: { module: string | null; nested: boolean | null; device: boolean };
    verdict: { acceleratedVMs: boolean; acceleratedNestedVMs: boolean; problems: { id: string }[] };
  };
}

/** Writes a script into the guest and runs it with sh; returns code and output. */
async function runScript(qga: Qga, script: string) {
  const b64 = Buffer.from(script).toString('base64');
  return qga.exec(`echo ${b64} | base64 -d > /tmp/nestvirt.sh && sh /tmp/nestvirt.sh`);
}

test(
  "real L1 (TCG -cpu max): enable's script turns kvm_amd nesting on; doctor agrees before and after",
  { timeout: 600_000 },
  async () => {
    const { spec } = await testImage('tiny');
    const work = await mkdtemp(join(tmpdir(), 'nestvirt-enable-l1-'));
    const g = await bootGuest(spec, { memMiB: 256 });
    try {
      await waitSerial(g, READY_MARKER, 180_000);
      const qga = await Qga.connect(g.qgaSock, 180_000);
      try {
        // kvm_amd with nested=0, as a host would have it before `enable`.
        const load = await qga.exec(
          'modprobe -r kvm_amd 2>/dev/null; modprobe kvm_amd nested=0 && cat /sys/module/kvm_amd/parameters/nested',
        );
        assert.equal(load.code, 0, load.err);
        assert.equal(load.out.trim(), '0');

        const before = await captureTree(qga, join(work, 'before'));
        const d0 = await doctor(before);
        assert.equal(d0.kvm.module, 'kvm_amd');
        assert.equal(d0.kvm.nested, false);
        assert.equal(d0.kvm.device, true);
        assert.equal(d0.verdict.acceleratedVMs, true);
        assert.equal(d0.verdict.acceleratedNestedVMs, false);
        assert.ok(d0.verdict.problems.some((p) => p.id === 'kvm.nested-off'));

        // The plan for the guest's tree, as JSON and as the script the guest runs.
        const plan = await runBin(['enable', '--dry-run', '--json', '--root', before]);
        assert.equal(plan.code, 0, plan.stderr);
        const pj = JSON.parse(plan.stdout);
        assert.equal(pj.module, 'kvm_amd');
        assert.equal(pj.before, false);
        assert.deepEqual(
          pj.steps
            .map((s: { shell: string[] }) => s.shell)
            .flat()
            .filter((l: string) => l.startsWith('modprobe')),
          ['modprobe -r kvm_amd', 'modprobe kvm_amd nested=1'],
        );
        const script = await runBin(['enable', '--script', '--root', before]);
        assert.equal(script.code, 0, script.stderr);
        assert.match(script.stdout, /^#!\/bin\/sh\n/);

        // While a process holds /dev/kvm, the script refuses and changes nothing.
        const held = await qga.exec(
          'sleep 300 < /dev/kvm > /dev/null 2>&1 & echo $! > /tmp/holder; sleep 0.5; cat /sys/module/kvm_amd/refcnt',
        );
        assert.equal(held.code, 0, held.err);
        assert.notEqual(held.out.trim(), '0', 'an open /dev/kvm holds a reference on kvm_amd');
        const refused = await runScript(qga, script.stdout);
        assert.equal(refused.code, 1);
        assert.equal(
          refused.err,
          'nestvirt: kvm_amd is in use by running VMs; stop them first and retry\n',
        );
        const still = await qga.exec(
          'cat /sys/module/kvm_amd/parameters/nested; kill $(cat /tmp/holder); sleep 0.5; cat /sys/module/kvm_amd/refcnt',
        );
        assert.equal(still.out, '0\n0\n');

        // Now the script runs through: unload, load with nested=1, verify.
        const ran = await runScript(qga, script.stdout);
        assert.equal(ran.code, 0, `script failed: ${ran.err}`);
        const now = await qga.exec(
          'cat /sys/module/kvm_amd/parameters/nested; test -c /dev/kvm && echo kvm-dev',
        );
        assert.equal(now.out, '1\nkvm-dev\n');

        const after = await captureTree(qga, join(work, 'after'));
        const d1 = await doctor(after);
        assert.equal(d1.kvm.nested, true);
        assert.equal(d1.verdict.acceleratedVMs, true);
        assert.equal(d1.verdict.acceleratedNestedVMs, true);

        // enable on the new tree: nothing to do; disable's script turns it off again.
        const again = await runBin(['enable', '--dry-run', '--json', '--root', after]);
        assert.equal(again.code, 0, again.stderr);
        assert.deepEqual(JSON.parse(again.stdout).steps, []);
        const off = await runBin(['disable', '--script', '--root', after], {
          env: { NESTVIRT_HOME: join(work, 'home') },
        });
        assert.equal(off.code, 0, off.stderr);
        const ranOff = await runScript(qga, off.stdout);
        assert.equal(ranOff.code, 0, ranOff.err);
        assert.equal((await qga.exec('cat /sys/module/kvm_amd/parameters/nested')).out, '0\n');
      } finally {
        qga.close();
      }
    } finally {
      await g.stop();
      await rm(work, { recursive: true, force: true });
    }
  },
);
