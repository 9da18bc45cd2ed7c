/**
 * Test set-up: a lean Debian image with cloud-init, sshd and qemu-guest-agent,
 * built on this machine with mmdebstrap (or debootstrap) from the apt mirror this machine
 * already uses (read from its apt sources, never written into the project),
 * booted by direct kernel boot (an uncompressed vmlinux through PVH, a
 * busybox initramfs that loads virtio and ext4, then systemd on /dev/vda).
 *
 * The build is cached under a shared directory keyed by everything that goes
 * in (suite, package list, kernel version, this recipe's version), so a test
 * run builds it once and later runs reuse it. Steps and their times are in
 * build.json next to the image.
 */
import { createHash, randomBytes } from 'node:crypto';
import {
  copyFile,
  cp,
  link,
  mkdir,
  readdir,
  readFile,
  rename,
  rm,
  stat,
  symlink,
  writeFile,
  chmod,
} from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, type Runner } from '../../src/util/exec.js';
import { acquire } from '../../src/state/lock.js';
import { Dirs, Files } from '../../src/state/paths.js';
import { writeJson } from '../../src/state/store.js';
import type { ImageSpec } from '../../src/image/types.js';
import { TEST_IMAGES_HOME } from './images.js';

/** Bump when the recipe below changes in a way that changes the image. */
const RECIPE = 7;

/** Packages on top of debootstrap's minbase (no Recommends). */
export const DEBIAN_CI_PACKAGES = [
  'systemd-sysv',
  'udev',
  'kmod',
  'cloud-init',
  // debootstrap does not resolve virtual packages; python3-cryptography needs this one.
  'python3-cffi-backend',
  'openssh-server',
  'ifupdown',
  'isc-dhcp-client',
  'qemu-guest-agent',
  'sudo',
  // systemd-logind needs it; logind turns the ACPI power button (`nestvirt stop`) into a clean shutdown.
  'dbus',
];

/** Units a test VM never needs; masked to shorten boot under TCG. */
const MASKED_UNITS = [
  'apt-daily.timer',
  'apt-daily-upgrade.timer',
  'e2scrub_all.timer',
  'e2scrub_reap.service',
  'fstrim.timer',
  'getty@tty1.service',
  'systemd-pstore.service',
  'systemd-hwdb-update.service',
  'ldconfig.service',
];

/** Modules the initramfs loads (with their dependencies) to mount the root disk. */
const INITRAMFS_MODULES = ['virtio_pci', 'virtio_blk', 'virtio_scsi', 'crc32c_generic', 'ext4'];

/** Kernel module trees a virtio guest never loads; left out to keep the image small. */
const PRUNED_MODULE_DIRS = [
  'kernel/sound',
  'kernel/drivers/gpu',
  'kernel/drivers/media',
  'kernel/drivers/infiniband',
  'kernel/drivers/iio',
  'kernel/drivers/staging',
  'kernel/drivers/net/wireless',
  'kernel/drivers/net/ethernet',
  'kernel/drivers/bluetooth',
  'kernel/drivers/isdn',
  'kernel/net/wireless',
  'kernel/net/mac80211',
  'kernel/net/bluetooth',
];

export const ROOT_LABEL = 'nestvirt-root';
/** Kernel command line: serial console, root by label (found by the initramfs). */
export const DEBIAN_CI_CMDLINE = `console=ttyS0 root=LABEL=${ROOT_LABEL} rw net.ifnames=0 systemd.show_status=0 loglevel=4`;

export interface DebianImage {
  /** Cache directory holding the files below and build.json. */
  dir: string;
  kernel: string;
  initrd: string;
  disk: string;
  cmdline: string;
  kernelVersion: string;
  /** Seconds per build step; `cached: true` when this call reused a build. */
  build: { cached: boolean; seconds: Record<string, number> };
}

/**
 * Shared cache for the Debian test image: $NESTVIRT_TEST_CACHE, else a
 * folder in the shared test-images home of test/helpers/images.ts (which
 * survives between test runs on one machine).
 */
