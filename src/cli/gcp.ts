/**
 * `nestvirt gcp check | create | image | policy`: Google Compute Engine L1
 * hosts. Thin: flags → src/cloud/gcp → output.
 */
import type { Command, Context, ParsedArgs } from './command.js';
import { bool, str } from './command.js';
import { paint, println, printJson, Progress, eprintln, type Output } from './output.js';
import { connect, type Gcp } from '../cloud/gcp/api.js';
import { check, type CheckReport } from '../cloud/gcp/check.js';
import {
  DEFAULT_IMAGE_FAMILY,
  DEFAULT_IMAGE_PROJECT,
  describeInstance,
  diagnose,
  gcloudCreateCommand,
  insertInstance,
  instanceBody,
  readVerify,
  resolveImage,
  startupScript,
  validateCreate,
  VMX_LICENSE,
  type CreateOptions,
  type CreateResult,
  type Timing,
} from '../cloud/gcp/instance.js';
import {
  createImage,
  gcloudImageCommand,
  imageBody,
  resolveFamily,
  validateImage,
  type ImageOptions,
} from '../cloud/gcp/image.js';
import {
  gcloudPolicyCommand,
  getPolicyState,
  policyBody,
  policyTarget,
  setPolicy,
  type PolicyState,
} from '../cloud/gcp/policy.js';
import { NotPossibleError, UsageError } from '../errors.js';

function need(args: ParsedArgs, flag: string, path: string): string {
  const v = str(args, flag);
  if (!v)
    throw new UsageError(
      'usage.missing-flag',
      `${path}: --${flag} is required`,
      `see \`nestvirt ${path} --help\``,
    );
  return v;
}

function seconds(args: ParsedArgs, flag: string, dflt: number): number {
  const v = str(args, flag);
  if (v === undefined) return dflt * 1000;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0)
    throw new UsageError(
      'usage.bad-value',
      `--${flag} must be a number of seconds, got ${JSON.stringify(v)}`,
      `e.g. --${flag} ${dflt}`,
    );
  return n * 1000;
}

function timing(args: ParsedArgs, ctx: Context): Timing {
  const poll = Number(ctx.env.NESTVIRT_GCP_POLL_MS ?? 5000);
  return {
    pollMs: Number.isFinite(poll) && poll >= 0 ? poll : 5000,
    operationTimeoutMs: seconds(args, 'timeout', 600),
    verifyTimeoutMs: seconds(args, 'verify-timeout', 300),
  };
}

const mark = (out: Output, s: string): string =>
  s === 'ok'
    ? paint(out, 'green', '✓')
    : s === 'fail'
      ? paint(out, 'red', '✗')
      : s === 'warn'
        ? paint(out, 'yellow', '!')
        : paint(out, 'gray', '-');

function printCheck(out: Output, r: CheckReport): void {
  println(
    out,
    `project ${r.project}${r.zone ? `, zone ${r.zone}` : ''}${r.machineType ? `, machine type ${r.machineType}` : ''}${r.offline ? ' (offline: static rules only)' : ''}`,
  );
  for (const f of r.findings) {
    println(out, `  ${mark(out, f.status)} ${f.id.padEnd(12)} ${f.message}`);
    if (f.fix && f.status !== 'ok')
      println(out, `  ${' '.repeat(15)}${paint(out, 'yellow', 'fix:')} ${f.fix}`);
  }
  println(
    out,
    r.verdict.nestedVirtualization
      ? `${paint(out, 'green', 'verdict:')} an L1 here can run nested VMs${r.verdict.problems.length ? ' (see warnings)' : ''}`
      : `${paint(out, 'red', 'verdict:')} an L1 here cannot run nested VMs`,
  );
}

async function connectFor(ctx: Context, progress: Progress, project?: string): Promise<Gcp> {
  return progress.step('credentials (Application Default Credentials)', async () =>
    connect(ctx.env, { project }),
  );
}

