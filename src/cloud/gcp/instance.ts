/**
 * `gcp create`: a nested-ready L1 instance. Pure parts (request body, gcloud
 * line, startup script, parsing the serial-port report, diagnosis) are apart
 * from the API flow (insert → wait for the zone operation → read the serial
 * port until the startup script has reported).
 */
import type { compute_v1 } from '@googleapis/compute';
import type { Gcp } from './api.js';
import { googleError, operationError, type ErrorContext } from './errors.js';
import {
  machineTypeInfo,
  platformSupportsNesting,
  MIN_NESTED_PLATFORM,
  SUGGESTED_MACHINE_TYPE,
} from './rules.js';
import type { CheckReport } from './check.js';
import { NotPossibleError, UsageError } from '../../errors.js';
import { shellQuote } from '../../util/exec.js';

/** The licence that turns nesting on for instances booted from a licensed image (legacy). */
export const VMX_LICENSE = 'projects/vm-options/global/licenses/enable-vmx';
export const VERIFY_TAG = 'nestvirt-verify:';
export const DEFAULT_IMAGE_FAMILY = 'debian-12';
export const DEFAULT_IMAGE_PROJECT = 'debian-cloud';

export interface CreateOptions {
  name: string;
  project: string;
  zone: string;
  machineType: string;
  minCpuPlatform?: string | undefined;
  imageFamily: string;
  imageProject: string;
  /** An image name or path (e.g. one made by `gcp image`); overrides the family. */
  image?: string | undefined;
  aliasRange?: string | undefined;
  canIpForward: boolean;
  legacyLicense: boolean;
  network: string;
  subnet?: string | undefined;
  diskSizeGb: number;
}

/** Validates names and ranges; each problem is one UsageError. */
export function validateCreate(o: CreateOptions): void {
  if (!/^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/.test(o.name))
    throw new UsageError(
      'gcp.bad-name',
      `instance name ${JSON.stringify(o.name)} is not valid: lower-case letters, digits and hyphens, starting with a letter, at most 63`,
      'e.g. nestvirt-l1',
    );
  if (
    o.aliasRange !== undefined &&
    !/^(\d{1,3}(\.\d{1,3}){3})?\/([0-9]|[12][0-9]|3[0-2])$/.test(o.aliasRange)
  )
    throw new UsageError(
      'gcp.bad-alias-range',
      `--alias-range must be a prefix length like /30 or a CIDR like 10.128.4.0/30, got ${JSON.stringify(o.aliasRange)}`,
      'e.g. --alias-range /30',
    );
  if (!Number.isInteger(o.diskSizeGb) || o.diskSizeGb < 10)
    throw new UsageError(
      'gcp.bad-disk-size',
      `--disk-size must be a whole number of GB, at least 10, got ${o.diskSizeGb}`,
      'e.g. --disk-size 20',
    );
}

/**
 * The startup script: counts vmx in /proc/cpuinfo, looks for /dev/kvm and the
 * kvm_intel nested parameter, and writes one parseable line to the first
 * serial port, e.g. `nestvirt-verify: vmx=4 kvm=yes nested=Y`.
 */
export function startupScript(): string {
  return [
    '#!/bin/bash',
    '# nestvirt: report nested virtualization on the serial port (read back by `nestvirt gcp create`).',
    'modprobe kvm_intel 2>/dev/null || true',
    'vmx=$(grep -cw vmx /proc/cpuinfo || true)',
    'kvm=no; [ -c /dev/kvm ] && kvm=yes',
    'nested=$(cat /sys/module/kvm_intel/parameters/nested 2>/dev/null || echo -)',
    `echo "${VERIFY_TAG} vmx=\${vmx:-0} kvm=\${kvm} nested=\${nested}" > /dev/ttyS0`,
    '',
  ].join('\n');
}

export interface VerifyReport {
  vmx: number;
  kvm: boolean;
  /** kvm_intel's nested parameter as the guest sees it (`Y`, `N`, `1`, `-`). */
  nested: string;
  line: string;
}

/** Finds the startup script's report in serial output (the last one wins). */
export function parseVerifyLine(text: string): VerifyReport | undefined {
  const re = /nestvirt-verify: vmx=(\d+) kvm=(yes|no) nested=(\S+)/g;
  let m: RegExpExecArray | null;
  let last: VerifyReport | undefined;
  while ((m = re.exec(text)))
    last = { vmx: Number(m[1]), kvm: m[2] === 'yes', nested: m[3]!, line: m[0] };
  return last;
}

