/**
 * doctor inside a real L1 with a real /dev/kvm: a QEMU TCG guest with
 * `-cpu max` (SVM + NPT) loads kvm_amd nested=1 and runs the very same
 * nestvirt build (node, QEMU and dist/ copied into a throwaway initramfs)
 * as `nestvirt doctor --json`. Its KVM probe must really run the probe
 * firmware as a KVM guest (an L2), see SVM in that guest's CPUID, and the
 * chain passed through fw_cfg must give the exact level.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import {
  mkdtemp,
  mkdir,
  readdir,
  readFile,
  rm,
  copyFile,
  writeFile,
  chmod,
  cp,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { run, which } from '../../src/util/exec.js';
import { PROJECT_ROOT } from '../helpers/cli.js';
import { childChain, encodeChain } from '../../src/host/chain.js';

/** Debian's kernel, downloaded and unpacked once per machine (never installed). */
async function debianKernel(): Promise<{ vmlinuz: string; modules: string }> {
  const cache =
    process.env.NESTVIRT_DOCTOR_KERNEL_CACHE || join(tmpdir(), 'nestvirt-doctor-kernel');
  const tree = join(cache, 'k');
  if (!existsSync(join(tree, 'boot'))) {
    await mkdir(cache, { recursive: true });
    const depends = async (): Promise<string | undefined> => {
      const dep = await run(['apt-cache', 'depends', 'linux-image-amd64'], { check: false });
      return /Depends: (linux-image-\d\S*-amd64)\s*$/m.exec(dep.stdout)?.[1];
    };
    // A machine whose packages came preinstalled may have no package lists yet.
    const pkg = (await depends()) ?? (await run(['apt-get', 'update', '-q']).then(depends));
    assert.ok(pkg, 'apt knows no linux-image-amd64 dependency (check the apt sources)');
    await run(['apt-get', 'download', pkg], { cwd: cache });
    const deb = (await readdir(cache)).find((f) => f.startsWith(pkg + '_') && f.endsWith('.deb'));
    assert.ok(deb, 'downloaded .deb');
    await run(['dpkg-deb', '-x', join(cache, deb), tree + '.tmp']);
    await run(['mv', tree + '.tmp', tree]);
  }
  const vmlinuz = (await readdir(join(tree, 'boot'))).find((f) => f.startsWith('vmlinuz-'))!;
  const ver = vmlinuz.slice('vmlinuz-'.length);
  return {
    vmlinuz: join(tree, 'boot', vmlinuz),
    modules: join(tree, 'lib', 'modules', ver, 'kernel'),
  };
}