const checkCommand: Command = {
  name: 'check',
  summary: 'preflight: org policy, machine series, CPU platforms; a verdict with fixes',
  usage:
    'gcp check --project P [--zone Z] [--machine-type T] [--min-cpu-platform X] [--offline] [--json]',
  description: [
    'Checks whether an L1 instance in this project can run nested VMs: the effective org policy',
    'constraints/compute.disableNestedVirtualization, the machine series (Intel only; not E2,',
    "AMD, Arm or memory-optimized), the zone's CPU platforms (Intel Haswell or later) and the",
    'machine type. --offline uses only the static rules: no credentials, no API calls.',
    'Exit 1 when the verdict is negative.',
    '',
    'example: nestvirt gcp check --project my-proj --zone us-central1-a --machine-type n2-standard-4',
  ].join('\n'),
  positionals: [0, 0],
  flags: {
    project: { type: 'string', arg: 'P', help: 'Google Cloud project id (required)' },
    zone: { type: 'string', arg: 'Z', help: 'zone, e.g. us-central1-a' },
    'machine-type': { type: 'string', arg: 'T', help: 'machine type, e.g. n2-standard-4' },
    'min-cpu-platform': {
      type: 'string',
      arg: 'X',
      help: 'minimum CPU platform, e.g. "Intel Haswell"',
    },
    offline: { type: 'boolean', help: 'static rules only: no credentials, no API calls' },
    json: { type: 'boolean', help: 'print the report as JSON (schema in docs/gcp.md)' },
  },
  async run(args, ctx) {
    const project = need(args, 'project', 'gcp check');
    const offline = bool(args, 'offline');
    const progress = new Progress(ctx.out, { quiet: bool(args, 'json') });
    const gcp = offline ? undefined : await connectFor(ctx, progress, project);
    const r = await (offline
      ? check(undefined, {
          project,
          zone: str(args, 'zone'),
          machineType: str(args, 'machine-type'),
          minCpuPlatform: str(args, 'min-cpu-platform'),
          offline,
        })
      : progress.step('reading org policy, zone and machine type', () =>
          check(gcp, {
            project,
            zone: str(args, 'zone'),
            machineType: str(args, 'machine-type'),
            minCpuPlatform: str(args, 'min-cpu-platform'),
            offline,
          }),
        ));
    if (bool(args, 'json')) printJson(ctx.out, r);
    else printCheck(ctx.out, r);
    return r.verdict.nestedVirtualization ? 0 : 1;
  },
};

function createOptions(args: ParsedArgs): CreateOptions {
  const path = 'gcp create';
  const name = args.positionals[0]!;
  const diskSize = str(args, 'disk-size');
  const o: CreateOptions = {
    name,
    project: need(args, 'project', path),
    zone: need(args, 'zone', path),
    machineType: need(args, 'machine-type', path),
    minCpuPlatform: str(args, 'min-cpu-platform'),
    imageFamily: str(args, 'image-family') ?? DEFAULT_IMAGE_FAMILY,
    imageProject: str(args, 'image-project') ?? DEFAULT_IMAGE_PROJECT,
    image: str(args, 'image'),
    aliasRange: str(args, 'alias-range'),
    canIpForward: bool(args, 'can-ip-forward'),
    legacyLicense: bool(args, 'legacy-license'),
    network: str(args, 'network') ?? 'default',
    subnet: str(args, 'subnet'),
    diskSizeGb: diskSize === undefined ? 20 : /^\d+$/.test(diskSize) ? Number(diskSize) : NaN,
  };
  if (Number.isNaN(o.diskSizeGb))
    throw new UsageError(
      'gcp.bad-disk-size',
      `--disk-size must be a whole number of GB, got ${JSON.stringify(diskSize)}`,
      'e.g. --disk-size 20',
    );
  if (o.image && str(args, 'image-family'))
    throw new UsageError(
      'usage.conflict',
      'gcp create: --image and --image-family are alternatives',
      'give one of them (--image-project goes with either)',
    );
  // --image NAME --image-project P names an image in another project.
  if (o.image && !o.image.includes('/') && str(args, 'image-project'))
    o.image = `projects/${str(args, 'image-project')}/global/images/${o.image}`;
  validateCreate(o);
  return o;
}

