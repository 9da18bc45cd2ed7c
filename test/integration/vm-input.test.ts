/**
 * Bad input to the VM commands: one clear line, the documented exit code,
 * and no half-made VM left behind. Uses the real CLI and images; the
 * full-disk case runs on a small tmpfs this test mounts (root).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readdir, writeFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { totalmem } from 'node:os';
import { vmTestHome, json, type VmTestHome } from './vm-helpers.js';
import { tempHome, runBin } from '../helpers/cli.js';
import { run } from '../../src/util/exec.js';
import { hostVerdict } from '../../src/vm/host.js';

let h: VmTestHome;
before(async () => {
  h = await vmTestHome();
});
after(async () => {
  await h?.cleanup();
});

/** Asserts exit code and that stderr is one message line (+ an optional fix line). */
function oneLine(r: { code: number; stderr: string }, code: number, re: RegExp): void {
  assert.equal(r.code, code, r.stderr);
  assert.match(r.stderr, /^nestvirt: [^\n]+\n(  fix: [^\n]+\n)?$/, r.stderr);
  assert.match(r.stderr, re);
  assert.doesNotMatch(r.stderr, /\bat .+\.js:\d+/);
}

async function noVms(): Promise<void> {
  const left = await readdir(join(h.home, 'vms')).catch(() => [] as string[]);
  assert.deepEqual(left, [], 'no half-made VM left behind');
}

test('names: invalid, path traversal, too long for unix sockets', async () => {
  oneLine(await h.nv(['run', '--name', '../evil', '--no-start']), 2, /invalid vm name "..\/evil"/);
  oneLine(await h.nv(['run', '--name', 'a/b', '--no-start']), 2, /invalid vm name/);
  oneLine(await h.nv(['info', '../../etc']), 2, /invalid vm name/);
  oneLine(await h.nv(['rm', '.']), 2, /invalid vm name/);
  const deep = await tempHome('nv-' + 'd'.repeat(60));
  const r = await runBin(['run', '--name', 'x'.repeat(50), '--no-start', '--kernel', '/dev/null'], {
    env: { NESTVIRT_HOME: deep },
  });
  oneLine(r, 2, /longer than unix sockets allow/);
  await noVms();
});

test('sizes and counts: malformed (2) and beyond this host (1)', async () => {
  oneLine(
    await h.nv(['run', '--memory', 'lots', '--no-start']),
    2,
    /--memory must be a size like 512M or 2G, got "lots"/,
  );
  oneLine(await h.nv(['run', '--cpus', 'two', '--no-start']), 2, /--cpus must be a whole number/);
  oneLine(await h.nv(['run', '--port', '99999:22', '--no-start']), 2, /port/);
  oneLine(
    await h.nv(['run', '--accel', 'fast', '--no-start']),
    2,
    /--accel must be auto, kvm or tcg/,
  );
  const tooMuch = `${Math.ceil(totalmem() / 2 ** 30) + 64}G`;
  oneLine(
    await h.nv(['run', '--name', 'big', '--memory', tooMuch, '--no-start']),
    1,
    /is more than this host has/,
  );
  oneLine(
    await h.nv(['run', '--name', 'wide', '--cpus', '255', '--no-start']),
    1,
    /--cpus 255 is more than this host has/,
  );
  await noVms();
});