/** Copies a program and the shared libraries ldd names into the tree. */
async function copyProgram(root: string, prog: string): Promise<void> {
  const files = [prog];
  for (const m of (await run(['ldd', prog])).stdout.matchAll(/(\/\S+) \(0x/g)) files.push(m[1]!);
  for (const f of files) {
    await mkdir(join(root, dirname(f)), { recursive: true });
    await copyFile(f, join(root, f));
    await chmod(join(root, f), 0o755);
  }
}

const INIT = `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev; mount -t tmpfs tmp /tmp
for m in qemu_fw_cfg irqbypass kvm ccp; do insmod /mods/$m.ko; done
insmod /mods/kvm-amd.ko nested=1
cd /nv
PATH=/usr/bin:/bin NESTVIRT_PROBE_TIMEOUT_MS=60000 /nv/bin/nestvirt doctor --json >/tmp/out.json 2>/tmp/err.txt
rc=$?
# The report goes to the second serial port: the kernel's console messages
# share the first one and could interleave with it.
stty -F /dev/ttyS1 raw -echo 2>/dev/null
{ echo NV-EXIT=$rc; echo NV-JSON-BEGIN; cat /tmp/out.json; echo NV-JSON-END; } >/dev/ttyS1
cat /tmp/err.txt
poweroff -f
`;

test(
  'doctor in a real L1 (TCG -cpu max, kvm_amd nested=1): the KVM probe runs an L2 that sees SVM',
  { timeout: 280_000 },
  async () => {
    const k = await debianKernel();
    const work = await mkdtemp(join(tmpdir(), 'nv-doctor-l1-'));
    try {
      const ird = join(work, 'ird');
      for (const d of ['bin', 'proc', 'sys', 'dev', 'tmp', 'mods', 'nv/dist', 'usr/share/qemu'])
        await mkdir(join(ird, d), { recursive: true });
      await copyFile('/bin/busybox', join(ird, 'bin/busybox'));
      for (const m of [
        'virt/lib/irqbypass.ko',
        'drivers/crypto/ccp/ccp.ko',
        'arch/x86/kvm/kvm.ko',
        'arch/x86/kvm/kvm-amd.ko',
        'drivers/firmware/qemu_fw_cfg.ko',
      ])
        await copyFile(join(k.modules, m), join(ird, 'mods', m.split('/').pop()!));
      const node = process.execPath;
      const qemu = (await which('qemu-system-x86_64'))!;
      await copyProgram(ird, node);
      await copyProgram(ird, qemu);
      // QEMU's TCG accelerator is a loadable module; kvmvapic.bin is needed under KVM.
      await cp('/usr/lib/x86_64-linux-gnu/qemu', join(ird, 'usr/lib/x86_64-linux-gnu/qemu'), {
        recursive: true,
      });
      for (const f of ['kvmvapic.bin', 'linuxboot_dma.bin'])
        await copyFile(join('/usr/share/qemu', f), join(ird, 'usr/share/qemu', f));
      await cp(join(PROJECT_ROOT, 'bin'), join(ird, 'nv/bin'), { recursive: true });
      await cp(join(PROJECT_ROOT, 'dist/cli'), join(ird, 'nv/dist/cli'), { recursive: true });
      await copyFile(join(PROJECT_ROOT, 'package.json'), join(ird, 'nv/package.json'));
      await writeFile(join(ird, 'init'), INIT, { mode: 0o755 });
      const list = (await run(['find', '.'], { cwd: ird })).stdout;
      const initrd = join(work, 'initrd.cpio');
      await run(['cpio', '-o', '-H', 'newc', '--quiet', '-O', initrd], { cwd: ird, input: list });

      // What nestvirt on this machine (level 1) passes to a TCG child.
      const chain = childChain(
        { level: 1, relative: 0, chain: [{ level: 1, relative: 0, name: 'host', runner: 'pvm' }] },
        'l1probe',
        'tcg',
      );
      const report = join(work, 'report.txt');
      const r = await run(
        [
          'qemu-system-x86_64',
          '-accel',
          'tcg',
          '-M',
          'q35',
          '-cpu',
          'max',
          '-m',
          '1536',
          '-smp',
          '2',
          '-nodefaults',
          '-no-user-config',
          '-display',
          'none',
          '-serial',
          'stdio',
          '-serial',
          `file:${report}`,
          '-no-reboot',
          '-kernel',
          k.vmlinuz,
          '-initrd',
          initrd,
          '-append',
          'console=ttyS0 quiet panic=-1',
          '-fw_cfg',
          `name=opt/org.nestvirt/chain,string=${encodeChain(chain).replace(/,/g, ',,')}`,
        ],
        { timeoutMs: 240_000, check: false },
      );
      const serial = r.stdout.replace(/\r/g, '');
      const out = (await readFile(report, 'utf8').catch(() => '')).replace(/\r/g, '');
      assert.ok(!r.timedOut, `the L1 did not finish in time:\n${serial.slice(-2000)}`);
      const code = /NV-EXIT=(\d+)/.exec(out)?.[1];
      const json = /NV-JSON-BEGIN\n([\s\S]*?)NV-JSON-END/.exec(out)?.[1];
      assert.ok(json, `no report from the L1:\n${serial.slice(-3000)}`);
      const j = JSON.parse(json);
      assert.equal(code, '0', `doctor in the L1 exits 0:\n${serial.slice(-1500)}`);
      assert.equal(j.level, 2);
      assert.equal(j.levelSource, 'chain');
      assert.equal(j.machine.hypervisor, 'qemu-tcg');
      assert.equal(j.cpu.extensions, 'svm');
      assert.equal(j.cpu.secondLevelPaging, 'npt');
      assert.equal(j.kvm.device, true);
      assert.equal(j.kvm.module, 'kvm_amd');
      assert.equal(j.kvm.nested, true);
      assert.equal(j.kvm.access.writable, true);
      assert.equal(j.kvm.probe.ran, true);
      assert.equal(j.kvm.probe.ok, true, j.kvm.probe.detail);
      assert.equal(j.kvm.probe.stage, 'guest');
      assert.deepEqual(
        j.kvm.probe.guestSees,
        { vmx: false, svm: true },
        'the L2 probe guest sees SVM: nesting really reaches it',
      );
      // KVM runs guests here, so the TCG fallback is not probed.
      assert.equal(j.tcg.probe.ran, false, j.tcg.probe.detail);
      assert.equal(j.verdict.acceleratedVMs, true);
      assert.equal(j.verdict.acceleratedNestedVMs, true);
      assert.deepEqual(j.verdict.problems, []);
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  },
);
