/**
 * Is this machine a VM, under which hypervisor, in which cloud? Pure: decided
 * from cpuinfo, DMI strings, /sys/hypervisor, s390's /proc/sysinfo and the
 * kernel's own boot messages, each piece of evidence kept for the report.
 */
import type { CpuInfo } from './cpuinfo.js';

/** DMI strings from /sys/class/dmi/id (null when absent). */
export interface Dmi {
  sys_vendor: string | null;
  product_name: string | null;
  product_version: string | null;
  bios_vendor: string | null;
  bios_version: string | null;
  board_vendor: string | null;
  board_name: string | null;
  chassis_vendor: string | null;
  chassis_asset_tag: string | null;
}
export const DMI_FIELDS = [
  'sys_vendor',
  'product_name',
  'product_version',
  'bios_vendor',
  'bios_version',
  'board_vendor',
  'board_name',
  'chassis_vendor',
  'chassis_asset_tag',
] as const satisfies readonly (keyof Dmi)[];

export type Hypervisor =
  | 'kvm'
  | 'qemu-tcg'
  | 'qemu'
  | 'pvm'
  | 'hyperv'
  | 'vmware'
  | 'xen'
  | 'virtualbox'
  | 'powervm'
  | 'zvm'
  | 'prsm'
  | 'unknown';
export type Cloud =
  'gce' | 'aws' | 'azure' | 'digitalocean' | 'hetzner' | 'openstack' | 'alibaba' | 'oracle';

export interface MachineFacts {
  /** True for a VM, false for bare metal (an IBM Z LPAR counts as bare metal for KVM), null if unknown. */
  virtual: boolean | null;
  /** What runs this machine; null on bare metal. */
  hypervisor: Hypervisor | null;
  cloud: Cloud | null;
  /** Vendor and product as DMI (or the platform) names it. */
  product: string | null;
  /** Why: one short line per signal used. */
  evidence: string[];
}

export interface MachineInputs {
  cpu: CpuInfo;
  dmi: Dmi;
  /** /sys/hypervisor/type and uuid. */
  sysHypervisor: { type: string | null; uuid: string | null };
  /** s390 /proc/sysinfo text, when present. */
  sysinfo: string | null;
  /** Kernel messages (dmesg lines); [] when unreadable. */
  kmsg: string[];
}

// "Hypervisor detected: X" (arch/x86/kernel/cpu/hypervisor.c) names.
const DETECTED: [RegExp, Hypervisor][] = [
  [/^KVM/, 'kvm'],
  [/^PVM/, 'pvm'],
  [/Hyper-V/, 'hyperv'],
  [/^VMware/, 'vmware'],
  [/^Xen/, 'xen'],
  [/^ACRN/, 'unknown'],
  [/^Jailhouse/, 'unknown'],
];
// Azure's fixed chassis asset tag (documented by Microsoft and used by cloud-init).
const AZURE_ASSET_TAG = '7783-7084-3265-9085-8269-3286-77';

