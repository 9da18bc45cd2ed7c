/**
 * The static rules for nested virtualization on Compute Engine: which
 * machine series can host L2 VMs and which CPU platforms are new enough.
 * Pure data and pure functions; `gcp check --offline` uses only this file.
 *
 * Why: Google's "About nested virtualization" page (restrictions section, see
 * docs/gcp.md for the citations and dates): nested virtualization is Intel
 * VT-x only, so AMD- and Arm-based series are out; E2 is out; memory-optimized
 * series are out even though they are Intel; the CPU platform must be Intel
 * Haswell or later.
 */

export type Vendor = 'intel' | 'amd' | 'arm' | 'mixed';
export type Family =
  | 'general-purpose'
  | 'cost-optimized'
  | 'compute-optimized'
  | 'memory-optimized'
  | 'accelerator-optimized'
  | 'storage-optimized';

export interface SeriesRule {
  /** Lower-case series prefix of machine type names, e.g. `n2`. */
  series: string;
  vendor: Vendor;
  family: Family;
  /** True when an L1 of this series can run L2 VMs. */
  nested: boolean;
  /** Why not, when `nested` is false. */
  reason?: string;
  /**
   * True when some CPU platforms this series may land on are older than
   * Haswell, so `--min-cpu-platform` must be set (N1: Sandy Bridge, Ivy Bridge).
   */
  needsMinCpuPlatform?: boolean;
}

const amd = 'AMD-based series do not support nested virtualization (it is Intel VT-x only)';
const arm = 'Arm-based series do not support nested virtualization (it is Intel VT-x only)';
const mem = 'memory-optimized series do not support nested virtualization';

/** Every machine series we know, with its verdict. */
export const SERIES_RULES: readonly SeriesRule[] = [
  {
    series: 'n1',
    vendor: 'intel',
    family: 'general-purpose',
    nested: true,
    needsMinCpuPlatform: true,
  },
  { series: 'n2', vendor: 'intel', family: 'general-purpose', nested: true },
  { series: 'n4', vendor: 'intel', family: 'general-purpose', nested: true },
  { series: 'c3', vendor: 'intel', family: 'general-purpose', nested: true },
  { series: 'c4', vendor: 'intel', family: 'general-purpose', nested: true },
  { series: 'c2', vendor: 'intel', family: 'compute-optimized', nested: true },
  { series: 'h3', vendor: 'intel', family: 'compute-optimized', nested: true },
  { series: 'z3', vendor: 'intel', family: 'storage-optimized', nested: true },
  { series: 'a2', vendor: 'intel', family: 'accelerator-optimized', nested: true },
  { series: 'a3', vendor: 'intel', family: 'accelerator-optimized', nested: true },
  { series: 'g2', vendor: 'intel', family: 'accelerator-optimized', nested: true },
  {
    series: 'e2',
    vendor: 'mixed',
    family: 'cost-optimized',
    nested: false,
    reason: 'E2 machine types do not support nested virtualization',
  },
  { series: 'n2d', vendor: 'amd', family: 'general-purpose', nested: false, reason: amd },
  { series: 'n4d', vendor: 'amd', family: 'general-purpose', nested: false, reason: amd },
  { series: 't2d', vendor: 'amd', family: 'general-purpose', nested: false, reason: amd },
  { series: 'c2d', vendor: 'amd', family: 'compute-optimized', nested: false, reason: amd },
  { series: 'c3d', vendor: 'amd', family: 'general-purpose', nested: false, reason: amd },
  { series: 'c4d', vendor: 'amd', family: 'general-purpose', nested: false, reason: amd },
  { series: 'h4d', vendor: 'amd', family: 'compute-optimized', nested: false, reason: amd },
  { series: 't2a', vendor: 'arm', family: 'general-purpose', nested: false, reason: arm },
  { series: 'c4a', vendor: 'arm', family: 'general-purpose', nested: false, reason: arm },
  { series: 'n4a', vendor: 'arm', family: 'general-purpose', nested: false, reason: arm },
  { series: 'm1', vendor: 'intel', family: 'memory-optimized', nested: false, reason: mem },
  { series: 'm2', vendor: 'intel', family: 'memory-optimized', nested: false, reason: mem },
  { series: 'm3', vendor: 'intel', family: 'memory-optimized', nested: false, reason: mem },
  { series: 'm4', vendor: 'intel', family: 'memory-optimized', nested: false, reason: mem },
  { series: 'x4', vendor: 'intel', family: 'memory-optimized', nested: false, reason: mem },
];

/** A machine type to suggest when the chosen one cannot nest. */
export const SUGGESTED_MACHINE_TYPE = 'n2-standard-4';
/** The oldest platform that supports nesting; the value for --min-cpu-platform. */
export const MIN_NESTED_PLATFORM = 'Intel Haswell';

/**
 * Intel CPU platforms as Compute Engine names them (zones.get
 * availableCpuPlatforms, instances' cpuPlatform), oldest first.
 */
export const INTEL_PLATFORMS: readonly string[] = [
  'Intel Sandy Bridge',
  'Intel Ivy Bridge',
  'Intel Haswell',
  'Intel Broadwell',
  'Intel Skylake',
  'Intel Cascade Lake',
  'Intel Ice Lake',
  'Intel Sapphire Rapids',
  'Intel Emerald Rapids',
  'Intel Granite Rapids',
];

export interface MachineTypeInfo {
  name: string;
  /** Series prefix, e.g. `n2`; `n1` for legacy `custom-*`, `f1-micro`, `g1-small`. */
  series: string;
  /** The rule for the series, or undefined when the series is unknown. */
  rule: SeriesRule | undefined;
  /** Bare-metal (`*-metal`) types have VT-x natively; no nesting involved. */
  metal: boolean;
}

