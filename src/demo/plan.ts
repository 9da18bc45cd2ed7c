/**
 * Which way the demo's chain runs, decided purely from the host's doctor
 * report: the outer VM under KVM with the host CPU when this machine can
 * run accelerated guests that nest, else under TCG with an emulated CPU
 * that has SVM (QEMU's `-cpu max`), so the inner VM can still use KVM.
 */
import type { Runner } from '../host/chain.js';

/** The subset of `nestvirt doctor --json` the demo reads. */
export interface DoctorReport {
  level: number | null;
  cpu: { arch: string; vendor: string | null; extensions: string | null };
  kvm: { device: boolean; module: string | null; nested: boolean | null };
  machine?: { virtual?: boolean; hypervisor?: string | null; cloud?: string | null };
  verdict: {
    acceleratedVMs: boolean;
    acceleratedNestedVMs: boolean;
    problems: { id: string; message: string; fix: string }[];
    fallback?: {
      accel: string;
      /** The TCG probe's result: true ran, false failed, null not probed / impossible. */
      works?: boolean | null;
      nestedInGuest?: boolean;
      detail?: string;
    } | null;
  };
}

export interface ChainPlan {
  possible: boolean;
  /** Why not, when impossible (doctor's words). */
  reason?: string;
  fixes: string[];
  /** Accelerator of the outer VM (L1 relative to this host). */
  outerAccel: 'kvm' | 'tcg';
  /** Expose virtualization extensions to the outer VM. */
  nested: boolean;
  /** What runs this host, for the chain table. */
  hostRunner: Runner;
  /** One sentence for the person: which way the chain will run. */
  summary: string;
}

/** Describes what runs the machine doctor looked at. */
export function hostRunner(d: DoctorReport): Runner {
  const hv = (d.machine?.hypervisor ?? '').toLowerCase();
  if (d.machine?.cloud) return 'cloud';
  if (hv.includes('pvm')) return 'pvm';
  if (d.level === 0 || d.machine?.virtual === false) return 'bare-metal';
  if (hv.includes('kvm')) return 'kvm';
  return d.level === null ? 'unknown' : 'hypervisor';
}

export function planChain(d: DoctorReport, opts: { nested: boolean }): ChainPlan {
  const runner = hostRunner(d);
  const base = { hostRunner: runner, nested: opts.nested, fixes: [] as string[] };
  if (d.verdict.acceleratedVMs && d.verdict.acceleratedNestedVMs)
    return {
      ...base,
      possible: true,
      outerAccel: 'kvm',
      summary: 'this machine runs accelerated VMs that nest: both VMs will run under KVM',
    };
  const fb = d.verdict.fallback;
  // The fallback counts only when doctor's TCG probe really ran a guest.
  if (fb && fb.accel === 'tcg' && fb.works === true)
    return {
      ...base,
      possible: true,
      outerAccel: 'tcg',
      summary: d.verdict.acceleratedVMs
        ? 'KVM works here but its guests cannot nest: the outer VM runs under TCG with emulated SVM, the inner one under KVM inside it'
        : 'no usable KVM here: the outer VM runs under TCG (software emulation) with emulated SVM, the inner one under KVM inside it',
    };
  return {
    ...base,
    possible: false,
    outerAccel: 'tcg',
    reason: [
      'this machine can run no guest: no usable KVM',
      fb?.detail ? `and QEMU TCG does not work (${fb.detail})` : 'and QEMU TCG does not work',
    ].join(' '),
    fixes: [
      ...(fb?.detail && /apt-get install/.test(fb.detail)
        ? ['apt-get install qemu-system-x86']
        : []),
      ...d.verdict.problems.map((p) => p.fix).filter(Boolean),
    ],
    summary: 'this machine can run no guest',
  };
}
