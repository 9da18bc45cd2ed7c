/**
 * What `enable` / `disable` need to know about this machine's KVM module.
 * Built on doctor's facts (src/host/facts.ts `gatherFacts`, read through a
 * root directory, without the active probes) plus what only a module reload
 * needs: whether the module can be unloaded (listed in /proc/modules, or
 * built in per /sys/module or lib/modules/<release>/modules.builtin), its
 * raw `nested` value, its reference count and holders, and the kernel
 * command line's `<module>.nested=`. Never changes anything.
 */
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { gatherFacts, diagnose, type HostFacts } from '../doctor.js';
import { expectedModule, type Problem } from '../verdict.js';
import { parseBoolParam } from '../modules.js';
import type { Arch, Extension } from '../cpuinfo.js';
import type { Runner } from '../../util/exec.js';

export type NestingModule = 'kvm_intel' | 'kvm_amd' | 'kvm_hv' | 'kvm';
export const NESTING_MODULES: readonly NestingModule[] = ['kvm_intel', 'kvm_amd', 'kvm_hv', 'kvm'];

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
  vendor: string;
  extension: Extension | null;
  isVm: boolean;
  /** doctor's name for the hypervisor below (pvm, qemu-tcg, kvm, ...), null on bare metal. */
  hypervisor: string | null;
  /** The module that carries `nested` for this CPU; null when none applies (aarch64). */
  module: NestingModule | null;
  /** The module was given (--module), not detected. */
  moduleForced: boolean;
  moduleState: ModuleState;
  /** Raw text of /sys/module/<m>/parameters/nested, trimmed; null when absent. */
  nestedRaw: string | null;
  /** `nestedRaw` as a boolean; null when unknown. */
  nested: boolean | null;
  /** /sys/module/<m>/refcnt (or /proc/modules' count); 0 when absent. */
  refcnt: number;
  /** Modules depending on it (/sys/module/<m>/holders). */
  holders: string[];
  /** Other KVM modules present (e.g. kvm_pvm), for explanations. */
  otherKvmModules: string[];
  devKvm: boolean;
  /** `<m>.nested=...` on the kernel command line, when present. */
  cmdlineNested: string | null;
  /** doctor's blocking problem for accelerated VMs here (no extension, PVM...), if any. */
  blocker: Problem | null;
}

/** Reads a file through the root; undefined when absent or unreadable. */
export async function readRootFile(root: string, path: string): Promise<string | undefined> {
  try {
    return await readFile(join(root, path), 'utf8');
  } catch {
    return undefined;
  }
}

/** Parses a `nested` parameter value (Y/N for bool, 1/0 for int); null when unknown. */
export function parseNested(raw: string | null | undefined): boolean | null {
  return parseBoolParam(raw ?? undefined) ?? null;
}

/** The .ko file name stem of a module (kvm_amd -> kvm-amd). */
export function koName(m: string): string {
  return m.replace(/_/g, '-');
}

/** Module name -> "used by" count, from /proc/modules text. */
export function parseProcModules(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const [name, , used] = line.trim().split(/\s+/);
    if (name) out.set(name, Number(used) || 0);
  }
  return out;
}

/** The module that carries `nested` for doctor's facts; null on aarch64 and unknown x86 vendors. */
export function moduleFor(f: HostFacts): NestingModule | null {
  if (f.cpu.arch === 'aarch64') return null;
  const m = expectedModule(f);
  return NESTING_MODULES.includes(m as NestingModule) ? (m as NestingModule) : null;
}

/** doctor's problems that mean "no KVM to turn nesting on for here". */
const BLOCKERS = ['cpu.no-extension', 'kvm.pvm-guest', 'kvm.pvm-only', 'cpu.disabled-by-firmware'];

/** Reads the nesting facts through `root`; `module` overrides the detected module. */
export async function readNestingFacts(
  root: string,
  opts: { module?: NestingModule; run: Runner; env?: NodeJS.ProcessEnv },
): Promise<NestingFacts> {
  const hf = await gatherFacts({ root, run: opts.run, env: opts.env ?? process.env, probe: false });
  const module = opts.module ?? moduleFor(hf);
  const procText = await readRootFile(root, 'proc/modules');
  const procModules = procText === undefined ? undefined : parseProcModules(procText);
  const km = module ? hf.kvm.modules.find((m) => m.name === module) : undefined;
  let moduleState: ModuleState = 'not-loaded';
  if (module) {
    if (procModules?.has(module)) moduleState = 'loaded';
    else if (km?.builtin || (km && procModules === undefined)) moduleState = 'builtin';
    else if (await listedBuiltin(root, module)) moduleState = 'builtin';
    else if (km) moduleState = 'loaded';
    else if (opts.module && !(hf.cpu.extensions && moduleFor(hf) === module))
      moduleState = 'unknown';
  }
  let refcnt = 0;
  let holders: string[] = [];
  if (module) {
    const rc = await readRootFile(root, `sys/module/${module}/refcnt`);
    refcnt = rc !== undefined ? Number(rc.trim()) || 0 : (procModules?.get(module) ?? 0);
    try {
      holders = (await readdir(join(root, `sys/module/${module}/holders`))).sort();
    } catch {
      holders = [];
    }
  }
  const nestedRaw =
    (await readRootFile(root, `sys/module/${module}/parameters/nested`))?.trim() ?? null;
  const cmdline = hf.kernel.cmdline ?? '';
  const cmdlineNested = module
    ? (new RegExp(`(?:^|\\s)(?:${module}|${koName(module)})\\.nested=(\\S+)`).exec(cmdline)?.[1] ??
      null)
    : null;
  const blocker = diagnose(hf).problems.find((p) => BLOCKERS.includes(p.id)) ?? null;
  return {
    root,
    arch: hf.cpu.arch,
    vendor: hf.cpu.vendor,
    extension: hf.cpu.extensions,
    isVm: hf.machine.virtual === true,
    hypervisor: hf.machine.hypervisor,
    module,
    moduleForced: opts.module !== undefined,
    moduleState,
    nestedRaw: module ? nestedRaw : null,
    nested: module ? parseNested(nestedRaw) : null,
    refcnt,
    holders,
    otherKvmModules: hf.kvm.modules
      .map((m) => m.name)
      .filter((n) => n !== module && n !== 'kvm')
      .sort(),
    devKvm: hf.kvm.device,
    cmdlineNested,
    blocker,
  };
}

async function listedBuiltin(root: string, module: string): Promise<boolean> {
  const rel = (await readRootFile(root, 'proc/sys/kernel/osrelease'))?.trim();
  if (!rel) return false;
  const builtin = await readRootFile(root, `lib/modules/${rel}/modules.builtin`);
  if (!builtin) return false;
  const ko = koName(module);
  return builtin.split('\n').some((l) => l.endsWith(`/${ko}.ko`) || l.endsWith(`/${module}.ko`));
}
