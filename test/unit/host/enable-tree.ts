/**
 * Temp machine trees for the enable/disable unit tests: a directory laid
 * out like / with just what nestvirt's nesting code reads, and the env that
 * points both nestvirt (NESTVIRT_HOST_ROOT) and the FAKE modprobe in
 * test/fixtures/bin (NESTVIRT_FAKE_ROOT) at it.
 */
import { cp, mkdir, mkdtemp, rm, writeFile, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { PROJECT_ROOT } from '../../../src/version.js';

export const FAKE_BIN = join(PROJECT_ROOT, 'test', 'fixtures', 'bin');

const CPUINFO = {
  amd: 'processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht syscall nx mmxext lm svm npt nrip_save\n',
  intel:
    'processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel name\t: Intel(R) Xeon(R) Gold 6230\nflags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov vmx ept vpid unrestricted_guest\n',
  'amd-vm-nosvm':
    'processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\nflags\t\t: fpu vme de pse tsc msr pae hypervisor lm\n',
  s390x:
    'vendor_id       : IBM/S390\n# processors    : 2\nfeatures\t: esan3 zarch stfle msa ldisp eimm dfp edat etf3eh highgprs te vx sie\nprocessor 0: version = FF,  identification = 0133E8,  machine = 3906\n',
  power9:
    'processor\t: 0\ncpu\t\t: POWER9, altivec supported\nclock\t\t: 3800.000000MHz\nrevision\t: 2.2 (pvr 004e 1202)\n\ntimebase\t: 512000000\nplatform\t: PowerNV\nmodel\t\t: 9006-22P\n',
  aarch64:
    'processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes\nCPU implementer\t: 0x41\nCPU architecture: 8\n',
} as const;

/** doctor's fixture trees (test/fixtures/host/NAME, each with a SOURCE note). */
export const FIXTURES = join(PROJECT_ROOT, 'test', 'fixtures', 'host');

export interface TreeSpec {
  /** Start from a copy of this doctor fixture (then cpu is not written). */
  base?: string;
  cpu?: keyof typeof CPUINFO;
  /** Loaded modules with their nested value (raw) and refcnt. */
  loaded?: Record<string, { nested: string; refcnt?: number }>;
  /** Built-in modules (in sys/module, not in proc/modules). */
  builtin?: Record<string, { nested: string }>;
  /** Extra files, host path (no leading /) -> content. */
  files?: Record<string, string>;
  /** Fake processes: pid -> what /proc shows. */
  procs?: Record<number, { comm: string; cmdline: string[]; fds: Record<number, string> }>;
}

async function put(root: string, path: string, content: string): Promise<void> {
  await mkdir(dirname(join(root, path)), { recursive: true });
  await writeFile(join(root, path), content);
}

const made: string[] = [];

/** Removes every tree (and temp dir) made by this module; for `after()`. */
export async function cleanupTrees(): Promise<void> {
  for (const d of made.splice(0)) await rm(d, { recursive: true, force: true });
}

/** A temp dir removed by cleanupTrees(). */
export async function tempDir(prefix = 'nestvirt-enable-'): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), prefix));
  made.push(d);
  return d;
}

/** Builds a temp tree; returns its path. */
export async function makeTree(spec: TreeSpec): Promise<string> {
  const root = await tempDir('nestvirt-enable-tree-');
  if (spec.base) await cp(join(FIXTURES, spec.base), root, { recursive: true });
  if (spec.cpu) {
    await put(root, 'proc/cpuinfo', CPUINFO[spec.cpu]);
    await put(root, 'proc/cmdline', 'BOOT_IMAGE=/vmlinuz root=/dev/vda1 ro quiet\n');
    await put(root, 'proc/sys/kernel/osrelease', '6.1.0-fake\n');
  }
  const lines: string[] = [];
  for (const [m, v] of Object.entries(spec.loaded ?? {})) {
    lines.push(`${m} 163840 ${v.refcnt ?? 0} - Live 0x0000000000000000`);
    await put(root, `sys/module/${m}/parameters/nested`, v.nested + '\n');
    await put(root, `sys/module/${m}/refcnt`, `${v.refcnt ?? 0}\n`);
  }
  if (!spec.base || lines.length)
    await put(root, 'proc/modules', lines.map((l) => l + '\n').join(''));
  for (const [m, v] of Object.entries(spec.builtin ?? {}))
    await put(root, `sys/module/${m}/parameters/nested`, v.nested + '\n');
  for (const [p, c] of Object.entries(spec.files ?? {})) await put(root, p, c);
  for (const [pid, p] of Object.entries(spec.procs ?? {})) {
    await put(root, `proc/${pid}/comm`, p.comm + '\n');
    await put(root, `proc/${pid}/cmdline`, p.cmdline.join('\0') + '\0');
    await mkdir(join(root, `proc/${pid}/fd`), { recursive: true });
    for (const [fd, target] of Object.entries(p.fds))
      await symlink(target, join(root, `proc/${pid}/fd/${fd}`));
  }
  return root;
}

/** The env for runCli: nestvirt and the fake modprobe both see `root`. */
export function treeEnv(
  root: string,
  home: string,
  extra: NodeJS.ProcessEnv = {},
): NodeJS.ProcessEnv {
  return {
    PATH: `${FAKE_BIN}:${process.env.PATH ?? '/usr/bin:/bin'}`,
    NESTVIRT_HOST_ROOT: root,
    NESTVIRT_FAKE_ROOT: root,
    NESTVIRT_HOME: home,
    NO_COLOR: '1',
    ...extra,
  };
}
