/**
 * What the VM layer needs to know about the machine it runs on: its size
 * (memory, CPUs), which accelerator a guest can use (doctor's facts and its
 * real KVM probe), and this machine's own place in the chain of levels.
 * Doctor's answer is cached per boot (keyed by boot id, /dev/kvm and the KVM
 * modules' nested parameters), so `run` does not pay a probe every time.
 */
import { readFileSync, statSync, readdirSync } from 'node:fs';
import { availableParallelism, hostname } from 'node:os';
import { join } from 'node:path';
import type { HostFacts, Verdict } from '../host/doctor.js';
import type { ChainInfo, Runner as ChainRunner } from '../host/chain.js';
import { NotPossibleError } from '../errors.js';
import { Dirs } from '../state/paths.js';
import { readJson, writeJson } from '../state/store.js';
import type { Runner } from '../util/exec.js';
import type { Accel, AccelRequest } from './types.js';

/** Host memory (bytes) from /proc/meminfo MemTotal, and CPU count. */
export function hostSize(procRoot = '/proc'): { memBytes: number; cpus: number } {
  let memBytes = 0;
  try {
    const m = /^MemTotal:\s+(\d+)\s*kB/m.exec(readFileSync(join(procRoot, 'meminfo'), 'utf8'));
    if (m) memBytes = Number(m[1]) * 1024;
  } catch {
    /* unknown: no memory check */
  }
  return { memBytes, cpus: availableParallelism() };
}

/** What the accelerator decision is based on (cached per boot). */
export interface HostVerdict {
  key: string;
  /** KVM runs a standard guest here (doctor's verdict, probe included). */
  kvm: boolean;
  /** Guests under KVM can run KVM themselves (nested on and exposed). */
  kvmNested: boolean;
  /** Why KVM cannot be used, and the fix, from doctor's first blocking problem. */
  reason: string | null;
  fix: string | null;
  /** Why nesting under KVM is not possible, and the fix. */
  nestedReason: string | null;
  nestedFix: string | null;
  /** This machine's chain, for the child's. */
  chain: ChainInfo;
}

function line(p: string): string {
  try {
    return readFileSync(p, 'utf8').trim();
  } catch {
    return '';
  }
}

/** Where the verdict is cached, under the state root. */
export const HOST_VERDICT_CACHE = join(Dirs.cache, 'host-verdict.json');

/** The cache key: changes when the machine reboots or KVM's state changes. */
export function verdictKey(): string {
  let dev = 'none';
  try {
    dev = String(statSync('/dev/kvm').mtimeMs);
  } catch {
    /* none */
  }
  const nested: string[] = [];
  for (const m of ['kvm_amd', 'kvm_intel', 'kvm', 'kvm_pvm']) {
    const p = `/sys/module/${m}/parameters/nested`;
    nested.push(`${m}=${line(p)}`);
  }
  let mods = '';
  try {
    mods = readdirSync('/sys/module')
      .filter((m) => m.startsWith('kvm'))
      .join(',');
  } catch {
    /* none */
  }
  return [line('/proc/sys/kernel/random/boot_id'), dev, mods, ...nested].join('|');
}

function runnerOf(f: HostFacts): ChainRunner {
  if (f.machine.virtual === false) return 'bare-metal';
  if (f.machine.cloud) return 'cloud';
  switch (f.machine.hypervisor) {
    case 'kvm':
      return 'kvm';
    case 'qemu-tcg':
      return 'tcg';
    case 'pvm':
      return 'pvm';
    case null:
      return 'unknown';
    default:
      return 'hypervisor';
  }
}

/** This machine's chain: the one its nestvirt parent gave it, else one hop from doctor's level. */
export function ownChain(f: HostFacts): ChainInfo {
  if (f.chain) {
    const { source: _source, ...c } = f.chain;
    return c;
  }
  const level = f.level;
  return {
    level,
    relative: 0,
    chain: [{ level, relative: 0, name: hostname(), runner: runnerOf(f) }],
  };
}