export function testCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.NESTVIRT_TEST_CACHE || join(TEST_IMAGES_HOME, 'debian-ci');
}

/**
 * The apt mirror for `suite` from this machine's apt sources: deb822 files
 * (/etc/apt/sources.list.d/*.sources `URIs:`) first, then one-line
 * `deb URI SUITE ...` entries. Only entries serving `suite` itself count.
 */
export async function aptMirror(suite: string, root = '/'): Promise<string> {
  const d = join(root, 'etc/apt/sources.list.d');
  const lists: string[] = [];
  let names: string[] = [];
  try {
    names = (await readdir(d)).sort();
  } catch {
    /* none */
  }
  for (const n of names) {
    const text = await readFile(join(d, n), 'utf8').catch(() => '');
    if (n.endsWith('.sources')) {
      for (const stanza of text.split(/\n\s*\n/)) {
        const field = (k: string): string[] =>
          (new RegExp(`^${k}:\\s*(.*)$`, 'mi').exec(stanza.replace(/^#.*$/gm, ''))?.[1] ?? '')
            .split(/\s+/)
            .filter(Boolean);
        if (!field('Types').includes('deb')) continue;
        if (/^Enabled:\s*no/im.test(stanza)) continue;
        if (!field('Suites').includes(suite)) continue;
        const uri = field('URIs').find((u) => /^(https?|file):/.test(u));
        if (uri) return uri;
      }
    } else if (n.endsWith('.list')) lists.push(text);
  }
  lists.unshift(await readFile(join(root, 'etc/apt/sources.list'), 'utf8').catch(() => ''));
  for (const text of lists)
    for (const line of text.split('\n')) {
      const m = /^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)/.exec(line);
      if (m && m[2] === suite && /^(https?|file):/.test(m[1]!)) return m[1]!;
    }
  throw new Error(
    `no apt source for suite ${suite} in ${root}etc/apt (sources.list.d/*.sources or sources.list)`,
  );
}

async function codename(root = '/'): Promise<string> {
  const text = await readFile(join(root, 'etc/os-release'), 'utf8');
  const m = /^VERSION_CODENAME=(\S+)/m.exec(text);
  if (!m) throw new Error('no VERSION_CODENAME in /etc/os-release');
  return m[1]!.replace(/"/g, '');
}

/** The versioned kernel package behind linux-image-amd64, and its version. */
async function kernelPackage(
  r: Runner,
): Promise<{ pkg: string; version: string; release: string }> {
  const dep = await r(['apt-cache', 'depends', 'linux-image-amd64']);
  const pkg = /Depends:\s*(linux-image-\d\S*-amd64)\b/.exec(dep.stdout)?.[1];
  if (!pkg)
    throw new Error(
      `cannot find the kernel package behind linux-image-amd64: ${dep.stdout.trim()}`,
    );
  const show = await r(['apt-cache', 'show', '--no-all-versions', pkg]);
  const version = /^Version:\s*(\S+)/m.exec(show.stdout)?.[1] ?? 'unknown';
  return { pkg, version, release: pkg.replace(/^linux-image-/, '') };
}

/** Builds (or reuses) the image; safe to call from several processes at once. */
export async function debianImage(
  opts: { log?: (line: string) => void; runner?: Runner } = {},
): Promise<DebianImage> {
  const r = opts.runner ?? run;
  const log = opts.log ?? ((l: string) => process.stderr.write(`# debian-image: ${l}\n`));
  const suite = await codename();
  const mirror = await aptMirror(suite);
  const kernel = await kernelPackage(r);
  const key = createHash('sha256')
    .update(
      JSON.stringify({
        RECIPE,
        suite,
        packages: DEBIAN_CI_PACKAGES,
        kernel: [kernel.pkg, kernel.version],
        INITRAMFS_MODULES,
        MASKED_UNITS,
        DEBIAN_CI_CMDLINE,
      }),
    )
    .digest('hex')
    .slice(0, 16);
  const cache = testCacheDir();
  const dir = join(cache, `debian-ci-${key}`);
  await mkdir(cache, { recursive: true });
  const lock = await acquire(join(cache, `debian-ci-${key}.lock`), 'debian test image', {
    waitMs: 30 * 60_000,
  });
  try {
    if (existsSync(join(dir, 'build.json'))) {
      const info = JSON.parse(await readFile(join(dir, 'build.json'), 'utf8')) as {
        seconds: Record<string, number>;
      };
      log(`reusing ${dir}`);
      return result(dir, kernel.release, { cached: true, seconds: info.seconds });
    }
    const seconds: Record<string, number> = {};
    const work = join(cache, `.build-${key}-${randomBytes(3).toString('hex')}`);
    const timed = async <T>(name: string, fn: () => Promise<T>): Promise<T> => {
      const t0 = performance.now();
      log(`${name}…`);
      const v = await fn();
      seconds[name] = Math.round((performance.now() - t0) / 100) / 10;
      log(`${name}: ${seconds[name]} s`);
      return v;
    };
    try {
      await mkdir(work, { recursive: true });
      const rootfs = join(work, 'rootfs');
      await timed('bootstrap', () => bootstrapRootfs(rootfs, { cache, suite, mirror, r, log }));
      const kdir = join(work, 'kernel');
      await timed('kernel', async () => {
        await r(['apt-get', 'download', '-q', `${kernel.pkg}=${kernel.version}`], {
          cwd: work,
          timeoutMs: 10 * 60_000,
        });
        const deb = (await readdir(work)).find(
          (f) => f.startsWith(`${kernel.pkg}_`) && f.endsWith('.deb'),
        );
        if (!deb) throw new Error(`apt-get download left no ${kernel.pkg} .deb in ${work}`);
        await r(['dpkg-deb', '-x', join(work, deb), kdir]);
        await rm(join(work, deb));
        for (const p of PRUNED_MODULE_DIRS)
          await rm(join(kdir, 'lib/modules', kernel.release, p), { recursive: true, force: true });
        await r(['depmod', '-b', kdir, kernel.release]);
        await extractVmlinux(
          join(kdir, 'boot', `vmlinuz-${kernel.release}`),
          join(work, 'vmlinux'),
          r,
        );
      });
      await timed('configure', () => configureRootfs(rootfs, kdir, kernel.release, r));
      await timed('initramfs', () =>
        makeInitramfs(join(work, 'initrd.cpio'), kdir, kernel.release, r),
      );
      await timed('disk', async () => {
        const raw = join(work, 'disk.raw');
        await r(['mkfs.ext4', '-q', '-F', '-L', ROOT_LABEL, '-d', rootfs, raw, '3G'], {
          timeoutMs: 20 * 60_000,
        });
        await r(
          ['qemu-img', 'convert', '-q', '-f', 'raw', '-O', 'qcow2', raw, join(work, 'disk.qcow2')],
          { timeoutMs: 20 * 60_000 },
        );
        await rm(raw);
      });
      await rm(rootfs, { recursive: true, force: true });
      await rm(kdir, { recursive: true, force: true });
      await writeJson(join(work, 'build.json'), {
        key,
        suite,
        packages: DEBIAN_CI_PACKAGES,
        kernel,
        seconds,
        builtAt: new Date().toISOString(),
      });
      await rm(dir, { recursive: true, force: true });
      await rename(work, dir);
    } catch (e) {
      await rm(work, { recursive: true, force: true });
      throw e;
    }
    return result(dir, kernel.release, { cached: false, seconds });
  } finally {
    await lock.release();
  }
}

function result(dir: string, release: string, build: DebianImage['build']): DebianImage {
  return {
    dir,
    kernel: join(dir, 'vmlinux'),
    initrd: join(dir, 'initrd.cpio'),
    disk: join(dir, 'disk.qcow2'),
    cmdline: DEBIAN_CI_CMDLINE,
    kernelVersion: release,
    build,
  };
}

/**
 * Bootstraps Debian (minbase + DEBIAN_CI_PACKAGES, no Recommends) into
 * `rootfs` with mmdebstrap, the faster debootstrap (apt resolves and fetches
 * in parallel, dpkg runs once): measured here 135 s against debootstrap's
 * 354 s for the same packages at the same load. NESTVIRT_TEST_BOOTSTRAP=
 * debootstrap uses debootstrap instead. With NESTVIRT_TEST_KEEP_ROOTFS=1 the
 * result is also kept as a tarball keyed by the package list, so recipe
 * changes after this step skip it (for working on the recipe; CI builds once).
 */
async function bootstrapRootfs(
  rootfs: string,
  o: { cache: string; suite: string; mirror: string; r: Runner; log: (l: string) => void },
): Promise<void> {
  const tool = process.env.NESTVIRT_TEST_BOOTSTRAP === 'debootstrap' ? 'debootstrap' : 'mmdebstrap';
  const key = createHash('sha256')
    .update(JSON.stringify({ tool, suite: o.suite, packages: DEBIAN_CI_PACKAGES, unsafeIo: true }))
    .digest('hex')
    .slice(0, 16);
  const tarball = join(o.cache, `${tool}-${o.suite}-${key}.tar.zst`);
  if (existsSync(tarball)) {
    await mkdir(rootfs, { recursive: true });
    o.log(`unpacking ${tarball}`);
    await o.r(['tar', '--zstd', '-xpf', tarball, '-C', rootfs, '--numeric-owner'], {
      timeoutMs: 10 * 60_000,
    });
    return;
  }
  if (tool === 'mmdebstrap') {
    await o.r(
      [
        'mmdebstrap',
        '--variant=minbase',
        `--include=${DEBIAN_CI_PACKAGES.join(',')}`,
        // No fsync per file: the image is made in one go and checked by booting it.
        '--dpkgopt=force-unsafe-io',
        '--aptopt=APT::Install-Recommends "false"',
        '--aptopt=Acquire::Languages "none"',
        o.suite,
        rootfs,
        o.mirror,
      ],
      { timeoutMs: 30 * 60_000 },
    );
  } else {
    const debs = join(o.cache, 'debs');
    await mkdir(debs, { recursive: true });
    // dpkg inside the chroot reads this: no fsync per file (~230 s -> ~145 s here).
    await mkdir(join(rootfs, 'etc/dpkg/dpkg.cfg.d'), { recursive: true });
    await writeFile(join(rootfs, 'etc/dpkg/dpkg.cfg.d/99mmdebstrap'), 'force-unsafe-io\n');
    await o.r(
      [
        'debootstrap',
        '--variant=minbase',
        `--include=${DEBIAN_CI_PACKAGES.join(',')}`,
        `--cache-dir=${debs}`,
        o.suite,
        rootfs,
        o.mirror,
      ],
      { timeoutMs: 30 * 60_000 },
    );
  }
  if (process.env.NESTVIRT_TEST_KEEP_ROOTFS === '1') {
    const tmp = `${tarball}.${randomBytes(3).toString('hex')}.tmp`;
    await o.r(['tar', '--zstd', '-cpf', tmp, '-C', rootfs, '--numeric-owner', '.'], {
      timeoutMs: 10 * 60_000,
    });
    await rename(tmp, tarball);
  }
}

/**
 * The uncompressed kernel (an ELF with a PVH entry point) from a bzImage:
 * Debian compresses with xz, whose stream starts at the first xz magic.
 * Booting it skips ~4 s of decompression under TCG.
 */
async function extractVmlinux(vmlinuz: string, out: string, r: Runner): Promise<void> {
  const buf = await readFile(vmlinuz);
  const at = buf.indexOf(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]));
  if (at < 0) throw new Error(`${vmlinuz}: no xz stream found`);
  await writeFile(`${out}.xz`, buf.subarray(at));
  await r(['xz', '-d', '--single-stream', '-q', '-f', `${out}.xz`], {
    timeoutMs: 5 * 60_000,
    check: false,
  });
  const head = await readFile(out).then((b) => b.subarray(0, 4));
  if (!head.equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46])))
    throw new Error(`${out}: not an ELF after xz -d`);
  await rm(`${out}.xz`, { force: true });
}

