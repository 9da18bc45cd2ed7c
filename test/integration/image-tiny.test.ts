/**
 * The `tiny` built-in: built from Debian packages, boots under TCG to the
 * ready marker and a guest agent that runs commands, loads kvm_amd with
 * nested=1 under -cpu max, and can read its level chain through fw_cfg.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, stat } from 'node:fs/promises';
import { testImage } from '../helpers/images.js';
import { bootGuest, Qga, waitSerial } from './guest.js';
import { READY_MARKER } from '../../src/image/recipe.js';

test(
  'tiny builds with a PVH vmlinux, an initramfs and a documented cmdline',
  { timeout: 600_000 },
  async () => {
    const { spec } = await testImage('tiny');
    assert.equal(spec.name, 'tiny');
    assert.equal(spec.builtin, true);
    assert.equal(spec.features.guestAgent, true);
    assert.equal(spec.features.kvmModules, true);
    assert.match(spec.cmdline!, /console=ttyS0/);
    assert.equal(spec.readyMarker, READY_MARKER);
    const k = await readFile(spec.kernel!);
    assert.equal(k.subarray(0, 4).toString('latin1'), '\x7fELF');
    assert.ok((await stat(spec.initrd!)).size > 1_000_000);
    assert.match(spec.inputsHash!, /^[0-9a-f]{32}$/);
  },
);

test(
  'tiny boots under TCG: ready marker, qemu-ga exec, nested kvm_amd, fw_cfg chain',
  { timeout: 600_000 },
  async () => {
    const { spec } = await testImage('tiny');
    const g = await bootGuest(spec, {
      extraArgs: [
        '-fw_cfg',
        'name=opt/org.nestvirt/chain,string={"level":2}',
        '-smbios',
        'type=11,value=org.nestvirt.chain=e30',
      ],
    });
    try {
      const readyMs = await waitSerial(g, READY_MARKER, 120_000);
      const qga = await Qga.connect(g.qgaSock, 120_000);
      const agentMs = performance.now() - g.startedAt;
      process.stderr.write(
        `tiny: ready marker ${Math.round(readyMs)} ms, guest agent ${Math.round(agentMs)} ms\n`,
      );
      try {
        await qga.call('guest-ping');
        const echo = await qga.exec('echo hello; echo oops >&2; exit 3');
        assert.deepEqual(echo, { code: 3, out: 'hello\n', err: 'oops\n' });
        const kvm = await qga.exec(
          'modprobe kvm_amd && cat /sys/module/kvm_amd/parameters/nested && test -c /dev/kvm && echo kvm-dev',
        );
        assert.equal(kvm.code, 0, kvm.err);
        assert.match(kvm.out, /^(1|Y)\nkvm-dev\n$/);
        const chain = await qga.exec(
          'cat /sys/firmware/qemu_fw_cfg/by_name/opt/org.nestvirt/chain/raw; echo; ls /sys/firmware/dmi/entries/ | grep -c ^11-',
        );
        assert.equal(chain.code, 0, chain.err);
        assert.match(chain.out, /^\{"level":2\}\n1\n$/);
        const hn = await qga.exec('hostname; cat /proc/cmdline');
        assert.match(hn.out, /^tiny\n/);
      } finally {
        qga.close();
      }
    } finally {
      await g.stop();
    }
  },
);
