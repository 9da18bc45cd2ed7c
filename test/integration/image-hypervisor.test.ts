/**
 * The `hypervisor` built-in: boots under TCG from its kernel, initramfs and
 * a qcow2 overlay on its root disk, and carries this very nestvirt build
 * (same version), QEMU, the KVM modules and the pre-seeded `tiny` image.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { mkdtemp, rm } from 'node:fs/promises';
import { testImage } from '../helpers/images.js';
import { bootGuest, Qga, waitSerial } from './image-guest.js';
import { run } from '../../src/util/exec.js';
import { VERSION } from '../../src/version.js';

test(
  'hypervisor boots, runs the same nestvirt, QEMU and KVM inside; tiny is pre-seeded',
  { timeout: 900_000 },
  async () => {
    const { spec } = await testImage('hypervisor');
    assert.equal(spec.features.nestvirt, true);
    assert.equal(spec.diskFormat, 'raw');
    // The base image is never written: the guest boots from a qcow2 overlay on it.
    const dir = await mkdtemp(join(tmpdir(), 'nestvirt-hv-'));
    const overlay = join(dir, 'disk.qcow2');
    await run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', spec.disk!, overlay]);
    const h = await bootGuest(spec, { memMiB: 1024, overlay });
    try {
      await waitSerial(h, spec.readyMarker!, 240_000);
      const qga = await Qga.connect(h.qgaSock, 240_000, h.proc);
      process.stderr.write(
        `hypervisor: guest agent ${Math.round(performance.now() - h.startedAt)} ms\n`,
      );
      try {
        const root = await qga.exec('cat /etc/nestvirt/rootfs && grep " / " /proc/mounts');
        assert.equal(root.code, 0, root.err);
        assert.match(root.out, / \/ ext4 /);
        const v = await qga.exec('nestvirt version --json', 240_000);
        assert.equal(v.code, 0, v.err);
        assert.deepEqual(JSON.parse(v.out), { version: VERSION });
        const q = await qga.exec('qemu-system-x86_64 --version && qemu-img --version | head -1');
        assert.equal(q.code, 0, q.err);
        assert.match(q.out, /QEMU emulator version/);
        const kvm = await qga.exec(
          'modprobe kvm_amd && cat /sys/module/kvm_amd/parameters/nested && test -c /dev/kvm && echo ok',
        );
        assert.equal(kvm.code, 0, kvm.err);
        assert.match(kvm.out, /^(1|Y)\nok\n$/);
        const ls = await qga.exec(
          'NESTVIRT_HOME=/var/lib/nestvirt nestvirt image ls --json',
          240_000,
        );
        assert.equal(ls.code, 0, ls.err);
        const tiny = (JSON.parse(ls.out) as { name: string; built: boolean }[]).find(
          (r) => r.name === 'tiny',
        );
        assert.equal(tiny?.built, true);
        // No apt inside: the pre-seeded tiny is used as it is, not rebuilt.
        const b = await qga.exec('nestvirt image build tiny --json', 240_000);
        assert.equal(b.code, 0, b.err);
        assert.equal(
          (JSON.parse(b.out) as { kernel: string }).kernel,
          '/var/lib/nestvirt/images/tiny/vmlinux',
        );
        assert.doesNotMatch(b.err, /assemble/);
      } finally {
        qga.close();
      }
    } finally {
      await h.stop();
      await rm(dir, { recursive: true, force: true });
    }
  },
);
