/**
 * QEMU capabilities, probed once per binary (version, accelerators, machine
 * types, CPU models) and cached under <root>/cache keyed by the binary's
 * path, size and mtime, so `run` does not pay four QEMU spawns each time.
 */
import { realpathSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { NotPossibleError } from '../errors.js';
import { Dirs } from '../state/paths.js';
import { readJson, writeJson } from '../state/store.js';
import { which, type Runner } from '../util/exec.js';

export interface QemuFeatures {
  binary: string;
  /** e.g. "7.2.22" */
  version: string;
  versionNum: [number, number, number];
  accels: string[];
  machines: string[];
  cpuModels: string[];
}

/** The QEMU binary for the host's architecture ($NESTVIRT_QEMU overrides). */
export async function findQemu(env: NodeJS.ProcessEnv): Promise<string> {
  const name = env.NESTVIRT_QEMU || 'qemu-system-x86_64';
  const p = name.includes('/') ? name : await which(name, env);
  if (!p)
    throw new NotPossibleError(
      'vm.no-qemu',
      `QEMU (${name}) is not installed`,
      'install it: apt-get install qemu-system-x86 (or run scripts/setup.sh)',
    );
  return p;
}

/** Parses `qemu -version` output. */
export function parseVersion(text: string): {
  version: string;
  versionNum: [number, number, number];
} {
  const m = /version (\d+)\.(\d+)(?:\.(\d+))?/.exec(text);
  if (!m) return { version: 'unknown', versionNum: [0, 0, 0] };
  const n: [number, number, number] = [Number(m[1]), Number(m[2]), Number(m[3] ?? 0)];
  return { version: n.join('.'), versionNum: n };
}

/** Parses `-accel help` (one accelerator per line after the header). */
export function parseAccels(text: string): string[] {
  return text
    .split('\n')
    .slice(1)
    .map((l) => l.trim())
    .filter((l) => /^[a-z][a-z0-9_-]*$/.test(l));
}

/** Parses `-machine help`: first word of each line after the header. */
export function parseMachines(text: string): string[] {
  return text
    .split('\n')
    .slice(1)
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter((w) => /^[a-z0-9][a-z0-9._-]*$/i.test(w));
}

/** Parses `-cpu help`: lines `x86 NAME ...` until the flags section. */
export function parseCpuModels(text: string): string[] {
  const out: string[] = [];
  for (const l of text.split('\n')) {
    const m = /^x86\s+(\S+)/.exec(l);
    if (m) out.push(m[1]!);
  }
  return out;
}

/** Probes a QEMU binary's features (four quick spawns). */
export async function probeQemu(run: Runner, binary: string): Promise<QemuFeatures> {
  const q = (args: string[]) =>
    run([binary, ...args], { check: false, timeoutMs: 20_000 }).then((r) => r.stdout + r.stderr);
  const [ver, accel, mach, cpu] = await Promise.all([
    q(['-version']),
    q(['-accel', 'help']),
    q(['-machine', 'help']),
    q(['-cpu', 'help']),
  ]);
  return {
    binary,
    ...parseVersion(ver),
    accels: parseAccels(accel),
    machines: parseMachines(mach),
    cpuModels: parseCpuModels(cpu),
  };
}

export interface CachedQemuFeatures {
  key: string;
  features: QemuFeatures;
}

/** Where the probe's result is cached, under the state root. */
export const QEMU_FEATURES_CACHE = join(Dirs.cache, 'qemu-features.json');

/**
 * The cache key: the binary's path, size and mtime in whole seconds (an
 * image's root file system keeps seconds; the hypervisor image ships this
 * cache for its copy of QEMU, see src/image/build.ts).
 */
export function qemuFeaturesKey(binary: string, st: { size: number; mtimeMs: number }): string {
  return `${binary}:${st.size}:${Math.floor(st.mtimeMs / 1000)}`;
}

/** Features of the QEMU binary, from the cache when the binary has not changed. */
export async function qemuFeatures(
  root: string,
  run: Runner,
  env: NodeJS.ProcessEnv,
): Promise<QemuFeatures> {
  const binary = await findQemu(env);
  // The real path: /bin/X and /usr/bin/X are one file on a merged-/usr system.
  const key = qemuFeaturesKey(realpathSync(binary), statSync(binary));
  const file = join(root, QEMU_FEATURES_CACHE);
  try {
    const c = await readJson<CachedQemuFeatures>(file);
    if (c?.key === key && c.features.cpuModels.length > 0) return c.features;
  } catch {
    /* corrupt cache: probe again */
  }
  const features = await probeQemu(run, binary);
  if (features.cpuModels.length === 0 || features.machines.length === 0)
    throw new NotPossibleError(
      'vm.qemu-broken',
      `${binary} did not list its CPU models or machines`,
      `run ${binary} -cpu help to see why`,
    );
  try {
    await writeJson(file, { key, features } satisfies CachedQemuFeatures);
  } catch {
    /* a read-only state dir only costs the next run a probe */
  }
  return features;
}