/** Files written into the root file system: boot config, cloud-init, fewer units. */
async function configureRootfs(
  rootfs: string,
  kdir: string,
  release: string,
  r: Runner,
): Promise<void> {
  await cp(join(kdir, 'lib/modules', release), join(rootfs, 'lib/modules', release), {
    recursive: true,
  });
  await r(['depmod', '-b', rootfs, release]);
  await writeFile(
    join(rootfs, 'etc/fstab'),
    `LABEL=${ROOT_LABEL} / ext4 rw,errors=remount-ro 0 1\n`,
  );
  await writeFile(join(rootfs, 'etc/hostname'), 'debian-ci\n');
  await writeFile(
    join(rootfs, 'etc/hosts'),
    '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n',
  );
  // Empty: systemd makes a fresh one on first boot (and cloud-init treats the VM as new).
  await writeFile(join(rootfs, 'etc/machine-id'), '');
  await rm(join(rootfs, 'var/lib/dbus/machine-id'), { force: true });
  // Only the NoCloud seed is looked for; the default list probes a dozen clouds.
  // locale: the default regenerates en_US.UTF-8 (a minute under TCG, and
  // update-locale fails on minbase); C.UTF-8 is built into glibc.
  // manage_etc_hosts: the new hostname resolves (sudo complains otherwise),
  // as on Debian's own cloud images.
  await writeFile(
    join(rootfs, 'etc/cloud/cloud.cfg.d/90-nestvirt-test.cfg'),
    'datasource_list: [NoCloud, None]\nlocale: false\nmanage_etc_hosts: true\n',
  );
  // Loopback only; cloud-init writes the NIC's stanza into interfaces.d.
  await writeFile(
    join(rootfs, 'etc/network/interfaces'),
    'auto lo\niface lo inet loopback\n\nsource /etc/network/interfaces.d/*\n',
  );
  await mkdir(join(rootfs, 'etc/network/interfaces.d'), { recursive: true });
  for (const u of MASKED_UNITS) {
    const p = join(rootfs, 'etc/systemd/system', u);
    await rm(p, { force: true });
    await symlink('/dev/null', p);
  }
  // Host keys are per VM: cloud-init makes them on first boot.
  for (const f of await readdir(join(rootfs, 'etc/ssh')))
    if (f.startsWith('ssh_host_')) await rm(join(rootfs, 'etc/ssh', f));
  await rm(join(rootfs, 'var/cache/apt/archives'), { recursive: true, force: true });
  await mkdir(join(rootfs, 'var/cache/apt/archives/partial'), { recursive: true });
  for (const f of await readdir(join(rootfs, 'var/lib/apt/lists')).catch(() => []))
    if (f !== 'partial' && f !== 'lock')
      await rm(join(rootfs, 'var/lib/apt/lists', f), { recursive: true, force: true });
  await rm(join(rootfs, 'debootstrap'), { recursive: true, force: true });
  // The bootstrap's own settings (unsafe io, no recommends) are not the image's.
  await rm(join(rootfs, 'etc/dpkg/dpkg.cfg.d/99mmdebstrap'), { force: true });
  await rm(join(rootfs, 'etc/apt/apt.conf.d/99mmdebstrap'), { force: true });
}

