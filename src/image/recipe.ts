/**
 * What goes into the built-in images, as data and pure functions: the
 * packages they are made from, the kernel modules they carry, the kernel
 * command line, module dependency closure, `ldd` parsing and the bzImage
 * payload header. Everything here is tested by tables in test/unit/image/.
 */
import { crypto } from '../util/lazy.js';

/**
 * Bump when the build recipe changes in a way that changes the result; it is
 * part of every built-in image's inputs hash, so a bump rebuilds them.
 */
export const RECIPE_VERSION = 13;

/**
 * How the initramfs is compressed. Measured with bench/image-boot.ts (10
 * interleaved boot pairs under TCG): uncompressed reached the guest agent
 * first in 8 of 10 pairs (medians 5.8 s vs 7.1 s), since the guest's gzip
 * decompression runs emulated; it costs ~10 MB more on disk.
 */
export const INITRAMFS_COMPRESSION: 'none' | 'gzip' = 'none';

/** Names of the built-in images. */
export const BUILTINS = ['tiny', 'hypervisor'] as const;
export type BuiltinName = (typeof BUILTINS)[number];

export function isBuiltin(name: string): name is BuiltinName {
  return (BUILTINS as readonly string[]).includes(name);
}

/** Line the guest's /init prints on the serial console when userspace is up. */
export const READY_MARKER = 'nestvirt-guest-ready';

/** The meta package naming the current Debian kernel (resolved with `apt-cache depends`). */
export const KERNEL_META_PACKAGE = 'linux-image-amd64';

/** Installed Debian packages whose files go into each image (their versions feed the inputs hash). */
export const HOST_PACKAGES: Record<BuiltinName, string[]> = {
  tiny: ['busybox-static', 'qemu-guest-agent'],
  hypervisor: [
    'busybox-static',
    'qemu-guest-agent',
    'qemu-system-x86',
    'qemu-utils',
    'seabios',
    'e2fsprogs',
  ],
};

/** Modules loaded by /init at boot (when present); the rest load on demand (`modprobe`). */
export const BOOT_MODULES = [
  'virtio_pci',
  'virtio_mmio',
  'virtio_console',
  'virtio_blk',
  'virtio_net',
  'virtio_rng',
  'qemu_fw_cfg',
  'button',
  'evdev',
];

/** Modules carried by every built-in image (their dependencies are added). */
/** Modules both built-ins carry. */
const COMMON_MODULES = [
  ...BOOT_MODULES,
  'virtio_scsi',
  'kvm',
  'kvm_amd',
  'kvm_intel',
  '9p',
  '9pnet_virtio',
  'tun',
  'bridge',
  'vhost_net',
  'vhost_vsock',
  'ext4',
  'crc32c_generic',
];

export const IMAGE_MODULES: Record<BuiltinName, string[]> = {
  tiny: COMMON_MODULES,
  // The hypervisor also runs networks and overlays for its own guests.
  hypervisor: [...COMMON_MODULES, 'overlay', 'nf_tables', 'nft_chain_nat', 'nft_masq', 'veth'],
};

/**
 * Kernel command line of the built-ins. `console=ttyS0` puts the kernel log
 * and the shell on the first serial port; `panic=-1` reboots at once on a
 * panic (QEMU started with -no-reboot then exits instead of hanging);
 * `8250.nr_uarts=1` skips probing absent serial ports; `pci=noearly` skips
 * the early PCI scans for chipset quirks and an AGP aperture, which read
 * the config space of every possible bus and slot, one port I/O exit per
 * read: 2.3 s of a KVM guest's boot inside a TCG guest (docs/performance.md),
 * and nothing a QEMU machine needs; `cryptomgr.notests` skips the boot-time
 * self-tests of every crypto algorithm the kernel registers (a check of the
 * kernel build, ~0.15 s of CPU at TCG speed, which is what a KVM guest
 * inside a TCG guest runs at).
 */
export function kernelCmdline(opts: { rootLabel?: string; quiet?: boolean } = {}): string {
  const parts = [
    'console=ttyS0',
    '8250.nr_uarts=1',
    'pci=noearly',
    'cryptomgr.notests',
    'panic=-1',
  ];
  if (opts.quiet ?? true) parts.push('quiet');
  if (opts.rootLabel) parts.push(`nestvirt.root=LABEL=${opts.rootLabel}`);
  return parts.join(' ');
}

/** Normalises a module name the way modprobe does (`kvm-amd` == `kvm_amd`). */
export function modName(nameOrPath: string): string {
  const base = nameOrPath
    .slice(nameOrPath.lastIndexOf('/') + 1)
    .replace(/\.ko(\.(xz|zst|gz))?$/, '');
  return base.replace(/-/g, '_');
}

