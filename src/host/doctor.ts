/**
 * The reusable entry points of doctor, for the CLI and for other code
 * (`enable` verifies with them, the VM layer's `--accel auto` asks them):
 *
 *   const report = await runDoctor({ run });        // facts + verdict
 *   const facts  = await gatherFacts({ run, probe: false });
 *   const verdict = diagnose(facts);                  // pure
 *   const accel = await chooseAccel({ run });         // 'kvm' | 'tcg'
 */
import { gatherFacts, type GatherOptions, type HostFacts } from './facts.js';
import { diagnose, type Verdict } from './verdict.js';

export type DoctorReport = HostFacts & { verdict: Verdict };

/** Gathers facts (with the active probe on this machine) and diagnoses them. */
export async function runDoctor(opts: GatherOptions): Promise<DoctorReport> {
  const facts = await gatherFacts(opts);
  return { ...facts, verdict: diagnose(facts) };
}

/**
 * The accelerator a VM started here should use: 'kvm' when a standard guest
 * really runs under KVM (the probe, not just /dev/kvm), else 'tcg'.
 * `nested` is true when guests started with that accelerator can run KVM
 * guests of their own (KVM with nested=1, or TCG with -cpu max on x86).
 */
export async function chooseAccel(
  opts: Pick<GatherOptions, 'run' | 'env' | 'root'>,
): Promise<{ accel: 'kvm' | 'tcg'; nested: boolean; report: DoctorReport }> {
  const report = await runDoctor({ ...opts, probe: true });
  const v = report.verdict;
  if (v.acceleratedVMs) return { accel: 'kvm', nested: v.acceleratedNestedVMs, report };
  return { accel: 'tcg', nested: v.fallback?.nestedInGuest ?? false, report };
}

export { gatherFacts, diagnose };
export type { HostFacts, Verdict, GatherOptions };
