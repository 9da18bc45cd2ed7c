/**
 * PROTOCOL FAKE of the Google APIs nestvirt calls — for tests only.
 *
 * A local HTTP server (node:http on 127.0.0.1, random port) that speaks the
 * real wire protocol of:
 *  - OAuth2 `POST /token` (grant_type=refresh_token), issuing bearer tokens
 *    that every other route requires;
 *  - the GCE metadata server's token route
 *    (`/computeMetadata/v1/instance/service-accounts/default/token`, with the
 *    `Metadata-Flavor: Google` header both ways), for the third ADC source;
 *  - Compute Engine v1 REST (`/compute/v1/projects/{p}/...`): zones.get,
 *    machineTypes.get, instances.insert/get/getSerialPortOutput,
 *    images.insert/get/getFromFamily, zoneOperations.get/wait,
 *    globalOperations.get/wait — long-running operations go
 *    PENDING → RUNNING → DONE, one step per get/wait call;
 *  - Org Policy v2 REST (`/v2/{resource}/policies/...`): get,
 *    getEffectivePolicy, create, patch, with inheritance through folders and
 *    organizations;
 *  - errors in Google's JSON error format `{error: {code, message, status,
 *    errors[], details[]}}`.
 *
 * Its "instances" boot and write a serial log. Whether nesting takes is
 * decided from the fake's own model of Google's documented behaviour (its
 * own hardware table below, written independently of src/cloud/gcp/rules.ts):
 * VT-x is exposed only when the flag or the enable-vmx licence is present,
 * the org policy allows it, the machine series is an Intel one that supports
 * it, and the CPU platform is Haswell (2013) or newer. Otherwise the instance
 * boots without vmx and without an error, as on Google.
 *
 * It is NOT Google: only the fields nestvirt reads are modelled.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/** What Google's hardware looks like to the fake: per series, CPU maker, platforms (oldest first). */
const HARDWARE: Record<
  string,
  {
    maker: 'Intel' | 'AMD' | 'Arm';
    memoryOptimized?: true;
    costOptimized?: true;
    platforms: string[];
  }
> = {
  n1: {
    maker: 'Intel',
    platforms: [
      'Intel Sandy Bridge',
      'Intel Ivy Bridge',
      'Intel Haswell',
      'Intel Broadwell',
      'Intel Skylake',
    ],
  },
  n2: { maker: 'Intel', platforms: ['Intel Cascade Lake', 'Intel Ice Lake'] },
  c2: { maker: 'Intel', platforms: ['Intel Cascade Lake'] },
  c3: { maker: 'Intel', platforms: ['Intel Sapphire Rapids'] },
  e2: {
    maker: 'Intel',
    costOptimized: true,
    platforms: ['Intel Broadwell', 'Intel Skylake', 'AMD Rome'],
  },
  n2d: { maker: 'AMD', platforms: ['AMD Rome', 'AMD Milan'] },
  c2d: { maker: 'AMD', platforms: ['AMD Milan'] },
  t2d: { maker: 'AMD', platforms: ['AMD Milan'] },
  c3d: { maker: 'AMD', platforms: ['AMD Genoa'] },
  t2a: { maker: 'Arm', platforms: ['Ampere Altra'] },
  c4a: { maker: 'Arm', platforms: ['Google Axion'] },
  m1: { maker: 'Intel', memoryOptimized: true, platforms: ['Intel Skylake'] },
  m3: { maker: 'Intel', memoryOptimized: true, platforms: ['Intel Ice Lake'] },
};
/**
 * Intel microarchitecture generations (Core numbering: Sandy Bridge is the 2nd,
 * Haswell the 4th); Google exposes VT-x to guests from the 4th on.
 */
const INTEL_GENERATION: Record<string, number> = {
  'Intel Sandy Bridge': 2,
  'Intel Ivy Bridge': 3,
  'Intel Haswell': 4,
  'Intel Broadwell': 5,
  'Intel Skylake': 6,
  'Intel Cascade Lake': 7,
  'Intel Ice Lake': 8,
  'Intel Sapphire Rapids': 9,
};
const VMX_LICENSE_PATH = 'projects/vm-options/global/licenses/enable-vmx';

export interface FakeConfig {
  /** project id → parent (`folders/N` or `organizations/N`), or null. */
  projects: Record<string, string | null>;
  /** folder id → parent. */
  folders?: Record<string, string>;
  /** zone → CPU platforms it offers. */
  zones: Record<string, string[]>;
  /** OAuth2 client credentials and refresh token the fake accepts. */
  oauth: { clientId: string; clientSecret: string; refreshToken: string };
  /** Projects where the caller may read but not set org policy (403). */
  policyReadOnly?: string[];
}