const createCommand: Command = {
  name: 'create',
  summary: 'create a nested-ready L1 instance, wait for it, and verify nesting from inside',
  usage:
    'gcp create NAME --project P --zone Z --machine-type T [--min-cpu-platform X] [--image-family F --image-project P | --image I] [--alias-range /30] [--can-ip-forward] [--legacy-license] [--dry-run] [--json]',
  description: [
    'Runs the preflight (gcp check), then instances.insert with',
    'advancedMachineFeatures.enableNestedVirtualization=true (or, with --legacy-license, a boot image',
    `carrying ${VMX_LICENSE}), waits for the zone operation, and reads the serial port until the`,
    'startup script reports `nestvirt-verify: vmx=N kvm=yes|no nested=Y`. Fails (exit 1) naming',
    'the likely cause when nesting did not take. --dry-run prints the REST body and the gcloud command.',
    '',
    'example: nestvirt gcp create l1 --project my-proj --zone us-central1-a --machine-type n2-standard-4 \\',
    '           --alias-range /30 --can-ip-forward',
  ].join('\n'),
  positionals: [1, 1],
  flags: {
    project: { type: 'string', arg: 'P', help: 'Google Cloud project id (required)' },
    zone: { type: 'string', arg: 'Z', help: 'zone (required)' },
    'machine-type': {
      type: 'string',
      arg: 'T',
      help: 'machine type (required), e.g. n2-standard-4',
    },
    'min-cpu-platform': {
      type: 'string',
      arg: 'X',
      help: 'minimum CPU platform, e.g. "Intel Haswell" (needed for N1)',
    },
    'image-family': {
      type: 'string',
      arg: 'F',
      help: `boot image family (default ${DEFAULT_IMAGE_FAMILY})`,
    },
    'image-project': {
      type: 'string',
      arg: 'P',
      help: `project of the image family (default ${DEFAULT_IMAGE_PROJECT})`,
    },
    image: {
      type: 'string',
      arg: 'I',
      help: 'boot image name or path, e.g. one made by `nestvirt gcp image`',
    },
    'alias-range': {
      type: 'string',
      arg: 'R',
      help: 'alias IP range for nested VMs, e.g. /30 or 10.128.4.0/30',
    },
    'can-ip-forward': { type: 'boolean', help: 'let the instance forward packets for nested VMs' },
    'legacy-license': {
      type: 'boolean',
      help: 'turn nesting on via the enable-vmx image licence instead of the flag',
    },
    network: { type: 'string', arg: 'N', help: 'VPC network (default "default")' },
    subnet: { type: 'string', arg: 'S', help: 'subnetwork (for custom-mode networks)' },
    'disk-size': { type: 'string', arg: 'GB', help: 'boot disk size in GB (default 20)' },
    offline: { type: 'boolean', help: 'with --dry-run: static preflight only, no credentials' },
    force: { type: 'boolean', help: 'create even when the preflight verdict is negative' },
    'skip-verify': { type: 'boolean', help: "do not wait for the startup script's report" },
    timeout: {
      type: 'string',
      arg: 'SECS',
      help: 'give up on the create operation after SECS (default 600)',
    },
    'verify-timeout': {
      type: 'string',
      arg: 'SECS',
      help: 'give up waiting for the serial-port report after SECS (default 300)',
    },
    'dry-run': {
      type: 'boolean',
      help: 'print the REST body and the gcloud command; create nothing',
    },
    json: { type: 'boolean', help: 'print the result as JSON (schema in docs/gcp.md)' },
  },
  async run(args, ctx) {
    const o = createOptions(args);
    const json = bool(args, 'json');
    const dryRun = bool(args, 'dry-run');
    const offline = bool(args, 'offline');
    if (offline && !dryRun)
      throw new UsageError(
        'usage.conflict',
        'gcp create: --offline only goes with --dry-run',
        'drop --offline, or add --dry-run',
      );
    const t = timing(args, ctx);
    const progress = new Progress(ctx.out);
    const gcp = offline ? undefined : await connectFor(ctx, progress, o.project);
    const report = await (offline
      ? check(undefined, {
          project: o.project,
          zone: o.zone,
          machineType: o.machineType,
          minCpuPlatform: o.minCpuPlatform,
          offline,
        })
      : progress.step('preflight: org policy, zone, machine type', () =>
          check(gcp, {
            project: o.project,
            zone: o.zone,
            machineType: o.machineType,
            minCpuPlatform: o.minCpuPlatform,
            offline,
          }),
        ));
    let imageLicensed: boolean | undefined;
    if (o.legacyLicense && gcp) {
      const img = await progress.step('preflight: boot image licence', () => resolveImage(gcp, o));
      imageLicensed = img.licensed;
      report.findings.push(
        img.licensed
          ? {
              id: 'image',
              status: 'ok',
              message: `boot image ${img.selfLink} carries ${VMX_LICENSE}`,
            }
          : {
              id: 'image',
              status: 'fail',
              message: `boot image ${img.selfLink} does not carry ${VMX_LICENSE}`,
              fix: `nestvirt gcp image ${o.name}-vmx --image-family ${o.imageFamily} --image-project ${o.imageProject} --project ${o.project}, then --image ${o.name}-vmx`,
            },
      );
      if (!img.licensed) {
        report.verdict.nestedVirtualization = false;
        const f = report.findings[report.findings.length - 1]!;
        report.verdict.problems.push({
          id: 'image',
          severity: 'error',
          message: f.message,
          fix: f.fix ?? null,
        });
      }
    }
    const body = instanceBody(o);
    const gcloud = gcloudCreateCommand(o);
    if (dryRun) {
      if (json)
        printJson(ctx.out, {
          dryRun: true,
          preflight: report,
          request: body,
          gcloud,
          startupScript: startupScript(),
        });
      else {
        printCheck(ctx.out, report);
        println(ctx.out, '');
        println(ctx.out, `POST compute/v1/projects/${o.project}/zones/${o.zone}/instances`);
        println(ctx.out, JSON.stringify(body, null, 2));
        println(ctx.out, '');
        println(
          ctx.out,
          '# the same with gcloud (save the startup script below as nestvirt-verify.sh):',
        );
        println(ctx.out, gcloud);
        println(ctx.out, '');
        println(ctx.out, '# nestvirt-verify.sh');
        ctx.out.stdout.write(startupScript());
      }
      return report.verdict.nestedVirtualization ? 0 : 1;
    }
    if (!report.verdict.nestedVirtualization && !bool(args, 'force')) {
      if (!json) printCheck(ctx.out, report);
      const first = report.verdict.problems.find((p) => p.severity === 'error')!;
      throw new NotPossibleError(
        'gcp.preflight-failed',
        `preflight failed, instance ${o.name} not created: ${first.message}`,
        first.fix ?? undefined,
      );
    }
    const operation = await progress.step(`creating instance ${o.name} in ${o.zone}`, (u) =>
      insertInstance(gcp!, o, u, t),
    );
    const desc = await describeInstance(gcp!, o);
    const result: CreateResult & { preflight: CheckReport; request: typeof body; gcloud: string } =
      {
        preflight: report,
        request: body,
        gcloud,
        instance: desc.summary,
        operation,
        verify: null,
      };
    if (!bool(args, 'skip-verify')) {
      const seen = await progress.step('verifying nesting from inside (serial port)', (u) =>
        readVerify(gcp!, o, t, u),
      );
      if (!seen.report) {
        return fail(
          ctx,
          json,
          result,
          new NotPossibleError(
            'gcp.verify-timeout',
            `instance ${o.name} is up but its startup script did not report within ${t.verifyTimeoutMs / 1000}s (${seen.bytes} bytes of serial output read)`,
            `read the output: gcloud compute instances get-serial-port-output ${o.name} --zone ${o.zone} --project ${o.project}`,
          ),
        );
      }
      const v = seen.report;
      const ok = v.vmx > 0 && v.kvm;
      const why = ok ? null : diagnose(v, o, { report, instance: desc.raw, imageLicensed });
      result.verify = { ...v, ok, cause: why?.cause ?? null, fix: why?.fix ?? null };
      if (!json) printCreate(ctx.out, result, o);
      if (!ok)
        return fail(
          ctx,
          json,
          result,
          new NotPossibleError(
            'gcp.nesting-not-active',
            `${v.vmx > 0 ? `instance ${o.name} has vmx but cannot run VMs yet` : `instance ${o.name} booted WITHOUT nested virtualization`} (${v.line}); likely cause: ${why!.cause}. The instance is still running.`,
            `${why!.fix}; delete the instance first: gcloud compute instances delete ${o.name} --zone ${o.zone} --project ${o.project}`,
          ),
        );
      if (json) printJson(ctx.out, result);
      return 0;
    }
    if (json) printJson(ctx.out, result);
    else printCreate(ctx.out, result, o);
    return 0;
  },
};