test('images: unknown, missing files, corrupt disk', async () => {
  oneLine(await h.nv(['run', 'nosuch', '--name', 'a', '--no-start']), 2, /no image named "nosuch"/);
  // A disk image whose qcow2 is garbage.
  const dir = join(h.home, 'images', 'junk');
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'disk.qcow2'), 'this is not a qcow2 file\n'.repeat(100));
  await writeFile(
    join(dir, 'spec.json'),
    JSON.stringify({
      name: 'junk',
      builtin: false,
      disk: join(dir, 'disk.qcow2'),
      diskFormat: 'qcow2',
      features: {
        guestAgent: false,
        sshd: false,
        cloudInit: false,
        kvmModules: false,
        nestvirt: false,
      },
      arch: 'x86_64',
      sizeBytes: 2500,
      createdAt: new Date().toISOString(),
    }),
  );
  oneLine(
    await h.nv(['run', 'junk', '--name', 'b', '--no-start']),
    1,
    /is not a readable qcow2 file/,
  );
  oneLine(
    await h.nv(['run', '--name', 'c', '--kernel', '/nonexistent/vmlinux', '--no-start']),
    1,
    /kernel \/nonexistent\/vmlinux is missing/,
  );
  await rm(dir, { recursive: true });
  await noVms();
});

test('state: duplicate name, unknown VM, rm of a missing VM, exec with no command', async () => {
  assert.equal((await h.nv(['run', '--name', 'dup', '--no-start'])).code, 0);
  oneLine(await h.nv(['run', '--name', 'dup', '--no-start']), 2, /a VM named "dup" already exists/);
  oneLine(await h.nv(['info', 'ghost']), 1, /no VM named "ghost"/);
  oneLine(await h.nv(['stop', 'ghost']), 1, /no VM named "ghost"/);
  oneLine(await h.nv(['rm', 'ghost']), 1, /no VM named "ghost"/);
  oneLine(await h.nv(['exec', 'dup']), 2, /exec: no command given/);
  oneLine(await h.nv(['exec', 'dup', '--', 'true']), 1, /VM dup is not running/);
  oneLine(await h.nv(['console', 'dup']), 1, /VM dup is not running/);
  const st = json<{ how: string }>(await h.nv(['stop', 'dup', '--json']));
  assert.equal(st.how, 'none');
  assert.equal((await h.nv(['rm', 'dup'])).code, 0);
  await noVms();
});

test("--accel kvm: refused with doctor's reason and fix where KVM cannot run guests", async () => {
  const hv = await hostVerdict(h.home, run, { ...process.env, ...h.env });
  const r = await h.nv(['run', '--name', 'k', '--accel', 'kvm', '--json']);
  if (!hv.kvm) {
    assert.equal(r.code, 1);
    assert.match(r.stderr, /--accel kvm is not possible here: .+\n  fix: .+/);
    assert.equal(json<{ error: { code: string } }>(r).error.code, 'vm.no-kvm');
    await noVms();
  } else {
    assert.equal(r.code, 0, r.stderr);
    assert.equal(json<{ accel: { effective: string } }>(r).accel.effective, 'kvm');
    assert.equal((await h.nv(['rm', '--force', 'k'])).code, 0);
  }
});

test('a full disk (ENOSPC): one line, exit 1, nothing left', async () => {
  const mnt = await tempHome('nv-full-');
  await run(['mount', '-t', 'tmpfs', '-o', 'size=256k', 'nv-full', mnt]);
  try {
    // Fill it, leaving a little for directories.
    await writeFile(join(mnt, 'filler'), Buffer.alloc(200 * 1024)).catch(() => {});
    await writeFile(join(mnt, 'filler2'), Buffer.alloc(56 * 1024)).catch(() => {});
    const kernel = (await import('../helpers/images.js')).testImage;
    const tiny = (await kernel('tiny')).spec;
    const r = await runBin(
      [
        'run',
        '--name',
        'full',
        '--kernel',
        tiny.kernel!,
        '--initrd',
        tiny.initrd!,
        '--disk-size',
        '1G',
        '--no-start',
      ],
      {
        env: { NESTVIRT_HOME: mnt },
      },
    );
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^nestvirt: no space left on device/);
    const left = (await readdir(join(mnt, 'vms')).catch(() => [] as string[])).filter(
      (n) => !n.startsWith('.'),
    );
    assert.deepEqual(left, []);
  } finally {
    await run(['umount', mnt], { check: false });
    await rm(mnt, { recursive: true, force: true });
  }
});