function sourceImage(o: CreateOptions): string {
  if (o.image)
    return o.image.includes('/') ? o.image : `projects/${o.project}/global/images/${o.image}`;
  return `projects/${o.imageProject}/global/images/family/${o.imageFamily}`;
}

/** The instances.insert request body (what `--dry-run` prints). */
export function instanceBody(o: CreateOptions): compute_v1.Schema$Instance {
  const nic: compute_v1.Schema$NetworkInterface = {
    network: o.network.includes('/') ? o.network : `global/networks/${o.network}`,
    ...(o.subnet
      ? {
          subnetwork: o.subnet.includes('/')
            ? o.subnet
            : `regions/${o.zone.replace(/-[a-z]$/, '')}/subnetworks/${o.subnet}`,
        }
      : {}),
    accessConfigs: [{ name: 'External NAT', type: 'ONE_TO_ONE_NAT' }],
    ...(o.aliasRange ? { aliasIpRanges: [{ ipCidrRange: o.aliasRange }] } : {}),
  };
  return {
    name: o.name,
    machineType: `zones/${o.zone}/machineTypes/${o.machineType}`,
    ...(o.minCpuPlatform ? { minCpuPlatform: o.minCpuPlatform } : {}),
    ...(o.legacyLicense ? {} : { advancedMachineFeatures: { enableNestedVirtualization: true } }),
    canIpForward: o.canIpForward,
    disks: [
      {
        boot: true,
        autoDelete: true,
        initializeParams: { sourceImage: sourceImage(o), diskSizeGb: String(o.diskSizeGb) },
      },
    ],
    networkInterfaces: [nic],
    metadata: { items: [{ key: 'startup-script', value: startupScript() }] },
    labels: { 'nestvirt-role': 'l1' },
  };
}

/** The equivalent gcloud command (the startup script saved as nestvirt-verify.sh). */
export function gcloudCreateCommand(o: CreateOptions): string {
  const nic = [
    `network=${o.network}`,
    ...(o.subnet ? [`subnet=${o.subnet}`] : []),
    ...(o.aliasRange ? [`aliases=${o.aliasRange}`] : []),
  ].join(',');
  const argv = [
    'gcloud',
    'compute',
    'instances',
    'create',
    o.name,
    `--project=${o.project}`,
    `--zone=${o.zone}`,
    `--machine-type=${o.machineType}`,
    ...(o.legacyLicense ? [] : ['--enable-nested-virtualization']),
    ...(o.minCpuPlatform ? [`--min-cpu-platform=${o.minCpuPlatform}`] : []),
    ...(o.image
      ? [
          `--image=${o.image.split('/').pop()}`,
          `--image-project=${o.image.includes('/') ? (o.image.split('/')[1] ?? o.project) : o.project}`,
        ]
      : [`--image-family=${o.imageFamily}`, `--image-project=${o.imageProject}`]),
    `--boot-disk-size=${o.diskSizeGb}GB`,
    `--network-interface=${nic}`,
    ...(o.canIpForward ? ['--can-ip-forward'] : []),
    '--metadata-from-file=startup-script=nestvirt-verify.sh',
    '--labels=nestvirt-role=l1',
  ];
  return shellQuote(argv);
}