/**
 * Ends a create that made an instance but failed afterwards: with --json the
 * result document carries `error` (one document on stdout); the one-line
 * message and fix go to stderr either way.
 */
function fail(ctx: Context, json: boolean, result: object, err: NotPossibleError): number {
  if (json) printJson(ctx.out, { ...result, error: err.toJSON() });
  eprintln(ctx.out, `${paint(ctx.out, 'red', 'nestvirt:')} ${err.message}`);
  if (err.hint) eprintln(ctx.out, `  ${paint(ctx.out, 'yellow', 'fix:')} ${err.hint}`);
  return err.exitCode;
}

function printCreate(out: Output, r: CreateResult, o: CreateOptions): void {
  const i = r.instance;
  println(
    out,
    `instance ${i.name}: ${i.status ?? '?'} on ${i.cpuPlatform ?? 'unknown CPU platform'}`,
  );
  println(
    out,
    `  internal IP ${i.internalIp ?? '-'}, external IP ${i.externalIp ?? '-'}${i.aliasIpRanges.length ? `, alias ranges ${i.aliasIpRanges.join(' ')}` : ''}${i.canIpForward ? ', can forward IP' : ''}`,
  );
  if (r.verify)
    println(
      out,
      r.verify.ok
        ? `  ${paint(out, 'green', '✓')} nesting works inside: ${r.verify.line}`
        : `  ${paint(out, 'red', '✗')} nesting NOT active: ${r.verify.line}`,
    );
  if (r.verify?.ok) {
    println(out, 'next, on the instance:');
    println(out, `  gcloud compute ssh ${i.name} --zone ${o.zone} --project ${o.project}`);
    println(
      out,
      '  then, in a nestvirt checkout there: scripts/setup.sh && bin/nestvirt doctor && bin/nestvirt demo',
    );
  }
}