interface Op {
  kind: 'compute#operation';
  id: string;
  name: string;
  operationType: string;
  targetLink: string;
  status: 'PENDING' | 'RUNNING' | 'DONE';
  progress: number;
  insertTime: string;
  startTime?: string;
  endTime?: string;
  selfLink: string;
  zone?: string;
  user: string;
  error?: { errors: { code: string; message: string }[] };
  httpErrorStatusCode?: number;
  httpErrorMessage?: string;
  /** Fake-only: what happens when the operation finishes. */
  onDone?: () => void;
  failWith?: { code: string; message: string; http: number; httpMessage: string };
}

interface FakeInstance {
  body: Record<string, any>;
  project: string;
  zone: string;
  status: string;
  cpuPlatform: string;
  guestCpus: number;
  nested: boolean;
  serial: string;
  bootChunks: string[];
  id: string;
}

interface Injected {
  method: string;
  path: RegExp;
  status: number;
  body: unknown;
  times: number;
}

export interface LoggedRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  body: any;
  authorization: string | undefined;
}

const BASE = 'https://www.googleapis.com/compute/v1/';

/** Starts the fake; `await fake.close()` when done. */
export async function startFakeGcp(config: FakeConfig): Promise<FakeGcp> {
  const f = new FakeGcp(config);
  await f.listen();
  return f;
}

export class FakeGcp {
  readonly config: FakeConfig;
  readonly requests: LoggedRequest[] = [];
  /** Org policies set, by name (`projects/p/policies/compute.disableNestedVirtualization`). */
  readonly policies = new Map<string, Record<string, any>>();
  readonly instances = new Map<string, FakeInstance>();
  readonly images = new Map<string, Record<string, any>>();
  readonly operations = new Map<string, Op>();
  /** Make the next instances.insert operation finish with this error (e.g. QUOTA_EXCEEDED). */
  failNextInsert: Op['failWith'] | undefined;
  /** Operations stay RUNNING while true (a stuck operation; `wait` keeps returning it). */
  stallOperations = false;
  /** The next instances' guest kernel has no kvm_intel (vmx present, no /dev/kvm). */
  guestWithoutKvm = false;
  /**
   * getEffectivePolicy answers from a snapshot this many reads old after a
   * change (Google documents that policy changes take time to propagate).
   */
  policyLagReads = 0;
  private effectiveLag = new Map<string, { enforced: boolean; reads: number }>();
  private readonly tokens = new Set<string>();
  private readonly injected: Injected[] = [];
  private server: Server | undefined;
  private seq = 0;
  url = '';

  constructor(config: FakeConfig) {
    // Public image projects exist for everyone.
    this.config = { ...config, projects: { 'debian-cloud': null, ...config.projects } };
    // Public images every project can use.
    this.addImage('debian-cloud', {
      name: 'debian-12-bookworm-v20261110',
      family: 'debian-12',
      licenses: [`${BASE}projects/debian-cloud/global/licenses/debian-12-bookworm`],
    });
  }

  /** Adds an image to a project (fake set-up). */
  addImage(
    project: string,
    img: { name: string; family?: string; licenses?: string[] },
  ): Record<string, any> {
    const rec = {
      kind: 'compute#image',
      id: this.id(),
      creationTimestamp: new Date().toISOString(),
      name: img.name,
      ...(img.family ? { family: img.family } : {}),
      sourceType: 'RAW',
      status: 'READY',
      archiveSizeBytes: '1073741824',
      diskSizeGb: '10',
      licenses: img.licenses ?? [],
      selfLink: `${BASE}projects/${project}/global/images/${img.name}`,
    };
    this.images.set(`${project}/${img.name}`, rec);
    return rec;
  }

  /** Makes the next `times` requests matching method+path fail with a Google JSON error. */
  inject(
    method: string,
    path: RegExp,
    status: number,
    error: { message: string; status: string; reason?: string; details?: unknown[] },
    times = 1,
  ): void {
    this.injected.push({
      method,
      path,
      status,
      times,
      body: {
        error: {
          code: status,
          message: error.message,
          status: error.status,
          ...(error.reason
            ? { errors: [{ message: error.message, domain: 'global', reason: error.reason }] }
            : {}),
          ...(error.details ? { details: error.details } : {}),
        },
      },
    });
  }

