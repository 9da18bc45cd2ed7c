/**
 * `gcp check`: the preflight for an L1 host. Static rules (series, CPU
 * platform) always; with the API, the effective org policy, the zone's CPU
 * platforms (zones.get) and the machine type (machineTypes.get).
 */
import type { Gcp } from './api.js';
import { googleError } from './errors.js';
import { effectivePolicy, CONSTRAINT } from './policy.js';
import { staticFindings, zoneFinding, type Finding, SUGGESTED_MACHINE_TYPE } from './rules.js';

export interface CheckOptions {
  project: string;
  zone?: string | undefined;
  machineType?: string | undefined;
  minCpuPlatform?: string | undefined;
  offline: boolean;
}

export interface Problem {
  id: Finding['id'];
  severity: 'error' | 'warning';
  message: string;
  fix: string | null;
}

/** `gcp check --json` (schema documented in docs/gcp.md). */
export interface CheckReport {
  project: string;
  zone: string | null;
  machineType: string | null;
  minCpuPlatform: string | null;
  offline: boolean;
  findings: Finding[];
  policy: { constraint: string; enforced: boolean } | null;
  zoneCpuPlatforms: string[] | null;
  machine: {
    guestCpus: number | null;
    memoryMb: number | null;
    isSharedCpu: boolean;
    architecture: string | null;
  } | null;
  verdict: { nestedVirtualization: boolean; problems: Problem[] };
}

/** Runs the preflight; `gcp` may be undefined only when `offline`. */
export async function check(gcp: Gcp | undefined, o: CheckOptions): Promise<CheckReport> {
  const findings = staticFindings({ machineType: o.machineType, minCpuPlatform: o.minCpuPlatform });
  let policy: CheckReport['policy'] = null;
  let zoneCpuPlatforms: string[] | null = null;
  let machine: CheckReport['machine'] = null;
  if (!o.offline && gcp) {
    const eff = await effectivePolicy(gcp, { kind: 'projects', id: o.project });
    policy = { constraint: CONSTRAINT, enforced: eff.enforced };
    findings.push(
      eff.enforced
        ? {
            id: 'policy',
            status: 'fail',
            message: `org policy ${CONSTRAINT} is enforced for project ${o.project}: nested virtualization is disabled`,
            fix: `nestvirt gcp policy allow --project ${o.project}`,
          }
        : {
            id: 'policy',
            status: 'ok',
            message: `org policy ${CONSTRAINT} is not enforced for project ${o.project}`,
          },
    );
    if (o.zone) {
      try {
        const { data: z } = await gcp.compute.zones.get({ project: o.project, zone: o.zone });
        zoneCpuPlatforms = z.availableCpuPlatforms ?? [];
        findings.push(zoneFinding(o.zone, zoneCpuPlatforms, o.minCpuPlatform));
      } catch (e) {
        throw googleError(e, {
          what: `zone ${o.zone}`,
          project: o.project,
          zone: o.zone,
          role: 'roles/compute.viewer',
          notFoundFix: `list zones with: gcloud compute zones list --project ${o.project}`,
        });
      }
      if (o.machineType) machine = await machineTypeFinding(gcp, o, findings);
    } else {
      findings.push({
        id: 'zone',
        status: 'skip',
        message: 'no --zone given: CPU platforms and machine type not checked against a zone',
      });
    }
  } else {
    findings.push({
      id: 'policy',
      status: 'skip',
      message: `offline: org policy ${CONSTRAINT} not read`,
    });
  }
  const problems: Problem[] = findings
    .filter((f) => f.status === 'fail' || f.status === 'warn')
    .map((f) => ({
      id: f.id,
      severity: f.status === 'fail' ? 'error' : 'warning',
      message: f.message,
      fix: f.fix ?? null,
    }));
  return {
    project: o.project,
    zone: o.zone ?? null,
    machineType: o.machineType ?? null,
    minCpuPlatform: o.minCpuPlatform ?? null,
    offline: o.offline,
    findings,
    policy,
    zoneCpuPlatforms,
    machine,
    verdict: { nestedVirtualization: !findings.some((f) => f.status === 'fail'), problems },
  };
}

async function machineTypeFinding(
  gcp: Gcp,
  o: CheckOptions,
  findings: Finding[],
): Promise<CheckReport['machine']> {
  try {
    const { data: mt } = await gcp.compute.machineTypes.get({
      project: o.project,
      zone: o.zone!,
      machineType: o.machineType!,
    });
    const arch = (mt as { architecture?: string }).architecture ?? null;
    if (arch && arch !== 'X86_64')
      findings.push({
        id: 'machine-type',
        status: 'fail',
        message: `${o.machineType} is ${arch}; nested virtualization needs x86-64 (Intel)`,
        fix: `--machine-type ${SUGGESTED_MACHINE_TYPE}`,
      });
    else
      findings.push({
        id: 'machine-type',
        status: 'ok',
        message: `${o.machineType} is offered in ${o.zone}: ${mt.guestCpus} vCPUs, ${Math.round((mt.memoryMb ?? 0) / 1024)} GB`,
      });
    return {
      guestCpus: mt.guestCpus ?? null,
      memoryMb: mt.memoryMb ?? null,
      isSharedCpu: !!mt.isSharedCpu,
      architecture: arch,
    };
  } catch (e) {
    const status = (e as { response?: { status?: number } }).response?.status;
    if (status === 404) {
      findings.push({
        id: 'machine-type',
        status: 'fail',
        message: `machine type ${o.machineType} is not offered in zone ${o.zone}`,
        fix: `list them with: gcloud compute machine-types list --zones ${o.zone} --project ${o.project}`,
      });
      return null;
    }
    throw googleError(e, {
      what: `machine type ${o.machineType}`,
      project: o.project,
      zone: o.zone!,
      role: 'roles/compute.viewer',
    });
  }
}