const imageCommand: Command = {
  name: 'image',
  summary: 'legacy: make an image carrying the enable-vmx licence',
  usage:
    'gcp image NAME (--source-disk D --zone Z | --image-family F --image-project P) --project P [--family F] [--dry-run] [--json]',
  description: [
    `Creates image NAME in project P with the licence ${VMX_LICENSE}, from a disk or from the`,
    'image a family points at now (images.getFromFamily). Instances booted from it have nesting on',
    'without the flag: nestvirt gcp create L1 --image NAME --legacy-license ...',
    'The flag (advancedMachineFeatures.enableNestedVirtualization) is the current way; use this for',
    'tooling that cannot set it.',
  ].join('\n'),
  positionals: [1, 1],
  flags: {
    project: { type: 'string', arg: 'P', help: 'project to create the image in (required)' },
    'source-disk': { type: 'string', arg: 'D', help: 'source disk name (with --zone) or path' },
    zone: { type: 'string', arg: 'Z', help: 'zone of the source disk' },
    'image-family': { type: 'string', arg: 'F', help: 'source image family, e.g. debian-12' },
    'image-project': {
      type: 'string',
      arg: 'P',
      help: 'project of the source family, e.g. debian-cloud',
    },
    family: { type: 'string', arg: 'F', help: 'put the new image in this family' },
    timeout: {
      type: 'string',
      arg: 'SECS',
      help: 'give up on the operation after SECS (default 600)',
    },
    'dry-run': {
      type: 'boolean',
      help: 'print the REST body and the gcloud command; create nothing',
    },
    json: { type: 'boolean', help: 'print the result as JSON' },
  },
  async run(args, ctx) {
    const o: ImageOptions = {
      name: args.positionals[0]!,
      project: need(args, 'project', 'gcp image'),
      sourceDisk: str(args, 'source-disk'),
      zone: str(args, 'zone'),
      imageFamily: str(args, 'image-family'),
      imageProject: str(args, 'image-project'),
      family: str(args, 'family'),
    };
    validateImage(o);
    const json = bool(args, 'json');
    if (bool(args, 'dry-run')) {
      const body = imageBody(o);
      if (json) printJson(ctx.out, { dryRun: true, request: body, gcloud: gcloudImageCommand(o) });
      else {
        println(ctx.out, `POST compute/v1/projects/${o.project}/global/images`);
        println(ctx.out, JSON.stringify(body, null, 2));
        println(ctx.out, '');
        println(ctx.out, '# the same with gcloud:');
        println(ctx.out, gcloudImageCommand(o));
      }
      return 0;
    }
    const progress = new Progress(ctx.out);
    const gcp = await connectFor(ctx, progress, o.project);
    let source: string | undefined;
    if (!o.sourceDisk) {
      const img = await progress.step(
        `resolving image family ${o.imageProject}/${o.imageFamily}`,
        () => resolveFamily(gcp, o),
      );
      source = img.selfLink ?? undefined;
    }
    const body = imageBody(o, source);
    const r = await progress.step(`creating image ${o.name}`, (u) =>
      createImage(gcp, o, body, u, timing(args, ctx).operationTimeoutMs, timing(args, ctx).pollMs),
    );
    if (json)
      printJson(ctx.out, { dryRun: false, request: body, gcloud: gcloudImageCommand(o), image: r });
    else {
      println(ctx.out, `image ${r.name}: ${r.status ?? '?'}, from ${r.source}`);
      println(ctx.out, `  licences: ${r.licenses.join(', ')}`);
      println(
        ctx.out,
        `next: nestvirt gcp create NAME --project ${o.project} --zone ZONE --machine-type n2-standard-4 --image ${r.name} --legacy-license`,
      );
    }
    return 0;
  },
};