/**
 * The set of module files needed for `want`, dependencies included, in
 * dependency order. `order` is modules.order (relative paths); `depends`
 * maps a module path to the names it depends on (modinfo `depends:`).
 * Names built into the kernel (`builtin`) need no file. Throws on a name
 * that is neither.
 */
export function moduleClosure(
  want: readonly string[],
  order: readonly string[],
  depends: (path: string) => readonly string[],
  builtin: ReadonlySet<string> = new Set(),
): string[] {
  const byName = new Map<string, string>();
  for (const p of order) if (!byName.has(modName(p))) byName.set(modName(p), p);
  const out: string[] = [];
  const seen = new Set<string>();
  const visit = (name: string, chain: string[]): void => {
    const n = modName(name);
    if (seen.has(n)) return;
    seen.add(n);
    const path = byName.get(n);
    if (!path) {
      if (builtin.has(n)) return;
      throw new Error(
        `kernel module ${JSON.stringify(name)} not found${chain.length ? ` (needed by ${chain.join(' <- ')})` : ''}`,
      );
    }
    for (const d of depends(path)) if (d) visit(d, [n, ...chain]);
    out.push(path);
  };
  for (const w of want) visit(w, []);
  return out;
}

/** The library paths in `ldd` output (the resolved paths, and the loader). */
export function parseLdd(text: string): string[] {
  const libs: string[] = [];
  for (const line of text.split('\n')) {
    const arrow = /=>\s+(\/\S+)\s+\(0x/.exec(line);
    if (arrow) libs.push(arrow[1]!);
    else {
      const bare = /^\s*(\/\S+)\s+\(0x/.exec(line);
      if (bare) libs.push(bare[1]!);
    }
    if (/=>\s+not found/.test(line)) throw new Error(`missing shared library: ${line.trim()}`);
  }
  return [...new Set(libs)];
}

/** Where the compressed kernel sits in a bzImage, and how big it unpacks. */
export interface BzPayload {
  offset: number;
  length: number;
  format: 'xz' | 'gzip' | 'zstd' | 'lz4' | 'unknown';
  /** Size of the uncompressed vmlinux (the payload's last 4 bytes, little endian). */
  uncompressedSize: number;
}

/**
 * Reads the x86 boot protocol header of a bzImage (Documentation/x86/boot.rst:
 * setup_sects at 0x1f1, "HdrS" at 0x202, payload_offset/length at 0x248/0x24c).
 */
export function bzImagePayload(buf: Buffer): BzPayload {
  if (buf.length < 0x250 || buf.toString('latin1', 0x202, 0x206) !== 'HdrS')
    throw new Error('not a bzImage (no HdrS boot header)');
  const setupSects = buf[0x1f1] || 4;
  const payloadOffset = buf.readUInt32LE(0x248);
  const length = buf.readUInt32LE(0x24c);
  const offset = (setupSects + 1) * 512 + payloadOffset;
  if (offset + length > buf.length)
    throw new Error('bzImage payload runs past the end of the file');
  const m = buf.subarray(offset, offset + 6);
  const format: BzPayload['format'] =
    m.toString('latin1', 0, 6) === '\xfd7zXZ\0'
      ? 'xz'
      : m[0] === 0x1f && (m[1] === 0x8b || m[1] === 0x9e)
        ? 'gzip'
        : m.readUInt32LE(0) === 0xfd2fb528
          ? 'zstd'
          : m.readUInt32LE(0) === 0x184c2102
            ? 'lz4'
            : 'unknown';
  return { offset, length, format, uncompressedSize: buf.readUInt32LE(offset + length - 4) };
}

/** Inputs of a built-in image: every value that, when it changes, means a rebuild. */
export type Inputs = Record<string, string>;

/** A stable hash of the inputs (sorted keys). */
export function inputsHash(inputs: Inputs): string {
  const h = crypto().createHash('sha256');
  for (const k of Object.keys(inputs).sort()) h.update(`${k}=${inputs[k]}\n`);
  return h.digest('hex').slice(0, 32);
}

/** Keys whose values differ between two inputs sets (for "rebuilding because ..."). */
export function changedInputs(before: Inputs | undefined, now: Inputs): string[] {
  if (!before) return Object.keys(now).sort();
  const keys = new Set([...Object.keys(before), ...Object.keys(now)]);
  return [...keys].filter((k) => before[k] !== now[k]).sort();
}