  async listen(): Promise<void> {
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((e) =>
        send(res, 500, {
          error: { code: 500, message: String(e?.stack ?? e), status: 'INTERNAL' },
        }),
      );
    });
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async close(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }

  /** Requests whose path matches, for assertions. */
  calls(method: string, path: RegExp): LoggedRequest[] {
    return this.requests.filter((r) => r.method === method && path.test(r.path));
  }

  private id(): string {
    return String(1000000000000000000n + BigInt(++this.seq) * 7919n);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const u = new URL(req.url ?? '/', 'http://fake');
    const raw = await readBody(req);
    const ctype = req.headers['content-type'] ?? '';
    let body: any = undefined;
    if (raw.length)
      body = ctype.includes('application/x-www-form-urlencoded')
        ? Object.fromEntries(new URLSearchParams(raw))
        : JSON.parse(raw);
    const path = decodeURIComponent(u.pathname);
    const method = req.method ?? 'GET';
    this.requests.push({
      method,
      path,
      query: Object.fromEntries(u.searchParams),
      body,
      authorization: req.headers.authorization,
    });

    if (method === 'POST' && path === '/token') return this.token(res, body ?? {});
    if (path.startsWith('/computeMetadata/v1/')) return this.metadata(res, req, path);

    const auth = req.headers.authorization ?? '';
    const tok = /^Bearer (.+)$/.exec(auth)?.[1];
    if (!tok || !this.tokens.has(tok))
      return gerr(
        res,
        401,
        'UNAUTHENTICATED',
        'Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential.',
        'required',
      );

    const inj = this.injected.find((i) => i.times > 0 && i.method === method && i.path.test(path));
    if (inj) {
      inj.times--;
      return send(res, inj.status, inj.body);
    }

    let m: RegExpExecArray | null;
    if ((m = /^\/compute\/v1\/projects\/([^/]+)\/(.*)$/.exec(path)))
      return this.compute(res, method, m[1]!, m[2]!, u.searchParams, body);
    if (
      (m =
        /^\/v2\/((?:projects|folders|organizations)\/[^/]+)\/policies(?:\/([^/:]+))?(?::(getEffectivePolicy))?$/.exec(
          path,
        ))
    )
      return this.orgPolicy(res, method, m[1]!, m[2], m[3], body);
    return gerr(
      res,
      404,
      'NOT_FOUND',
      `The requested URL ${path} was not found on this server.`,
      'notFound',
    );
  }

  // ---- OAuth2 -------------------------------------------------------------

  private token(res: ServerResponse, form: Record<string, string>): void {
    const o = this.config.oauth;
    if (form.grant_type !== 'refresh_token')
      return send(res, 400, {
        error: 'unsupported_grant_type',
        error_description: `Invalid grant_type: ${form.grant_type}`,
      });
    if (form.client_id !== o.clientId || form.client_secret !== o.clientSecret)
      return send(res, 401, {
        error: 'invalid_client',
        error_description: 'The OAuth client was not found.',
      });
    if (form.refresh_token !== o.refreshToken)
      return send(res, 400, {
        error: 'invalid_grant',
        error_description: 'Token has been expired or revoked.',
      });
    const t = `ya29.fake-${this.id()}`;
    this.tokens.add(t);
    send(res, 200, {
      access_token: t,
      expires_in: 3599,
      scope: 'https://www.googleapis.com/auth/cloud-platform',
      token_type: 'Bearer',
    });
  }

  // ---- GCE metadata server ---------------------------------------------------

  private metadata(res: ServerResponse, req: IncomingMessage, path: string): void {
    const reply = (status: number, body: string, type = 'application/text') => {
      res.writeHead(status, { 'metadata-flavor': 'Google', 'content-type': type });
      res.end(body);
    };
    if (req.headers['metadata-flavor'] !== 'Google')
      return reply(403, 'Missing Metadata-Flavor:Google header.');
    const rest = path.slice('/computeMetadata/v1/'.length);
    if (rest === 'instance/service-accounts/default/token') {
      const t = `ya29.fake-md-${this.id()}`;
      this.tokens.add(t);
      return reply(
        200,
        JSON.stringify({ access_token: t, expires_in: 3599, token_type: 'Bearer' }),
        'application/json',
      );
    }
    if (rest === 'instance' || rest === 'instance/')
      return reply(200, 'attributes/\nservice-accounts/\n');
    if (rest === 'project/project-id')
      return reply(
        200,
        Object.keys(this.config.projects).find((p) => p !== 'debian-cloud') ?? 'fake',
      );
    if (rest === 'universe/universe-domain') return reply(200, 'googleapis.com');
    return reply(404, 'Not Found');
  }

  // ---- Compute Engine v1 -----------------------------------------------------

  private compute(
    res: ServerResponse,
    method: string,
    project: string,
    rest: string,
    q: URLSearchParams,
    body: any,
  ): void {
    if (!(project in this.config.projects))
      return gerr(
        res,
        404,
        'NOT_FOUND',
        `The resource 'projects/${project}' was not found`,
        'notFound',
      );
    let m: RegExpExecArray | null;
    if ((m = /^zones\/([^/]+)(\/.*)?$/.exec(rest))) {
      const zone = m[1]!;
      const platforms = this.config.zones[zone];
      if (!platforms)
        return gerr(
          res,
          404,
          'NOT_FOUND',
          `The resource 'projects/${project}/zones/${zone}' was not found`,
          'notFound',
        );
      const sub = m[2] ?? '';
      if (method === 'GET' && sub === '')
        return send(res, 200, this.zone(project, zone, platforms));
      if (method === 'GET' && (m = /^\/machineTypes\/([^/]+)$/.exec(sub))) {
        const mt = machineType(m[1]!);
        if (!mt)
          return gerr(
            res,
            404,
            'NOT_FOUND',
            `The resource 'projects/${project}/zones/${zone}/machineTypes/${m[1]}' was not found`,
            'notFound',
          );
        return send(res, 200, {
          kind: 'compute#machineType',
          id: this.id(),
          name: m[1],
          description: `${mt.cpus} vCPUs, ${mt.memMb / 1024} GB RAM`,
          guestCpus: mt.cpus,
          memoryMb: mt.memMb,
          isSharedCpu: false,
          zone,
          architecture: HARDWARE[mt.series]?.maker === 'Arm' ? 'ARM64' : 'X86_64',
          selfLink: `${BASE}projects/${project}/zones/${zone}/machineTypes/${m[1]}`,
        });
      }
      if (method === 'POST' && sub === '/instances')
        return this.insertInstance(res, project, zone, body);
      if ((m = /^\/instances\/([^/]+)(\/serialPort)?$/.exec(sub)) && method === 'GET') {
        const inst = this.instances.get(`${project}/${zone}/${m[1]}`);
        if (!inst)
          return gerr(
            res,
            404,
            'NOT_FOUND',
            `The resource 'projects/${project}/zones/${zone}/instances/${m[1]}' was not found`,
            'notFound',
          );
        if (m[2]) return this.serial(res, inst, q);
        return send(res, 200, this.instanceView(inst));
      }
      if (
        (m = /^\/operations\/([^/]+)(\/wait)?$/.exec(sub)) &&
        (method === 'GET' || (method === 'POST' && m[2]))
      )
        return this.operation(res, m[1]!);
      return gerr(res, 404, 'NOT_FOUND', `The requested URL was not found: ${rest}`, 'notFound');
    }
    if (method === 'POST' && rest === 'global/images') return this.insertImage(res, project, body);
    if (method === 'GET' && (m = /^global\/images\/family\/([^/]+)$/.exec(rest))) {
      const imgs = [...this.images.entries()].filter(
        ([k, v]) => k.startsWith(`${project}/`) && v.family === m![1] && v.status === 'READY',
      );
      if (!imgs.length)
        return gerr(
          res,
          404,
          'NOT_FOUND',
          `The resource 'projects/${project}/global/images/family/${m[1]}' was not found`,
          'notFound',
        );
      return send(res, 200, imgs[imgs.length - 1]![1]);
    }
    if (method === 'GET' && (m = /^global\/images\/([^/]+)$/.exec(rest))) {
      const img = this.images.get(`${project}/${m[1]}`);
      if (!img)
        return gerr(
          res,
          404,
          'NOT_FOUND',
          `The resource 'projects/${project}/global/images/${m[1]}' was not found`,
          'notFound',
        );
      return send(res, 200, img);
    }
    if (
      (m = /^global\/operations\/([^/]+)(\/wait)?$/.exec(rest)) &&
      (method === 'GET' || (method === 'POST' && m[2]))
    )
      return this.operation(res, m[1]!);
    return gerr(res, 404, 'NOT_FOUND', `The requested URL was not found: ${rest}`, 'notFound');
  }

  private zone(project: string, zone: string, platforms: string[]) {
    const region = zone.replace(/-[a-z]$/, '');
    return {
      kind: 'compute#zone',
      id: this.id(),
      creationTimestamp: '1969-12-31T16:00:00.000-08:00',
      name: zone,
      description: zone,
      status: 'UP',
      region: `${BASE}projects/${project}/regions/${region}`,
      selfLink: `${BASE}projects/${project}/zones/${zone}`,
      availableCpuPlatforms: platforms,
      supportsPzs: false,
    };
  }

  private newOp(project: string, type: string, target: string, zone?: string): Op {
    const name = `operation-${Date.now()}-${this.id().slice(-8)}`;
    const op: Op = {
      kind: 'compute#operation',
      id: this.id(),
      name,
      operationType: type,
      targetLink: target,
      status: 'PENDING',
      progress: 0,
      insertTime: new Date().toISOString(),
      user: 'fake-user@example.com',
      selfLink: zone
        ? `${BASE}projects/${project}/zones/${zone}/operations/${name}`
        : `${BASE}projects/${project}/global/operations/${name}`,
      ...(zone ? { zone: `${BASE}projects/${project}/zones/${zone}` } : {}),
    };
    this.operations.set(name, op);
    return op;
  }

  private operation(res: ServerResponse, name: string): void {
    const op = this.operations.get(name);
    if (!op) return gerr(res, 404, 'NOT_FOUND', `The resource '${name}' was not found`, 'notFound');
    if (op.status === 'PENDING') {
      op.status = 'RUNNING';
      op.progress = 50;
      op.startTime = new Date().toISOString();
    } else if (op.status === 'RUNNING' && !this.stallOperations) {
      op.status = 'DONE';
      op.progress = 100;
      op.endTime = new Date().toISOString();
      if (op.failWith) {
        op.error = { errors: [{ code: op.failWith.code, message: op.failWith.message }] };
        op.httpErrorStatusCode = op.failWith.http;
        op.httpErrorMessage = op.failWith.httpMessage;
      } else op.onDone?.();
    }
    send(res, 200, stripFake(op));
  }

  private insertInstance(res: ServerResponse, project: string, zone: string, body: any): void {
    if (!body?.name || !/^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/.test(body.name))
      return gerr(
        res,
        400,
        'INVALID_ARGUMENT',
        `Invalid value for field 'resource.name': '${body?.name}'. Must be a match of regex '(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'`,
        'invalid',
      );
    const key = `${project}/${zone}/${body.name}`;
    if (this.instances.has(key))
      return gerr(
        res,
        409,
        'ALREADY_EXISTS',
        `The resource 'projects/${project}/zones/${zone}/instances/${body.name}' already exists`,
        'alreadyExists',
      );
    const mtName = String(body.machineType ?? '')
      .split('/')
      .pop()!;
    const mt = machineType(mtName);
    if (!mt)
      return gerr(
        res,
        400,
        'INVALID_ARGUMENT',
        `Invalid value for field 'resource.machineType': '${body.machineType}'. Machine type with name '${mtName}' does not exist in zone '${zone}'.`,
        'invalid',
      );
    const hw = HARDWARE[mt.series]!;
    const zonePlatforms = this.config.zones[zone]!;
    // Platforms this series can land on in this zone, oldest first.
    const candidates = hw.platforms.filter((p) => zonePlatforms.includes(p));
    if (!candidates.length)
      return gerr(
        res,
        400,
        'INVALID_ARGUMENT',
        `Machine type '${mtName}' is not available in zone '${zone}'.`,
        'invalid',
      );
    let platform = candidates[0]!;
    if (body.minCpuPlatform && body.minCpuPlatform !== 'Automatic') {
      const i = hw.platforms.indexOf(body.minCpuPlatform);
      const ok = candidates.filter((p) => hw.platforms.indexOf(p) >= i);
      if (i < 0 || !ok.length)
        return gerr(
          res,
          400,
          'INVALID_ARGUMENT',
          `Invalid value for field 'resource.minCpuPlatform': '${body.minCpuPlatform}'. CPU platform type with name '${body.minCpuPlatform}' does not exist in zone '${zone}' for machine type '${mtName}'.`,
          'invalid',
        );
      platform = ok[0]!;
    }
    const src = String(body.disks?.[0]?.initializeParams?.sourceImage ?? '');
    const img = this.lookupImage(src);
    if (!img) return gerr(res, 404, 'NOT_FOUND', `The resource '${src}' was not found`, 'notFound');
    const flag = body.advancedMachineFeatures?.enableNestedVirtualization === true;
    const licence = (img.licenses as string[]).some((l) => l.endsWith(VMX_LICENSE_PATH));
    const policyEnforced = this.effectiveEnforced(`projects/${project}`);
    if (flag && policyEnforced)
      return gerr(
        res,
        412,
        'FAILED_PRECONDITION',
        `Constraint constraints/compute.disableNestedVirtualization violated for project ${project}. Nested virtualization is not allowed.`,
        'conditionNotMet',
      );
    const nested =
      (flag || licence) &&
      !policyEnforced &&
      hw.maker === 'Intel' &&
      !hw.memoryOptimized &&
      !hw.costOptimized &&
      (INTEL_GENERATION[platform] ?? 0) >= 4;
    const script: string | undefined = body.metadata?.items?.find(
      (i: any) => i.key === 'startup-script',
    )?.value;
    const reports = typeof script === 'string' && script.includes('nestvirt-verify:');
    const vmx = nested ? mt.cpus : 0;
    const inst: FakeInstance = {
      body,
      project,
      zone,
      status: 'PROVISIONING',
      cpuPlatform: platform,
      guestCpus: mt.cpus,
      nested,
      serial: '',
      id: this.id(),
      bootChunks: [
        'SeaBIOS (version 1.8.2-google)\r\nBooting from Hard Disk 0...\r\n',
        `[    0.000000] Linux version 6.1.0-27-cloud-amd64 (debian-kernel@lists.debian.org)\r\n[    0.000000] Command line: BOOT_IMAGE=/boot/vmlinuz-6.1.0-27-cloud-amd64 root=PARTUUID=1 ro console=ttyS0,115200\r\n`,
        `[    1.204512] systemd[1]: Started google-guest-agent.service - Google Compute Engine Guest Agent.\r\n${body.name} google_metadata_script_runner[612]: Starting startup scripts (version 20261015.00).\r\n`,
        ...(reports
          ? [
              `nestvirt-verify: vmx=${vmx} kvm=${nested && !this.guestWithoutKvm ? 'yes' : 'no'} nested=${nested && !this.guestWithoutKvm ? 'Y' : '-'}\r\n${body.name} google_metadata_script_runner[612]: Finished running startup scripts.\r\n`,
            ]
          : []),
      ],
    };
    this.instances.set(key, inst);
    const op = this.newOp(
      project,
      'insert',
      `${BASE}projects/${project}/zones/${zone}/instances/${body.name}`,
      zone,
    );
    if (this.failNextInsert) {
      op.failWith = this.failNextInsert;
      this.failNextInsert = undefined;
      const del = () => this.instances.delete(key);
      op.onDone = del;
      del();
    } else op.onDone = () => (inst.status = 'RUNNING');
    send(res, 200, stripFake(op));
  }

  private lookupImage(src: string): Record<string, any> | undefined {
    const m = /projects\/([^/]+)\/global\/images\/(family\/)?([^/]+)$/.exec(src);
    if (!m) return undefined;
    if (m[2]) {
      const imgs = [...this.images.entries()].filter(
        ([k, v]) => k.startsWith(`${m[1]}/`) && v.family === m[3],
      );
      return imgs[imgs.length - 1]?.[1];
    }
    return this.images.get(`${m[1]}/${m[3]}`);
  }

  private instanceView(i: FakeInstance) {
    const b = i.body;
    const region = i.zone.replace(/-[a-z]$/, '');
    return {
      kind: 'compute#instance',
      id: i.id,
      name: b.name,
      zone: `${BASE}projects/${i.project}/zones/${i.zone}`,
      machineType: `${BASE}projects/${i.project}/zones/${i.zone}/machineTypes/${String(b.machineType).split('/').pop()}`,
      status: i.status,
      cpuPlatform: i.cpuPlatform,
      ...(b.minCpuPlatform ? { minCpuPlatform: b.minCpuPlatform } : {}),
      ...(b.advancedMachineFeatures ? { advancedMachineFeatures: b.advancedMachineFeatures } : {}),
      canIpForward: !!b.canIpForward,
      networkInterfaces: (b.networkInterfaces ?? []).map((n: any, k: number) => ({
        kind: 'compute#networkInterface',
        name: `nic${k}`,
        network: `${BASE}projects/${i.project}/${n.network}`,
        subnetwork: `${BASE}projects/${i.project}/regions/${region}/subnetworks/default`,
        networkIP: `10.128.0.${10 + k}`,
        accessConfigs: (n.accessConfigs ?? []).map((a: any) => ({
          kind: 'compute#accessConfig',
          type: a.type,
          name: a.name,
          natIP: '203.0.113.7',
          networkTier: 'PREMIUM',
        })),
        ...(n.aliasIpRanges
          ? {
              aliasIpRanges: n.aliasIpRanges.map((r: any) => ({
                ipCidrRange: String(r.ipCidrRange).startsWith('/')
                  ? `10.128.4.0${r.ipCidrRange}`
                  : r.ipCidrRange,
              })),
            }
          : {}),
      })),
      disks: [
        {
          kind: 'compute#attachedDisk',
          boot: true,
          autoDelete: true,
          deviceName: 'persistent-disk-0',
          source: `${BASE}projects/${i.project}/zones/${i.zone}/disks/${b.name}`,
          licenses:
            this.lookupImage(String(b.disks?.[0]?.initializeParams?.sourceImage ?? ''))?.licenses ??
            [],
        },
      ],
      metadata: { kind: 'compute#metadata', fingerprint: 'fake', items: b.metadata?.items ?? [] },
      labels: b.labels ?? {},
      selfLink: `${BASE}projects/${i.project}/zones/${i.zone}/instances/${b.name}`,
    };
  }

  private serial(res: ServerResponse, i: FakeInstance, q: URLSearchParams): void {
    const port = Number(q.get('port') ?? 1);
    if (port < 1 || port > 4)
      return gerr(
        res,
        400,
        'INVALID_ARGUMENT',
        `Invalid value for field 'port': '${port}'. Must be between 1 and 4.`,
        'invalid',
      );
    // A running instance prints one more chunk of its boot log per read.
    if (i.status === 'RUNNING' && i.bootChunks.length) i.serial += i.bootChunks.shift();
    const start = Number(q.get('start') ?? 0);
    const from = Math.min(Math.max(0, start), i.serial.length);
    send(res, 200, {
      kind: 'compute#serialPortOutput',
      contents: i.serial.slice(from),
      start: String(from),
      next: String(i.serial.length),
      selfLink: `${BASE}projects/${i.project}/zones/${i.zone}/instances/${i.body.name}/serialPort`,
    });
  }

  private insertImage(res: ServerResponse, project: string, body: any): void {
    if (!body?.name)
      return gerr(
        res,
        400,
        'INVALID_ARGUMENT',
        "Required field 'resource.name' not specified",
        'required',
      );
    if (this.images.has(`${project}/${body.name}`))
      return gerr(
        res,
        409,
        'ALREADY_EXISTS',
        `The resource 'projects/${project}/global/images/${body.name}' already exists`,
        'alreadyExists',
      );
    let inherited: string[] = [];
    if (body.sourceDisk) {
      const m = /projects\/([^/]+)\/zones\/([^/]+)\/disks\/([^/]+)$/.exec(body.sourceDisk);
      const inst = m ? this.instances.get(`${m[1]}/${m[2]}/${m[3]}`) : undefined;
      if (!inst)
        return gerr(
          res,
          404,
          'NOT_FOUND',
          `The resource '${body.sourceDisk}' was not found`,
          'notFound',
        );
      inherited =
        this.lookupImage(String(inst.body.disks?.[0]?.initializeParams?.sourceImage ?? ''))
          ?.licenses ?? [];
    } else if (body.sourceImage) {
      const src = this.lookupImage(
        String(body.sourceImage).replace(/^https?:\/\/[^/]+\/compute\/v1\//, ''),
      );
      if (!src)
        return gerr(
          res,
          404,
          'NOT_FOUND',
          `The resource '${body.sourceImage}' was not found`,
          'notFound',
        );
      inherited = src.licenses;
    } else
      return gerr(
        res,
        400,
        'INVALID_ARGUMENT',
        'Must specify exactly one of sourceDisk, sourceImage, rawDisk, sourceSnapshot',
        'invalid',
      );
    for (const l of body.licenses ?? [])
      if (
        !/^(https:\/\/www\.googleapis\.com\/compute\/v1\/)?projects\/[^/]+\/global\/licenses\/[^/]+$/.test(
          l,
        )
      )
        return gerr(
          res,
          400,
          'INVALID_ARGUMENT',
          `Invalid value for field 'resource.licenses[0]': '${l}'.`,
          'invalid',
        );
    const licenses = [
      ...new Set([
        ...inherited,
        ...(body.licenses ?? []).map((l: string) => (l.startsWith('https://') ? l : BASE + l)),
      ]),
    ];
    const img = this.addImage(project, { name: body.name, family: body.family, licenses });
    img.status = 'PENDING';
    const op = this.newOp(project, 'insert', img.selfLink);
    op.onDone = () => (img.status = 'READY');
    send(res, 200, stripFake(op));
  }

  // ---- Org Policy v2 -----------------------------------------------------------

  private parentOf(resource: string): string | null {
    const [kind, id] = resource.split('/') as [string, string];
    if (kind === 'projects') return this.config.projects[id] ?? null;
    if (kind === 'folders') return this.config.folders?.[id] ?? null;
    return null;
  }

  private known(resource: string): boolean {
    const [kind, id] = resource.split('/') as [string, string];
    if (kind === 'projects') return id in this.config.projects;
    if (kind === 'folders') return !!this.config.folders && id in this.config.folders;
    return (
      Object.values(this.config.projects).includes(resource) ||
      Object.values(this.config.folders ?? {}).includes(resource)
    );
  }

  /** Boolean constraints: the nearest policy with a rule (or reset) decides; default not enforced. */
  effectiveEnforced(resource: string): boolean {
    for (let r: string | null = resource; r; r = this.parentOf(r)) {
      const p = this.policies.get(`${r}/policies/compute.disableNestedVirtualization`);
      if (p?.spec?.reset) return false;
      const rule = p?.spec?.rules?.find((x: any) => typeof x.enforce === 'boolean');
      if (rule) return rule.enforce;
    }
    return false;
  }

  /** Fake set-up: set the constraint on a resource directly. */
  setPolicy(resource: string, enforce: boolean): void {
    const name = `${resource}/policies/compute.disableNestedVirtualization`;
    const etag = `W/"${this.id()}"`;
    this.policies.set(name, {
      name,
      spec: { etag, updateTime: new Date().toISOString(), rules: [{ enforce }] },
    });
  }

  private orgPolicy(
    res: ServerResponse,
    method: string,
    resource: string,
    constraint: string | undefined,
    verb: string | undefined,
    body: any,
  ): void {
    if (!this.known(resource))
      return gerr(
        res,
        403,
        'PERMISSION_DENIED',
        `Permission 'orgpolicy.policy.get' denied on resource '//cloudresourcemanager.googleapis.com/${resource}' (or it may not exist).`,
        undefined,
        [
          {
            '@type': 'type.googleapis.com/google.rpc.ErrorInfo',
            reason: 'IAM_PERMISSION_DENIED',
            domain: 'orgpolicy.googleapis.com',
          },
        ],
      );
    const writing = method === 'POST' || method === 'PATCH';
    if (
      writing &&
      resource.startsWith('projects/') &&
      this.config.policyReadOnly?.includes(resource.split('/')[1]!)
    )
      return gerr(
        res,
        403,
        'PERMISSION_DENIED',
        `Permission 'orgpolicy.policies.${method === 'POST' ? 'create' : 'update'}' denied on resource '//cloudresourcemanager.googleapis.com/${resource}' (or it may not exist).`,
        undefined,
        [
          {
            '@type': 'type.googleapis.com/google.rpc.ErrorInfo',
            reason: 'IAM_PERMISSION_DENIED',
            domain: 'orgpolicy.googleapis.com',
          },
        ],
      );
    if (constraint && constraint !== 'compute.disableNestedVirtualization' && !writing)
      return gerr(
        res,
        400,
        'INVALID_ARGUMENT',
        `Constraint constraints/${constraint} is not supported by this fake.`,
      );
    const name = constraint ? `${resource}/policies/${constraint}` : undefined;
    if (method === 'GET' && verb === 'getEffectivePolicy') {
      const lag = this.effectiveLag.get(resource);
      let enforced = this.effectiveEnforced(resource);
      if (lag && lag.reads > 0) {
        lag.reads--;
        enforced = lag.enforced;
      }
      return send(res, 200, { name, spec: { rules: [{ enforce: enforced }] } });
    }
    if (method === 'GET' && name && !verb) {
      const p = this.policies.get(name);
      if (!p) return gerr(res, 404, 'NOT_FOUND', `Requested entity was not found.`);
      return send(res, 200, p);
    }
    if (method === 'POST' && !constraint) {
      if (!body?.name || !body.name.startsWith(`${resource}/policies/`))
        return gerr(
          res,
          400,
          'INVALID_ARGUMENT',
          `Policy name must start with ${resource}/policies/, got '${body?.name}'.`,
        );
      if (this.policies.has(body.name))
        return gerr(res, 409, 'ALREADY_EXISTS', `Requested entity already exists`);
      return send(res, 200, this.store(body));
    }
    if (method === 'PATCH' && name) {
      const cur = this.policies.get(name);
      if (!cur) return gerr(res, 404, 'NOT_FOUND', `Requested entity was not found.`);
      const etag = body?.spec?.etag || body?.etag;
      if (etag && etag !== cur.spec.etag)
        return gerr(res, 409, 'ABORTED', 'The etag does not match the current policy.');
      return send(res, 200, this.store({ ...body, name }));
    }
    return gerr(res, 404, 'NOT_FOUND', `The requested URL was not found on this server.`);
  }

  private store(body: any): Record<string, any> {
    if (this.policyLagReads > 0) {
      const resource = String(body.name).split('/policies/')[0]!;
      this.effectiveLag.set(resource, {
        enforced: this.effectiveEnforced(resource),
        reads: this.policyLagReads,
      });
    }
    const rules = (body.spec?.rules ?? []).map((r: any) => ({ enforce: r.enforce === true }));
    const etag = `W/"${this.id()}"`;
    const p = { name: body.name, spec: { etag, updateTime: new Date().toISOString(), rules } };
    this.policies.set(body.name, p);
    return p;
  }
}

