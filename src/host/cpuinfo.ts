/**
 * /proc/cpuinfo for the four architectures nestvirt knows: the architecture
 * (from the file's shape, so a captured tree needs no uname), the vendor,
 * the virtualization extension and second-level paging.
 */

export type Arch = 'x86_64' | 'aarch64' | 'ppc64le' | 's390x';
export type Extension = 'vmx' | 'svm' | 'sie' | 'power-hv';
export type SecondLevelPaging = 'ept' | 'npt';

export interface CpuInfo {
  arch: Arch;
  /** "intel" | "amd" | "hygon" | "ibm" | "arm" | ... | "unknown" */
  vendor: string;
  /** Model name as the kernel prints it; null when absent. */
  model: string | null;
  /** Logical CPUs listed. */
  count: number;
  /** x86 `flags`, s390 `features`, arm64 `Features` of the first CPU. */
  flags: string[];
  /** x86 `vmx flags` line (kernel >= 5.8), else []. */
  vmxFlags: string[];
  /** POWER: `platform` (PowerNV, pSeries); null elsewhere. */
  platform: string | null;
  /** POWER: `machine` line; s390: machine type number; null elsewhere. */
  machine: string | null;
  /** POWER: MMU (Radix, Hash). */
  mmu: string | null;
}

/** Splits cpuinfo into key/value records, one per blank-line block. */
function blocks(text: string): Map<string, string>[] {
  const out: Map<string, string>[] = [];
  let cur = new Map<string, string>();
  for (const raw of text.split('\n')) {
    const line = raw.trimEnd();
    if (line.trim() === '') {
      if (cur.size) out.push(cur);
      cur = new Map();
      continue;
    }
    const i = line.indexOf(':');
    if (i < 0) continue;
    const k = line.slice(0, i).trim();
    if (!cur.has(k)) cur.set(k, line.slice(i + 1).trim());
  }
  if (cur.size) out.push(cur);
  return out;
}

const X86_VENDORS: Record<string, string> = {
  GenuineIntel: 'intel',
  AuthenticAMD: 'amd',
  HygonGenuine: 'hygon',
  CentaurHauls: 'centaur',
  '  Shanghai  ': 'zhaoxin',
};
// Arm "CPU implementer" codes (arch/arm64/include/asm/cputype.h).
const ARM_IMPLEMENTERS: Record<string, string> = {
  '0x41': 'arm',
  '0x42': 'broadcom',
  '0x43': 'cavium',
  '0x46': 'fujitsu',
  '0x48': 'hisilicon',
  '0x4e': 'nvidia',
  '0x50': 'apm',
  '0x51': 'qualcomm',
  '0x61': 'apple',
  '0x6d': 'microsoft',
  '0xc0': 'ampere',
};

/** Parses /proc/cpuinfo; undefined when the text is not recognisably one. */
export function parseCpuinfo(text: string): CpuInfo | undefined {
  const bs = blocks(text);
  const all = new Map<string, string>();
  for (const b of bs) for (const [k, v] of b) if (!all.has(k)) all.set(k, v);
  const words = (s: string | undefined): string[] => (s ? s.split(/\s+/).filter(Boolean) : []);
  const vendorId = all.get('vendor_id');
  if (vendorId === 'IBM/S390') {
    const m = /machine = (\w+)/.exec(text);
    const n = /# processors\s*:\s*(\d+)/.exec(text);
    return {
      arch: 's390x',
      vendor: 'ibm',
      model: m ? `IBM Z machine type ${m[1]}` : null,
      count: n ? Number(n[1]) : bs.length,
      flags: words(all.get('features')),
      vmxFlags: [],
      platform: null,
      machine: m ? m[1]! : null,
      mmu: null,
    };
  }
  if (vendorId !== undefined && all.has('flags')) {
    const procs = bs.filter((b) => b.has('processor')).length;
    return {
      arch: 'x86_64',
      vendor: X86_VENDORS[vendorId] ?? (vendorId.trim().toLowerCase() || 'unknown'),
      model: all.get('model name') ?? null,
      count: procs || 1,
      flags: words(all.get('flags')),
      vmxFlags: words(all.get('vmx flags')),
      platform: null,
      machine: null,
      mmu: null,
    };
  }
  const cpu = all.get('cpu');
  if (cpu !== undefined && /^POWER|^PPC|ppc64|^IBM/i.test(cpu)) {
    return {
      arch: 'ppc64le',
      vendor: 'ibm',
      model: cpu,
      count: bs.filter((b) => b.has('processor')).length || 1,
      flags: [],
      vmxFlags: [],
      platform: all.get('platform') ?? null,
      machine: all.get('machine') ?? all.get('model') ?? null,
      mmu: all.get('MMU') ?? null,
    };
  }
  const impl = all.get('CPU implementer');
  if (impl !== undefined || all.has('Features')) {
    return {
      arch: 'aarch64',
      vendor: (impl && ARM_IMPLEMENTERS[impl.toLowerCase()]) ?? 'unknown',
      model: all.get('model name') ?? null,
      count: bs.filter((b) => b.has('processor')).length || 1,
      flags: words(all.get('Features')),
      vmxFlags: [],
      platform: null,
      machine: null,
      mmu: null,
    };
  }
  return undefined;
}

/** The CPU's virtualization extension as this kernel sees it. */
export function cpuExtension(c: CpuInfo): Extension | null {
  switch (c.arch) {
    case 'x86_64':
      if (c.flags.includes('vmx')) return 'vmx';
      if (c.flags.includes('svm')) return 'svm';
      return null;
    case 's390x':
      return c.flags.includes('sie') ? 'sie' : null;
    case 'ppc64le':
      // PowerNV: Linux runs in hypervisor mode. A pSeries guest does not.
      return c.platform === 'PowerNV' ? 'power-hv' : null;
    default:
      return null;
  }
}

/** EPT (Intel) or NPT (AMD): guests' page tables walked by hardware. */
export function secondLevelPaging(c: CpuInfo): SecondLevelPaging | null {
  if (c.arch !== 'x86_64') return null;
  if (c.flags.includes('ept') || c.vmxFlags.includes('ept')) return 'ept';
  if (c.flags.includes('npt')) return 'npt';
  return null;
}