/** Why vmx did not show up, from what the preflight and the instance say. */
export function diagnose(
  v: VerifyReport,
  o: CreateOptions,
  ctx: {
    report?: CheckReport | undefined;
    instance?: compute_v1.Schema$Instance | undefined;
    imageLicensed?: boolean | undefined;
  },
): { cause: string; fix: string } {
  if (v.vmx > 0 && !v.kvm)
    return {
      cause:
        'the CPU has vmx but /dev/kvm is missing: the kvm_intel module is not loaded in the guest',
      fix: `gcloud compute ssh ${o.name} --zone ${o.zone} -- sudo modprobe kvm_intel`,
    };
  const mt = machineTypeInfo(o.machineType);
  if (mt.rule && !mt.rule.nested)
    return {
      cause: `machine series: ${mt.rule.reason}`,
      fix: `--machine-type ${SUGGESTED_MACHINE_TYPE}`,
    };
  if (ctx.report?.policy?.enforced)
    return {
      cause: 'org policy: constraints/compute.disableNestedVirtualization is enforced',
      fix: `nestvirt gcp policy allow --project ${o.project}`,
    };
  const platform = ctx.instance?.cpuPlatform;
  if (platform && platformSupportsNesting(platform) === false)
    return {
      cause: `CPU platform: the instance runs on ${platform}, older than ${MIN_NESTED_PLATFORM}`,
      fix: `--min-cpu-platform "${MIN_NESTED_PLATFORM}"`,
    };
  if (o.legacyLicense && ctx.imageLicensed === false)
    return {
      cause: `licence: the boot image does not carry ${VMX_LICENSE}`,
      fix: `nestvirt gcp image NAME --image-family ${o.imageFamily} --image-project ${o.imageProject} --project ${o.project}, then --image NAME`,
    };
  if (
    !o.legacyLicense &&
    ctx.instance &&
    ctx.instance.advancedMachineFeatures?.enableNestedVirtualization !== true
  )
    return {
      cause:
        'flag: the instance does not have advancedMachineFeatures.enableNestedVirtualization set',
      fix: 'recreate it with nestvirt gcp create (it sets the flag)',
    };
  return {
    cause: 'series, platform, policy and flag all look right; the guest kernel may hide vmx',
    fix: `gcloud compute ssh ${o.name} --zone ${o.zone} -- 'grep -cw vmx /proc/cpuinfo; ls -l /dev/kvm'`,
  };
}

export interface Timing {
  /** Pause between serial-port reads, ms. */
  pollMs: number;
  /** Give up on the operation after this long, ms. */
  operationTimeoutMs: number;
  /** Give up waiting for the startup script's report after this long, ms. */
  verifyTimeoutMs: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Waits for a zonal or global operation with the API's `wait` call (which
 * returns when the operation is DONE or after a server-side deadline), looping
 * until DONE; reports status and progress to `update`.
 */
export async function waitOperation(
  gcp: Gcp,
  op: compute_v1.Schema$Operation,
  where: { project: string; zone?: string },
  ctx: ErrorContext,
  update: (detail: string) => void,
  timeoutMs: number,
  pollMs = 1000,
): Promise<compute_v1.Schema$Operation> {
  const deadline = Date.now() + timeoutMs;
  let cur = op;
  let lastCall = 0;
  while (cur.status !== 'DONE') {
    if (Date.now() > deadline)
      throw new NotPossibleError(
        'gcp.operation-timeout',
        `${ctx.what}: operation ${cur.name} still ${cur.status} after ${timeoutMs / 1000}s`,
        `follow it with: gcloud compute operations describe ${cur.name}${where.zone ? ` --zone ${where.zone}` : ' --global'} --project ${where.project}`,
      );
    update(
      `${cur.status?.toLowerCase() ?? 'pending'}${cur.progress ? ` ${cur.progress}%` : ''} (${cur.name})`,
    );
    // `wait` is best effort and may return at once; never spin on it.
    if (Date.now() - lastCall < 1000) await sleep(pollMs);
    lastCall = Date.now();
    try {
      cur = where.zone
        ? (
            await gcp.compute.zoneOperations.wait({
              project: where.project,
              zone: where.zone,
              operation: cur.name!,
            })
          ).data
        : (
            await gcp.compute.globalOperations.wait({
              project: where.project,
              operation: cur.name!,
            })
          ).data;
    } catch (e) {
      throw googleError(e, { ...ctx, what: `waiting for ${ctx.what}` });
    }
  }
  if (cur.error?.errors?.length) throw operationError(cur, ctx);
  return cur;
}

/** Reads the serial port from `start` until the verify line appears or time runs out. */
export async function readVerify(
  gcp: Gcp,
  o: { project: string; zone: string; name: string },
  timing: Timing,
  update: (detail: string) => void,
): Promise<{ report: VerifyReport | undefined; bytes: number; tail: string }> {
  const deadline = Date.now() + timing.verifyTimeoutMs;
  let start = 0;
  let text = '';
  for (;;) {
    let out: compute_v1.Schema$SerialPortOutput;
    try {
      out = (
        await gcp.compute.instances.getSerialPortOutput({
          project: o.project,
          zone: o.zone,
          instance: o.name,
          port: 1,
          start: String(start),
        })
      ).data;
    } catch (e) {
      throw googleError(e, {
        what: `serial port of instance ${o.name}`,
        project: o.project,
        zone: o.zone,
        role: 'roles/compute.instanceAdmin.v1',
      });
    }
    text += out.contents ?? '';
    if (out.next !== undefined && out.next !== null) start = Number(out.next);
    const report = parseVerifyLine(text);
    if (report) return { report, bytes: start, tail: text.slice(-2000) };
    if (Date.now() + timing.pollMs > deadline)
      return { report: undefined, bytes: start, tail: text.slice(-2000) };
    update(`${start} bytes of serial output read, waiting for the startup script`);
    await sleep(timing.pollMs);
  }
}