/** Doctor's facts and verdict reduced to what starting a VM needs. */
export async function hostVerdict(
  root: string,
  run: Runner,
  env: NodeJS.ProcessEnv,
): Promise<HostVerdict> {
  const key = verdictKey();
  const file = join(root, HOST_VERDICT_CACHE);
  try {
    const c = await readJson<HostVerdict>(file);
    if (c && c.key === key && c.chain) return c;
  } catch {
    /* probe again */
  }
  // Loaded here, not at start-up: only a cache miss needs doctor.
  const { gatherFacts, diagnose } = await import('../host/doctor.js');
  const { probeKvm } = await import('../host/probe.js');
  const facts = await gatherFacts({ run, env, probe: false });
  if (facts.kvm.device)
    facts.kvm.probe = await probeKvm({
      run,
      arch: facts.cpu.arch,
      env,
      pvm: facts.kvm.module === 'kvm_pvm',
    });
  const hv = verdictFrom(facts, diagnose(facts));
  await saveHostVerdict(root, hv);
  return hv;
}

/** Reduces doctor's facts and verdict to a HostVerdict (keyed to this boot and KVM state). */
export function verdictFrom(facts: HostFacts, v: Verdict): HostVerdict {
  const blocking = v.problems.find((p) => p.severity === 'error' && p.affects === 'vms');
  const nestedBlock = v.problems.find((p) => p.affects === 'nested');
  return {
    key: verdictKey(),
    kvm: v.acceleratedVMs,
    kvmNested: v.acceleratedNestedVMs,
    reason: v.acceleratedVMs ? null : (blocking?.message ?? v.summary),
    fix: v.acceleratedVMs ? null : (blocking?.fix ?? null),
    nestedReason: v.acceleratedNestedVMs ? null : (nestedBlock?.message ?? null),
    nestedFix: v.acceleratedNestedVMs ? null : (nestedBlock?.fix ?? null),
    chain: ownChain(facts),
  };
}

/**
 * Caches a verdict for the next `run`/`start`. `nestvirt doctor` calls this
 * after its live probe, so a `run` right after it (the demo, inside its
 * outer VM) does not probe KVM a second time. Best effort.
 */
export async function saveHostVerdict(root: string, hv: HostVerdict): Promise<void> {
  try {
    await writeJson(join(root, HOST_VERDICT_CACHE), hv);
  } catch {
    /* a read-only state dir: the next run probes again */
  }
}

export interface AccelChoice {
  accel: Accel;
  /** Said on stderr: why TCG was chosen, or why nesting will not work. */
  notes: string[];
}

/**
 * Picks the accelerator: `auto` uses KVM when doctor says standard guests
 * really run under it, else TCG with a note saying why; `kvm` when KVM is
 * impossible is a NotPossibleError carrying doctor's explanation and fix.
 */
export function chooseAccel(
  req: AccelRequest,
  nested: boolean,
  hv: HostVerdict,
  features: { accels: string[] },
): AccelChoice {
  const notes: string[] = [];
  if (req === 'tcg') return { accel: 'tcg', notes };
  const qemuHasKvm = features.accels.includes('kvm');
  if (!hv.kvm || !qemuHasKvm) {
    const reason = !hv.kvm
      ? (hv.reason ?? 'doctor found no usable KVM')
      : 'this QEMU was built without KVM support';
    if (req === 'kvm')
      throw new NotPossibleError(
        'vm.no-kvm',
        `--accel kvm is not possible here: ${reason}`,
        hv.fix ??
          'use --accel tcg (software emulation), or run on a machine with KVM (see `nestvirt doctor`)',
      );
    notes.push(`KVM unavailable here: ${reason}; using TCG (software emulation)`);
    return { accel: 'tcg', notes };
  }
  if (nested && !hv.kvmNested)
    notes.push(
      `--nested: guests here will not see VT-x/AMD-V: ${hv.nestedReason ?? 'nesting is off'}; fix: ${hv.nestedFix ?? '`nestvirt enable`'}`,
    );
  return { accel: 'kvm', notes };
}
