/**
 * What `enable` / `disable` need to know about this machine's KVM module,
 * read through a root directory (root = '/' by default) so that captured
 * trees and temp trees in tests stand in for machines. Reads only files:
 * proc/cpuinfo, proc/modules, proc/sys/kernel/osrelease, proc/cmdline,
 * sys/module/<m>/{parameters/nested,refcnt,holders}, lib/modules/<rel>/
 * modules.builtin, dev/kvm. Never runs a program.
 */
import { readFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';

export type Arch = 'x86_64' | 'aarch64' | 'ppc64le' | 's390x' | 'unknown';
export type NestingModule = 'kvm_intel' | 'kvm_amd' | 'kvm_hv' | 'kvm';

/**
 * How the module is present: `loaded` (listed in /proc/modules), `builtin`
 * (compiled into the kernel: cannot be reloaded, modprobe.d does not apply),
 * `not-loaded` (loadable but not loaded now), `unknown` (a module asked for
 * with --module that the tree says nothing about: plans check at run time).
 */
export type ModuleState = 'loaded' | 'builtin' | 'not-loaded' | 'unknown';

export interface NestingFacts {
  root: string;
  arch: Arch;
  vendor: string | null;
  /** The CPU's virtualization extension as this machine sees it. */
  extension: 'vmx' | 'svm' | 'sie' | 'power-hv' | null;
  /** The `hypervisor` cpuinfo flag (x86) or a hypervisor named elsewhere. */
  isVm: boolean;
  /** A name for the hypervisor below when one is visible (PVM, KVM, Xen...). */
  hypervisor: string | null;
  /** The module that carries `nested` for this CPU; null when none applies. */
  module: NestingModule | null;
  /** The module was given (--module), not detected. */
  moduleForced: boolean;
  moduleState: ModuleState;
  /** Raw text of /sys/module/<m>/parameters/nested, trimmed; null when absent. */
  nestedRaw: string | null;
  /** `nestedRaw` as a boolean; null when unknown. */
  nested: boolean | null;
  /** /sys/module/<m>/refcnt (0 when absent). */
  refcnt: number;
  /** Modules depending on it (/sys/module/<m>/holders). */
  holders: string[];
  /** Other KVM modules present (e.g. kvm_pvm), for explanations. */
  otherKvmModules: string[];
  devKvm: boolean;
  /** `<m>.nested=...` on the kernel command line, when present. */
  cmdlineNested: string | null;
}

/** Reads a file through the root; undefined when absent or unreadable. */
export async function readRootFile(root: string, path: string): Promise<string | undefined> {
  try {
    return await readFile(join(root, path), 'utf8');
  } catch {
    return undefined;
  }
}

async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}

/** Parses a `nested` parameter value (Y/N for bool, 1/0 for int). */
export function parseNested(raw: string | null | undefined): boolean | null {
  if (raw === null || raw === undefined) return null;
  const v = raw.trim();
  if (v === 'Y' || v === 'y' || v === '1') return true;
  if (v === 'N' || v === 'n' || v === '0') return false;
  return null;
}

/** Architecture, vendor and virtualization extension from /proc/cpuinfo text. */
export function parseCpuinfo(text: string): Pick<NestingFacts, 'arch' | 'vendor' | 'extension'> & {
  hypervisorFlag: boolean;
  platform: string | null;
} {
  const field = (name: string): string | null => {
    const m = new RegExp(`^${name}\\s*:\\s*(.*)$`, 'mi').exec(text);
    return m ? m[1]!.trim() : null;
  };
  const vendorId = field('vendor_id');
  if (vendorId === 'IBM/S390' || /^processor \d+: version/m.test(text)) {
    const features = (field('features') ?? '').split(/\s+/);
    return {
      arch: 's390x',
      vendor: 'ibm',
      extension: features.includes('sie') ? 'sie' : null,
      hypervisorFlag: false,
      platform: null,
    };
  }
  const cpu = field('cpu');
  if (cpu && /POWER/i.test(cpu)) {
    const platform = field('platform');
    return {
      arch: 'ppc64le',
      vendor: 'ibm',
      // kvm_hv needs the CPU in hypervisor mode: bare-metal PowerNV, or a
      // pSeries guest whose host offers nested HV (cap-nested-hv).
      extension: platform === 'PowerNV' ? 'power-hv' : null,
      hypervisorFlag: platform !== null && platform !== 'PowerNV',
      platform,
    };
  }
  if (field('CPU implementer'))
    return {
      arch: 'aarch64',
      vendor: 'arm',
      extension: null,
      hypervisorFlag: false,
      platform: null,
    };
  const flags = (field('flags') ?? '').split(/\s+/);
  const vendor =
    vendorId === 'GenuineIntel'
      ? 'intel'
      : vendorId === 'AuthenticAMD' || vendorId === 'HygonGenuine'
        ? 'amd'
        : vendorId
          ? vendorId.toLowerCase()
          : null;
  return {
    arch: vendorId || flags.length > 1 ? 'x86_64' : 'unknown',
    vendor,
    extension: flags.includes('vmx') ? 'vmx' : flags.includes('svm') ? 'svm' : null,
    hypervisorFlag: flags.includes('hypervisor'),
    platform: null,
  };
}

/** The module that carries `nested` for an arch and vendor. */
export function moduleFor(arch: Arch, vendor: string | null): NestingModule | null {
  if (arch === 'x86_64')
    return vendor === 'intel' ? 'kvm_intel' : vendor === 'amd' ? 'kvm_amd' : null;
  if (arch === 'ppc64le') return 'kvm_hv';
  if (arch === 's390x') return 'kvm';
  return null;
}

