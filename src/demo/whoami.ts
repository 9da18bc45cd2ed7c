/**
 * The process the demo runs in the innermost VM: a POSIX shell snippet
 * (the `tiny` image has busybox, not node) that reports what the guest
 * itself sees — its nestvirt chain (fw_cfg, see src/host/chain.ts), the
 * hypervisor the kernel detected and its clocksource — and the parser for
 * its output. KVM guests see "Hypervisor detected: KVM" (the KVMKVMKVM
 * CPUID signature); TCG guests do not.
 */
import { FW_CFG_CHAIN_PATH, parseChain, type ChainInfo } from '../host/chain.js';

export const WHOAMI_SCRIPT = [
  `f=/${FW_CFG_CHAIN_PATH}`,
  '[ -r "$f" ] || modprobe qemu_fw_cfg 2>/dev/null',
  // Few programs: each start is a VM exit or several in a guest nested in a TCG guest.
  'hv=$(dmesg 2>/dev/null | sed -n "/Hypervisor detected: /{s/.*Hypervisor detected: //p;q}")',
  'cs=; read -r cs </sys/devices/system/clocksource/clocksource0/current_clocksource 2>/dev/null',
  'svm=$(grep -c -w -e svm -e vmx /proc/cpuinfo)',
  'echo "nestvirt-whoami hypervisor=${hv:-none} clocksource=${cs:-unknown} virt-cpus=$svm"',
  // cat, not `read`: read takes a byte at a time, and every fw_cfg read is port I/O.
  'if [ -r "$f" ]; then printf "chain="; cat "$f"; echo; else echo "chain="; fi',
].join('\n');

export interface Whoami {
  /** Accelerator this guest runs under, as the guest itself sees it. */
  accel: 'kvm' | 'tcg';
  hypervisor: string;
  clocksource: string;
  /** CPUs with vmx/svm inside this guest. */
  virtCpus: number;
  chain: ChainInfo | undefined;
}

/** Parses WHOAMI_SCRIPT's output; undefined when the marker line is missing. */
export function parseWhoami(stdout: string): Whoami | undefined {
  const m = /^nestvirt-whoami hypervisor=(.*?) clocksource=(\S+) virt-cpus=(\d+)$/m.exec(stdout);
  if (!m) return undefined;
  const hypervisor = m[1]!;
  const c = /^chain=(.*)$/m.exec(stdout);
  return {
    accel: /^KVM\b/.test(hypervisor) ? 'kvm' : 'tcg',
    hypervisor,
    clocksource: m[2]!,
    virtCpus: Number(m[3]),
    chain: c && c[1] ? parseChain(c[1]) : undefined,
  };
}
