/**
 * The KVM modules, read from /proc/modules AND /sys/module/<m>: a built-in
 * module has no /proc/modules line (and no initstate file) but still has
 * /sys/module/<m>/parameters; a machine booted with `nomodule` has no
 * /proc/modules at all.
 */
import type { HostRoot } from './root.js';

export const KVM_MODULES = ['kvm', 'kvm_intel', 'kvm_amd', 'kvm_hv', 'kvm_pr', 'kvm_pvm'] as const;
export type KvmModuleName = (typeof KVM_MODULES)[number];

/** Parameters reported per module (the rest are noise for this question). */
const INTERESTING = ['nested', 'ept', 'npt', 'enable_shadow_vmcs', 'avic', 'sev', 'hpage', 'mode'];

export interface KvmModule {
  name: KvmModuleName;
  /** Present in the running kernel (loadable and live, or built in). */
  loaded: boolean;
  /** Compiled into the kernel (no /proc/modules line, no initstate). */
  builtin: boolean;
  /** `nested` parameter as a boolean; null when the module has none. */
  nested: boolean | null;
  /** Raw values of the interesting parameters that exist. */
  params: Record<string, string>;
}

/** Y/N/1/0 (and y/n) as a boolean; undefined for anything else. */
export function parseBoolParam(v: string | undefined): boolean | undefined {
  if (v === undefined) return undefined;
  const t = v.trim();
  if (/^(Y|y|1)$/.test(t)) return true;
  if (/^(N|n|0)$/.test(t)) return false;
  return undefined;
}

/** Module names listed in /proc/modules text. */
export function parseProcModules(text: string | undefined): Set<string> {
  const s = new Set<string>();
  for (const l of (text ?? '').split('\n')) {
    const name = l.split(' ')[0];
    if (name) s.add(name);
  }
  return s;
}

/** Reads every KVM module that exists on the machine (loaded or built in). */
export function readKvmModules(root: HostRoot): KvmModule[] {
  const proc = parseProcModules(root.text('proc/modules'));
  const out: KvmModule[] = [];
  for (const name of KVM_MODULES) {
    const dir = `sys/module/${name}`;
    const inProc = proc.has(name);
    const hasDir = root.isDir(dir);
    if (!inProc && !hasDir) continue;
    const initstate = root.line(`${dir}/initstate`);
    const builtin = hasDir && !inProc && initstate === undefined;
    const loaded = inProc || builtin || initstate === 'live';
    const params: Record<string, string> = {};
    for (const p of INTERESTING) {
      const v = root.line(`${dir}/parameters/${p}`);
      if (v !== undefined) params[p] = v;
    }
    out.push({ name, loaded, builtin, nested: parseBoolParam(params['nested']) ?? null, params });
  }
  return out;
}