/** The .ko file name stem of a module (kvm_amd -> kvm-amd). */
export function koName(m: string): string {
  return m.replace(/_/g, '-');
}

/** Module names listed in /proc/modules text. */
export function parseProcModules(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const [name, , used] = line.trim().split(/\s+/);
    if (name) out.set(name, Number(used) || 0);
  }
  return out;
}

/** Reads the nesting facts through `root`; `module` overrides the detected module. */
export async function readNestingFacts(
  root = '/',
  opts: { module?: NestingModule } = {},
): Promise<NestingFacts> {
  const cpuinfo = (await readRootFile(root, 'proc/cpuinfo')) ?? '';
  const cpu = parseCpuinfo(cpuinfo);
  const procModulesText = await readRootFile(root, 'proc/modules');
  const procModules = procModulesText === undefined ? undefined : parseProcModules(procModulesText);
  let sysModules: string[] = [];
  try {
    sysModules = await readdir(join(root, 'sys/module'));
  } catch {
    /* no sysfs in the tree */
  }
  const module = opts.module ?? moduleFor(cpu.arch, cpu.vendor) ?? guessFromSys(sysModules);
  let moduleState: ModuleState = 'not-loaded';
  let nestedRaw: string | null = null;
  let refcnt = 0;
  let holders: string[] = [];
  if (module) {
    const inSys = sysModules.includes(module);
    const inProc = procModules?.has(module) ?? false;
    if (inProc) moduleState = 'loaded';
    else if (inSys) moduleState = 'builtin';
    else if (await listedBuiltin(root, module)) moduleState = 'builtin';
    else if (opts.module && !(cpu.extension && moduleFor(cpu.arch, cpu.vendor) === module))
      moduleState = 'unknown';
    nestedRaw =
      (await readRootFile(root, `sys/module/${module}/parameters/nested`))?.trim() ?? null;
    const rc = await readRootFile(root, `sys/module/${module}/refcnt`);
    refcnt = rc !== undefined ? Number(rc.trim()) || 0 : (procModules?.get(module) ?? 0);
    try {
      holders = (await readdir(join(root, `sys/module/${module}/holders`))).sort();
    } catch {
      holders = [];
    }
  }
  const otherKvmModules = sysModules
    .filter((m) => /^kvm(_|$)/.test(m) && m !== module && m !== 'kvm')
    .sort();
  const hypervisor = await hypervisorName(root, otherKvmModules, cpu.hypervisorFlag);
  const cmdline = (await readRootFile(root, 'proc/cmdline')) ?? '';
  const cmdlineNested = module
    ? (new RegExp(`(?:^|\\s)(?:${module}|${koName(module)})\\.nested=(\\S+)`).exec(cmdline)?.[1] ??
      null)
    : null;
  return {
    root,
    arch: cpu.arch,
    vendor: cpu.vendor,
    extension: cpu.extension,
    isVm: cpu.hypervisorFlag || hypervisor !== null,
    hypervisor,
    module,
    moduleForced: opts.module !== undefined,
    moduleState,
    nestedRaw,
    nested: parseNested(nestedRaw),
    refcnt,
    holders,
    otherKvmModules,
    devKvm: await exists(join(root, 'dev/kvm')),
    cmdlineNested,
  };
}

function guessFromSys(sysModules: string[]): NestingModule | null {
  for (const m of ['kvm_intel', 'kvm_amd', 'kvm_hv'] as const) if (sysModules.includes(m)) return m;
  return null;
}

async function listedBuiltin(root: string, module: string): Promise<boolean> {
  const rel = (await readRootFile(root, 'proc/sys/kernel/osrelease'))?.trim();
  if (!rel) return false;
  const builtin = await readRootFile(root, `lib/modules/${rel}/modules.builtin`);
  if (!builtin) return false;
  const ko = koName(module);
  return builtin.split('\n').some((l) => l.endsWith(`/${ko}.ko`) || l.endsWith(`/${module}.ko`));
}

async function hypervisorName(
  root: string,
  otherKvm: string[],
  hypervisorFlag: boolean,
): Promise<string | null> {
  // A captured tree may carry the kernel log; on a live machine kvm_pvm
  // beside the cpuinfo `hypervisor` flag is the sign of a PVM guest.
  const dmesg = (await readRootFile(root, 'nestvirt/dmesg.txt')) ?? '';
  const m = /Hypervisor detected: (\S+)/.exec(dmesg);
  if (m) return m[1]!;
  if (otherKvm.includes('kvm_pvm') && hypervisorFlag) return 'PVM';
  const xen = (await readRootFile(root, 'sys/hypervisor/type'))?.trim();
  if (xen) return xen;
  const vendor = (await readRootFile(root, 'sys/class/dmi/id/sys_vendor'))?.trim() ?? '';
  const product = (await readRootFile(root, 'sys/class/dmi/id/product_name'))?.trim() ?? '';
  if (/^QEMU/.test(vendor) || /^(Standard PC|KVM)/.test(product)) return 'QEMU/KVM';
  if (/Google/.test(vendor) || /Google Compute Engine/.test(product))
    return 'Google Compute Engine';
  if (/Microsoft/.test(vendor)) return 'Hyper-V';
  if (/Amazon EC2/.test(vendor) || /^Amazon/.test(product)) return 'AWS';
  if (/VMware/.test(vendor)) return 'VMware';
  return null;
}