/** Parses a machine type name (or URL) into its series and rule. */
export function machineTypeInfo(machineType: string): MachineTypeInfo {
  const name = machineType.split('/').pop()!.toLowerCase();
  let series: string;
  if (/^custom-\d+-\d+(-ext)?$/.test(name) || name === 'f1-micro' || name === 'g1-small')
    series = 'n1';
  else series = name.split('-')[0] ?? name;
  const rule = SERIES_RULES.find((r) => r.series === series);
  return { name, series, rule, metal: name.endsWith('-metal') };
}

/**
 * Whether a CPU platform name can run nested VMs: true for Intel Haswell or
 * later, false for older Intel or non-Intel, undefined for an unknown name
 * (including `Automatic`, the API's "no minimum").
 */
export function platformSupportsNesting(platform: string): boolean | undefined {
  const i = INTEL_PLATFORMS.findIndex((p) => p.toLowerCase() === platform.trim().toLowerCase());
  if (i >= 0) return i >= INTEL_PLATFORMS.indexOf(MIN_NESTED_PLATFORM);
  if (/^(amd|ampere|google axion)\b/i.test(platform.trim())) return false;
  return undefined;
}

/** One finding of a check: `ok`, `fail` (blocks nesting), `warn` or `skip`. */
export interface Finding {
  id: 'series' | 'platform' | 'policy' | 'zone' | 'machine-type' | 'image';
  status: 'ok' | 'fail' | 'warn' | 'skip';
  message: string;
  /** The exact change that fixes a `fail` or `warn`. */
  fix?: string;
}

/** The static part of the preflight: series and platform, no API calls. */
export function staticFindings(opts: {
  machineType?: string | undefined;
  minCpuPlatform?: string | undefined;
}): Finding[] {
  const out: Finding[] = [];
  if (!opts.machineType) {
    out.push({
      id: 'series',
      status: 'skip',
      message: `no --machine-type given; nested virtualization needs an Intel series such as N2 (e.g. ${SUGGESTED_MACHINE_TYPE})`,
    });
  } else {
    const mt = machineTypeInfo(opts.machineType);
    if (mt.metal)
      out.push({
        id: 'series',
        status: 'warn',
        message: `${mt.name} is a bare-metal type: VT-x is native there, the nested-virtualization flag does not apply`,
      });
    else if (!mt.rule)
      out.push({
        id: 'series',
        status: 'warn',
        message: `unknown machine series "${mt.series}" (${mt.name}); nestvirt cannot tell whether it supports nested virtualization`,
        fix: `use a known Intel series, e.g. --machine-type ${SUGGESTED_MACHINE_TYPE}`,
      });
    else if (!mt.rule.nested)
      out.push({
        id: 'series',
        status: 'fail',
        message: `${mt.name}: ${mt.rule.reason}`,
        fix: `--machine-type ${SUGGESTED_MACHINE_TYPE}`,
      });
    else
      out.push({
        id: 'series',
        status: 'ok',
        message: `${mt.name}: ${mt.series.toUpperCase()} is an Intel ${mt.rule.family} series that supports nested virtualization`,
      });
    if (opts.minCpuPlatform) out.push(platformFinding(opts.minCpuPlatform));
    else if (mt.rule?.nested && mt.rule.needsMinCpuPlatform)
      out.push({
        id: 'platform',
        status: 'warn',
        message: `${mt.series.toUpperCase()} can land on CPU platforms older than ${MIN_NESTED_PLATFORM} (Sandy Bridge, Ivy Bridge), where nesting does not work`,
        fix: `--min-cpu-platform "${MIN_NESTED_PLATFORM}"`,
      });
  }
  return out;
}

function platformFinding(platform: string): Finding {
  const ok = platformSupportsNesting(platform);
  if (ok === true)
    return {
      id: 'platform',
      status: 'ok',
      message: `minimum CPU platform ${platform} is ${MIN_NESTED_PLATFORM} or later`,
    };
  if (ok === false)
    return {
      id: 'platform',
      status: 'fail',
      message: `minimum CPU platform ${platform} cannot run nested VMs (needs ${MIN_NESTED_PLATFORM} or later)`,
      fix: `--min-cpu-platform "${MIN_NESTED_PLATFORM}"`,
    };
  return {
    id: 'platform',
    status: 'warn',
    message: `unknown CPU platform "${platform}"`,
    fix: `--min-cpu-platform "${MIN_NESTED_PLATFORM}"`,
  };
}

/**
 * Judges a zone's available CPU platforms (zones.get) for nesting: at least
 * one Intel Haswell-or-later platform must be offered.
 */
export function zoneFinding(
  zone: string,
  platforms: readonly string[],
  minCpuPlatform?: string,
): Finding {
  const good = platforms.filter((p) => platformSupportsNesting(p) === true);
  if (good.length === 0)
    return {
      id: 'zone',
      status: 'fail',
      message: `zone ${zone} offers no Intel ${MIN_NESTED_PLATFORM}-or-later CPU platform (has: ${platforms.join(', ') || 'none'})`,
      fix: 'choose another zone, e.g. --zone us-central1-a',
    };
  if (minCpuPlatform && !platforms.some((p) => p.toLowerCase() === minCpuPlatform.toLowerCase()))
    return {
      id: 'zone',
      status: 'fail',
      message: `zone ${zone} does not offer CPU platform ${minCpuPlatform} (has: ${platforms.join(', ')})`,
      fix: `--min-cpu-platform "${good[0]}"`,
    };
  return { id: 'zone', status: 'ok', message: `zone ${zone} offers ${good.join(', ')}` };
}