const targetFlags = {
  project: { type: 'string', arg: 'P', help: 'a project id' },
  folder: { type: 'string', arg: 'F', help: 'a folder id (numeric)' },
  organization: { type: 'string', arg: 'O', help: 'an organization id (numeric)' },
} as const;

function printPolicy(out: Output, s: PolicyState): void {
  println(out, `${s.resource}: ${s.constraint}`);
  println(
    out,
    `  set here:  ${s.set ? (s.set.enforced ? 'enforced' : 'not enforced') : 'nothing (inherits)'}`,
  );
  println(out, `  effective: ${s.effective.enforced ? 'enforced' : 'not enforced'}`);
  println(
    out,
    s.nestedAllowed
      ? `  ${paint(out, 'green', '✓')} nested virtualization is allowed`
      : `  ${paint(out, 'red', '✗')} nested virtualization is disabled`,
  );
}

function policySetCommand(name: 'allow' | 'deny'): Command {
  const enforce = name === 'deny';
  return {
    name,
    summary: enforce
      ? 'disable nested virtualization (enforce the constraint)'
      : 'allow nested virtualization (enforce = false)',
    usage: `gcp policy ${name} (--project P | --folder F | --organization O) [--dry-run] [--json]`,
    description: `Sets constraints/compute.disableNestedVirtualization to enforce=${enforce} on the resource itself\n(Org Policy v2 create or patch), then shows the effective result. Needs roles/orgpolicy.policyAdmin.`,
    positionals: [0, 0],
    flags: {
      ...targetFlags,
      'dry-run': {
        type: 'boolean',
        help: 'print the policy body and the gcloud command; change nothing',
      },
      json: { type: 'boolean', help: 'print the result as JSON' },
    },
    async run(args, ctx) {
      const t = policyTarget({
        project: str(args, 'project'),
        folder: str(args, 'folder'),
        organization: str(args, 'organization'),
      });
      const json = bool(args, 'json');
      if (bool(args, 'dry-run')) {
        const body = policyBody(t, enforce);
        if (json)
          printJson(ctx.out, {
            dryRun: true,
            request: body,
            gcloud: gcloudPolicyCommand(t, enforce),
          });
        else {
          println(ctx.out, `PATCH (or POST if none) v2/${body.name}`);
          println(ctx.out, JSON.stringify(body, null, 2));
          println(ctx.out, '');
          println(ctx.out, '# the same with gcloud:');
          println(ctx.out, gcloudPolicyCommand(t, enforce));
        }
        return 0;
      }
      const progress = new Progress(ctx.out, { quiet: json });
      const gcp = await connectFor(ctx, progress, t.kind === 'projects' ? t.id : undefined);
      const s = await progress.step(
        `setting ${t.kind.replace(/s$/, '')} ${t.id} policy to enforce=${enforce}`,
        () => setPolicy(gcp, t, enforce),
      );
      if (json) printJson(ctx.out, { dryRun: false, ...s });
      else {
        if (!s.changed) println(ctx.out, 'already set; nothing changed');
        printPolicy(ctx.out, s);
      }
      if (!enforce && !s.nestedAllowed) {
        eprintln(
          ctx.out,
          `nestvirt: the effective policy on ${t.kind}/${t.id} still enforces the constraint; policy changes can take minutes to propagate`,
        );
        eprintln(
          ctx.out,
          `  fix: check again in a few minutes: nestvirt gcp policy get --${t.kind === 'projects' ? 'project' : t.kind === 'folders' ? 'folder' : 'organization'} ${t.id}`,
        );
        return 1;
      }
      return 0;
    },
  };
}