/** Decides what kind of machine this is. */
export function detectMachine(i: MachineInputs): MachineFacts {
  const ev: string[] = [];
  let virtual: boolean | null = null;
  let hv: Hypervisor | null = null;
  let cloud: Cloud | null = null;
  const d = i.dmi;
  const dmiAll = [
    d.sys_vendor,
    d.product_name,
    d.bios_vendor,
    d.bios_version,
    d.board_vendor,
    d.chassis_vendor,
  ]
    .filter((s): s is string => !!s)
    .join(' | ');
  let product = [d.sys_vendor, d.product_name].filter(Boolean).join(' ') || null;

  // Kernel messages.
  for (const l of i.kmsg) {
    const m = /Hypervisor detected: (.+)$/.exec(l);
    if (m) {
      const name = m[1]!.trim();
      hv = DETECTED.find(([re]) => re.test(name))?.[1] ?? 'unknown';
      virtual = true;
      ev.push(`kernel: Hypervisor detected: ${name}`);
    }
    const b = /Booting paravirtualized kernel on (.+)$/.exec(l);
    if (b && !/bare hardware/.test(b[1]!)) {
      virtual = true;
      ev.push(`kernel: Booting paravirtualized kernel on ${b[1]!.trim()}`);
      if (/PVM/.test(b[1]!)) hv = 'pvm';
      else if (!hv && /KVM/.test(b[1]!)) hv = 'kvm';
      else if (!hv && /Xen/.test(b[1]!)) hv = 'xen';
    }
    // kvm_pvm's own word, logged later in boot than the lines above: those
    // early lines are the first to leave the ring buffer on a long-running
    // machine, this one holds out longer.
    if (/kvm-pvm: this kernel is itself a kvm-pvm guest/.test(l) && hv !== 'pvm') {
      hv = 'pvm';
      virtual = true;
      ev.push('kernel: kvm-pvm: this kernel is itself a kvm-pvm guest');
    }
  }

  // CPU.
  if (i.cpu.arch === 'x86_64') {
    if (i.cpu.flags.includes('hypervisor')) {
      virtual = true;
      ev.push('cpuinfo: hypervisor flag');
    } else if (virtual === null) {
      virtual = false;
      ev.push('cpuinfo: no hypervisor flag');
    }
    if (/^QEMU TCG CPU/.test(i.cpu.model ?? '')) {
      hv = 'qemu-tcg';
      ev.push(`cpuinfo: model "${i.cpu.model}"`);
    }
  } else if (i.cpu.arch === 'ppc64le') {
    if (i.cpu.platform === 'PowerNV') {
      virtual = false;
      ev.push('cpuinfo: platform PowerNV (OPAL firmware, hypervisor mode)');
    } else if (i.cpu.platform === 'pSeries') {
      virtual = true;
      const qemu = /qemu/i.test(i.cpu.machine ?? '');
      hv = qemu ? 'kvm' : 'powervm';
      ev.push(`cpuinfo: platform pSeries, machine "${i.cpu.machine ?? '?'}"`);
    }
    product = product ?? i.cpu.machine;
  } else if (i.cpu.arch === 's390x') {
    const s = i.sysinfo ?? '';
    const cp = /^VM00 Control Program:\s*(.+)$/m.exec(s);
    if (cp) {
      virtual = true;
      hv = /KVM/i.test(cp[1]!) ? 'kvm' : /z\/VM/i.test(cp[1]!) ? 'zvm' : 'unknown';
      ev.push(`sysinfo: VM00 Control Program: ${cp[1]!.trim()}`);
    } else if (/^LPAR Number:/m.test(s)) {
      // KVM on IBM Z runs in an LPAR; PR/SM is firmware, so the LPAR is KVM's level 0.
      virtual = false;
      hv = null;
      ev.push('sysinfo: LPAR, no VM00 level (KVM host level)');
    }
    const t = /^Type:\s*(\S+)/m.exec(s);
    const mf = /^Manufacturer:\s*(\S+)/m.exec(s);
    product = product ?? (t ? `${mf?.[1] ?? 'IBM'} ${t[1]}` : i.cpu.model);
  }

  // /sys/hypervisor (Xen).
  if (i.sysHypervisor.type) {
    virtual = true;
    if (!hv) hv = i.sysHypervisor.type === 'xen' ? 'xen' : 'unknown';
    ev.push(`/sys/hypervisor/type: ${i.sysHypervisor.type}`);
    if (i.sysHypervisor.uuid?.toLowerCase().startsWith('ec2')) cloud = 'aws';
  }

  // DMI.
  if (dmiAll) {
    const has = (re: RegExp): boolean => re.test(dmiAll);
    let dmiHv: Hypervisor | null = null;
    if (has(/^Google\b|Google Compute Engine/)) {
      cloud = 'gce';
      dmiHv = 'kvm';
    } else if (has(/Amazon EC2/)) {
      cloud = 'aws';
      // .metal instances: no hypervisor under Linux (DMI still says Amazon EC2).
      if (!/\.metal/.test(d.product_name ?? '')) dmiHv = 'kvm';
    } else if (d.chassis_asset_tag === AZURE_ASSET_TAG) {
      cloud = 'azure';
      dmiHv = 'hyperv';
    } else if (has(/Microsoft Corporation/) && has(/Virtual Machine/)) dmiHv = 'hyperv';
    else if (has(/VMware/)) dmiHv = 'vmware';
    else if (has(/innotek|VirtualBox/)) dmiHv = 'virtualbox';
    else if (has(/\bXen\b/)) dmiHv = 'xen';
    else if (has(/DigitalOcean/)) {
      cloud = 'digitalocean';
      dmiHv = 'kvm';
    } else if (has(/Hetzner/)) {
      cloud = 'hetzner';
      if (i.cpu.flags.includes('hypervisor')) dmiHv = 'kvm';
    } else if (has(/OpenStack/)) {
      cloud = 'openstack';
      dmiHv = 'kvm';
    } else if (has(/Alibaba Cloud/)) {
      cloud = 'alibaba';
      dmiHv = 'kvm';
    } else if (has(/OracleCloud/)) {
      cloud = 'oracle';
      dmiHv = 'kvm';
    } else if (has(/QEMU|KVM|Bochs|SeaBIOS/)) dmiHv = 'qemu';
    if (/amazon/i.test(d.bios_version ?? '') && cloud === null) cloud = 'aws';
    ev.push(`dmi: ${dmiAll}`);
    if (dmiHv) {
      if (dmiHv !== 'kvm' || virtual !== false) virtual = virtual ?? true;
      if (!hv) hv = dmiHv;
      // QEMU's DMI without KVM's CPUID signature in readable boot messages: TCG.
      else if (hv === 'kvm' && dmiHv === 'qemu') hv = 'kvm';
    }
    if (hv === 'qemu' && i.kmsg.length > 0 && !i.kmsg.some((l) => /Hypervisor detected/.test(l))) {
      hv = 'qemu-tcg';
      ev.push('kernel: no "Hypervisor detected" under QEMU: TCG (no KVM CPUID signature)');
    }
  }
  // arm64 has no cpuinfo hypervisor flag: DMI from a real vendor, with no VM sign, means bare metal.
  if (i.cpu.arch === 'aarch64' && virtual === null && dmiAll && !hv) {
    virtual = false;
    ev.push('dmi: no hypervisor vendor (arm64 has no cpuinfo hypervisor flag)');
  }
  if (virtual === null && i.kmsg.some((l) => /kvm \[\d+\]: (VHE|Hyp) mode initialized/.test(l))) {
    virtual = false;
    ev.push('kernel: KVM initialised at EL2');
  }
  if (virtual === false) hv = null;
  if (virtual === true && hv === null) hv = 'unknown';
  return { virtual, hypervisor: hv, cloud, product, evidence: ev };
}
