import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile, mkdir, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import {
  guestFiles,
  renderInit,
  renderInittab,
  PREFETCH_LIST,
  ROOTFS_MARKER,
  QGA_PORT,
} from '../../../src/image/guest.js';
import { READY_MARKER } from '../../../src/image/recipe.js';
import { cpioRecord, writeCpio } from '../../../src/image/cpio.js';

test('/init: mounts, loads modules, switches root only when asked, prints the ready marker, execs init', () => {
  const s = renderInit({ hostname: 'tiny', bootModules: ['virtio_pci', 'qemu_fw_cfg'] });
  assert.match(s, /^#!\/bin\/sh\n/);
  for (const want of [
    'mount -t proc proc /proc',
    'mount -t devtmpfs devtmpfs /dev',
    'for m in virtio_pci qemu_fw_cfg; do',
    'nestvirt.root=*',
    'nestvirt.hostname=*',
    `[ ! -e /${ROOTFS_MARKER} ]`,
    'exec switch_root /newroot /init',
    'modprobe -q crc32c_generic',
    '/sys/class/virtio-ports/*',
    'udhcpc -i "$i"',
    `echo "${READY_MARKER} `,
    'exec /bin/busybox init',
  ])
    assert.ok(s.includes(want), `init lacks: ${want}`);
  // The marker comes after the set-up and before init takes over.
  assert.ok(
    s.indexOf(READY_MARKER) > s.indexOf('udhcpc') &&
      s.indexOf(READY_MARKER) < s.indexOf('exec /bin/busybox init'),
  );
  // The root disk's read-ahead list is read in stage 1, before switch_root.
  assert.ok(
    s.indexOf(`cat $(cat ${PREFETCH_LIST})`) > 0 &&
      s.indexOf(`cat $(cat ${PREFETCH_LIST})`) < s.indexOf('exec switch_root'),
  );
  // Valid shell syntax (busybox sh -n).
  const r = spawnSync('busybox', ['sh', '-n'], { input: s });
  assert.equal(r.status, 0, r.stderr?.toString());
});

test('inittab respawns qemu-ga and a root shell on ttyS0', () => {
  const t = renderInittab();
  assert.match(t, /^::respawn:\/etc\/nestvirt\/qga$/m);
  assert.match(t, /^ttyS0::respawn:-\/bin\/sh$/m);
});

test('guest files: every script parses, qemu-ga runs on the virtio port, shutdown maps to busybox', () => {
  const files = guestFiles({ hostname: 'hypervisor' });
  const byPath = new Map(files.map((f) => [f.path, f]));
  for (const p of [
    'init',
    'etc/inittab',
    'etc/nestvirt/qga',
    'etc/nestvirt/udhcpc',
    'usr/sbin/shutdown',
    'etc/acpi/PWRF/00000080',
    'etc/passwd',
  ])
    assert.ok(byPath.has(p), p);
  assert.equal(byPath.get('etc/hostname')!.content, 'hypervisor\n');
  assert.ok(byPath.get('etc/nestvirt/qga')!.content.includes(QGA_PORT));
  for (const f of files.filter((f) => f.content.startsWith('#!/bin/sh'))) {
    assert.equal(f.mode, 0o755, f.path);
    const r = spawnSync('busybox', ['sh', '-n'], { input: f.content });
    assert.equal(r.status, 0, `${f.path}: ${r.stderr?.toString()}`);
  }
});

test('cpio newc records: header fields, name and data padded to 4 bytes', () => {
  const rec = cpioRecord({ name: 'init', mode: 0o100755, data: Buffer.from('#!/bin/sh\n') }, 7);
  const h = rec.toString('latin1');
  assert.equal(h.slice(0, 6), '070701');
  assert.equal(parseInt(h.slice(6, 14), 16), 7); // ino
  assert.equal(parseInt(h.slice(14, 22), 16), 0o100755); // mode
  assert.equal(parseInt(h.slice(22, 30), 16), 0); // uid root
  assert.equal(parseInt(h.slice(54, 62), 16), 10); // filesize
  assert.equal(parseInt(h.slice(94, 102), 16), 5); // namesize incl. NUL
  assert.equal(rec.length % 4, 0);
});

test('writeCpio output is read back by cpio(1) with links, modes and root ownership', async () => {
  const d = await mkdtemp(join(tmpdir(), 'nestvirt-cpio-'));
  try {
    const stage = join(d, 'stage');
    await mkdir(join(stage, 'etc'), { recursive: true });
    await writeFile(join(stage, 'init'), '#!/bin/sh\necho hi\n', { mode: 0o755 });
    await writeFile(join(stage, 'etc', 'odd'), 'abc');
    await symlink('usr/bin', join(stage, 'bin'));
    const out = new PassThrough();
    const chunks: Buffer[] = [];
    out.on('data', (b: Buffer) => chunks.push(b));
    await writeCpio(stage, out);
    const archive = Buffer.concat(chunks);
    const list = spawnSync('cpio', ['-itv', '--quiet'], { input: archive });
    assert.equal(list.status, 0, list.stderr?.toString());
    const text = list.stdout.toString();
    assert.match(text, /^lrwxrwxrwx .* root +root .* bin -> usr\/bin$/m);
    assert.match(text, /^-rwxr-xr-x .* root +root .* init$/m);
    assert.match(text, /^drwx.* etc$/m);
    const x = join(d, 'x');
    await mkdir(x);
    assert.equal(spawnSync('cpio', ['-id', '--quiet'], { input: archive, cwd: x }).status, 0);
    assert.equal(await readFile(join(x, 'etc', 'odd'), 'utf8'), 'abc');
  } finally {
    await rm(d, { recursive: true, force: true });
  }
});