const policyCommand: Command = {
  name: 'policy',
  summary: 'read or set the org policy constraint compute.disableNestedVirtualization',
  usage: 'gcp policy get | allow | deny (--project P | --folder F | --organization O)',
  sub: [
    {
      name: 'get',
      summary: 'what is set on the resource and what is effective',
      usage: 'gcp policy get (--project P | --folder F | --organization O) [--json]',
      positionals: [0, 0],
      flags: { ...targetFlags, json: { type: 'boolean', help: 'print the state as JSON' } },
      async run(args, ctx) {
        const t = policyTarget({
          project: str(args, 'project'),
          folder: str(args, 'folder'),
          organization: str(args, 'organization'),
        });
        const json = bool(args, 'json');
        const progress = new Progress(ctx.out, { quiet: json });
        const gcp = await connectFor(ctx, progress, t.kind === 'projects' ? t.id : undefined);
        const s = await progress.step('reading the org policy', () => getPolicyState(gcp, t));
        if (json) printJson(ctx.out, s);
        else printPolicy(ctx.out, s);
        return 0;
      },
    },
    policySetCommand('allow'),
    policySetCommand('deny'),
  ],
};

export const gcpCommand: Command = {
  name: 'gcp',
  summary: 'Google Compute Engine L1 hosts: check, create, image, policy',
  usage: 'gcp check | create | image | policy ...',
  description: [
    'Credentials: Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, or',
    '`gcloud auth application-default login`, or the metadata server on Google Cloud).',
    'Walkthrough: docs/gcp.md.',
  ].join('\n'),
  sub: [checkCommand, createCommand, imageCommand, policyCommand],
};