export interface CreateResult {
  instance: {
    name: string;
    selfLink: string | null;
    status: string | null;
    cpuPlatform: string | null;
    internalIp: string | null;
    externalIp: string | null;
    aliasIpRanges: string[];
    canIpForward: boolean;
  };
  operation: string | null;
  verify: (VerifyReport & { ok: boolean; cause: string | null; fix: string | null }) | null;
}

/** Inserts the instance and waits for the zone operation. */
export async function insertInstance(
  gcp: Gcp,
  o: CreateOptions,
  update: (d: string) => void,
  timing: Timing,
): Promise<string | null> {
  const ctx: ErrorContext = {
    what: `instance ${o.name}`,
    project: o.project,
    zone: o.zone,
    role: 'roles/compute.instanceAdmin.v1',
    existsFix: `choose another name, or delete it: gcloud compute instances delete ${o.name} --zone ${o.zone} --project ${o.project}`,
    notFoundFix: `check --image-family/--image-project/--image, --network and --zone (gcloud compute images describe-from-family ${o.imageFamily} --project ${o.imageProject})`,
  };
  let op: compute_v1.Schema$Operation;
  try {
    op = (
      await gcp.compute.instances.insert({
        project: o.project,
        zone: o.zone,
        requestBody: instanceBody(o),
      })
    ).data;
  } catch (e) {
    throw googleError(e, ctx);
  }
  const done = await waitOperation(
    gcp,
    op,
    { project: o.project, zone: o.zone },
    ctx,
    update,
    timing.operationTimeoutMs,
    timing.pollMs,
  );
  return done.name ?? null;
}

/** instances.get, summarised. */
export async function describeInstance(
  gcp: Gcp,
  o: { project: string; zone: string; name: string },
): Promise<{ raw: compute_v1.Schema$Instance; summary: CreateResult['instance'] }> {
  let raw: compute_v1.Schema$Instance;
  try {
    raw = (await gcp.compute.instances.get({ project: o.project, zone: o.zone, instance: o.name }))
      .data;
  } catch (e) {
    throw googleError(e, {
      what: `instance ${o.name}`,
      project: o.project,
      zone: o.zone,
      role: 'roles/compute.viewer',
    });
  }
  const nic = raw.networkInterfaces?.[0];
  return {
    raw,
    summary: {
      name: raw.name ?? o.name,
      selfLink: raw.selfLink ?? null,
      status: raw.status ?? null,
      cpuPlatform: raw.cpuPlatform ?? null,
      internalIp: nic?.networkIP ?? null,
      externalIp: nic?.accessConfigs?.[0]?.natIP ?? null,
      aliasIpRanges: (nic?.aliasIpRanges ?? []).map((a) => a.ipCidrRange ?? '').filter(Boolean),
      canIpForward: !!raw.canIpForward,
    },
  };
}

/** Looks up the boot image (legacy flow) and says whether it carries the vmx licence. */
export async function resolveImage(
  gcp: Gcp,
  o: CreateOptions,
): Promise<{ selfLink: string; licensed: boolean }> {
  const ctx: ErrorContext = {
    what: o.image ? `image ${o.image}` : `image family ${o.imageProject}/${o.imageFamily}`,
    project: o.project,
    role: 'roles/compute.imageUser',
  };
  try {
    let img: compute_v1.Schema$Image;
    if (o.image) {
      const parts = o.image.split('/');
      const project = o.image.includes('/')
        ? (parts[parts.indexOf('projects') + 1] ?? o.project)
        : o.project;
      img = (await gcp.compute.images.get({ project, image: parts.pop()! })).data;
    } else
      img = (
        await gcp.compute.images.getFromFamily({ project: o.imageProject, family: o.imageFamily })
      ).data;
    const licensed = (img.licenses ?? []).some((l) => l.endsWith(VMX_LICENSE));
    return { selfLink: img.selfLink ?? '', licensed };
  } catch (e) {
    throw googleError(e, ctx);
  }
}