/** The modules to insmod, dependencies first, from the kernel's modules.dep. */
async function moduleOrder(kdir: string, release: string, wanted: string[]): Promise<string[]> {
  const base = join(kdir, 'lib/modules', release);
  const dep = new Map<string, string[]>();
  for (const line of (await readFile(join(base, 'modules.dep'), 'utf8')).split('\n')) {
    const [mod, deps] = line.split(':');
    if (mod) dep.set(mod, (deps ?? '').trim().split(/\s+/).filter(Boolean));
  }
  const byName = new Map<string, string>();
  for (const m of dep.keys())
    byName.set(
      m
        .replace(/^.*\//, '')
        .replace(/\.ko(\.\w+)?$/, '')
        .replace(/-/g, '_'),
      m,
    );
  const builtin = (await readFile(join(base, 'modules.builtin'), 'utf8')).split('\n');
  const order: string[] = [];
  const visit = (m: string): void => {
    if (order.includes(m)) return;
    for (const d of dep.get(m) ?? []) visit(d);
    order.push(m);
  };
  for (const w of wanted) {
    const m = byName.get(w);
    if (m) visit(m);
    else if (!builtin.some((b) => b.endsWith(`/${w}.ko`)))
      throw new Error(`kernel ${release} has no module ${w}`);
  }
  return order;
}

/** A busybox initramfs: load virtio and ext4, find the root by label, switch_root to systemd. */
async function makeInitramfs(out: string, kdir: string, release: string, r: Runner): Promise<void> {
  const tree = `${out}.d`;
  await rm(tree, { recursive: true, force: true });
  for (const d of ['bin', 'dev', 'proc', 'sys', 'newroot', 'mods'])
    await mkdir(join(tree, d), { recursive: true });
  await copyFile('/bin/busybox', join(tree, 'bin/busybox'));
  await chmod(join(tree, 'bin/busybox'), 0o755);
  const mods = await moduleOrder(kdir, release, INITRAMFS_MODULES);
  const names: string[] = [];
  for (const m of mods) {
    const name = m.replace(/^.*\//, '');
    await copyFile(join(kdir, 'lib/modules', release, m), join(tree, 'mods', name));
    names.push(name);
  }
  const init = `#!/bin/busybox sh
/bin/busybox mkdir -p /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in ${names.join(' ')}; do insmod /mods/$m 2>/dev/null; done
root=$(sed -n 's/.*root=\\([^ ]*\\).*/\\1/p' /proc/cmdline)
i=0
while ! dev=$(findfs "$root" 2>/dev/null); do
  i=$((i+1)); [ $i -gt 300 ] && { echo "initramfs: root $root not found"; exec sh; }
  sleep 0.1
done
mount -t ext4 -o rw "$dev" /newroot || { echo "initramfs: cannot mount $dev"; exec sh; }
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
`;
  await writeFile(join(tree, 'init'), init, { mode: 0o755 });
  const files = await r(['find', '.', '-mindepth', '1'], { cwd: tree });
  const cpio = await runBinary(
    ['cpio', '-o', '-H', 'newc', '--quiet', '-R', '0:0'],
    files.stdout,
    tree,
  );
  await writeFile(out, cpio);
  await rm(tree, { recursive: true, force: true });
}

/** Runs a program with text on stdin and returns its binary stdout (cpio). */
async function runBinary(argv: string[], input: string, cwd: string): Promise<Buffer> {
  const { spawn } = await import('node:child_process');
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { cwd, stdio: ['pipe', 'pipe', 'inherit'] });
    const out: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0 ? resolve(Buffer.concat(out)) : reject(new Error(`${argv[0]} exited ${code}`)),
    );
    child.stdin.end(input);
  });
}