/** n2-standard-4 → 4 vCPUs, 16 GB; custom and shared-core types are not modelled. */
function machineType(name: string): { series: string; cpus: number; memMb: number } | undefined {
  const m = /^([a-z0-9]+)-(standard|highmem|highcpu|megamem|ultramem)-(\d+)$/.exec(name);
  if (!m || !HARDWARE[m[1]!]) return undefined;
  const cpus = Number(m[3]);
  const perCpu = {
    standard: 4096,
    highmem: 8192,
    highcpu: 1024,
    megamem: 14 * 1024,
    ultramem: 24 * 1024,
  }[m[2] as 'standard'];
  return { series: m[1]!, cpus, memMb: cpus * perCpu };
}

function stripFake(op: Op): Omit<Op, 'onDone' | 'failWith'> {
  const { onDone: _a, failWith: _b, ...rest } = op;
  return rest;
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let s = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => (s += c));
    req.on('end', () => resolve(s));
    req.on('error', reject);
  });
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const s = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=UTF-8',
    'content-length': Buffer.byteLength(s),
  });
  res.end(s);
}

/** Google's JSON error format. */
function gerr(
  res: ServerResponse,
  code: number,
  status: string,
  message: string,
  reason?: string,
  details?: unknown[],
): void {
  send(res, code, {
    error: {
      code,
      message,
      status,
      ...(reason ? { errors: [{ message, domain: 'global', reason }] } : {}),
      ...(details ? { details } : {}),
    },
  });
}