/**
 * Puts the image into a nestvirt state root as `name`: its files hard-linked
 * (or copied) into images/NAME/ and an ImageSpec written, as `image import`
 * would. Direct kernel boot, so the spec names kernel, initrd and cmdline.
 */
export async function installDebianImage(
  home: string,
  img: DebianImage,
  name = 'debian-ci',
): Promise<ImageSpec> {
  const dir = join(home, Dirs.images, name);
  await mkdir(dir, { recursive: true });
  const place = async (src: string, base: string): Promise<string> => {
    const dest = join(dir, base);
    await rm(dest, { force: true });
    await link(src, dest).catch(() => copyFile(src, dest));
    return dest;
  };
  const spec: ImageSpec = {
    name,
    builtin: false,
    kernel: await place(img.kernel, 'vmlinux'),
    initrd: await place(img.initrd, 'initrd.cpio'),
    cmdline: img.cmdline,
    disk: await place(img.disk, 'disk.qcow2'),
    diskFormat: 'qcow2',
    features: { guestAgent: true, sshd: true, cloudInit: true, kvmModules: true, nestvirt: false },
    arch: 'x86_64',
    sizeBytes: (await stat(img.disk)).size,
    createdAt: new Date().toISOString(),
  };
  await writeJson(join(dir, Files.spec), spec);
  return spec;
}
