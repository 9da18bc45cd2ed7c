/**
 * `gcp create` against the protocol fake: dry-run output, the create + wait +
 * serial-port verify flow, nesting that silently does not take, and errors.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { runCli } from '../../helpers/cli.js';
import { world, type World } from './world.js';

let w: World;
before(async () => (w = await world()));
after(async () => w.close());

const base = ['--project', 'proj-ok', '--zone', 'us-central1-a'];
const create = (name: string, ...args: string[]) =>
  runCli(['gcp', 'create', name, ...base, ...args], { env: w.env });

test('--dry-run prints the REST body and the gcloud command, and creates nothing', async () => {
  const r = await create(
    'dry',
    '--machine-type',
    'n2-standard-4',
    '--alias-range',
    '/30',
    '--can-ip-forward',
    '--min-cpu-platform',
    'Intel Cascade Lake',
    '--dry-run',
    '--json',
  );
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.dryRun, true);
  assert.deepEqual(j.request.advancedMachineFeatures, { enableNestedVirtualization: true });
  assert.equal(j.request.minCpuPlatform, 'Intel Cascade Lake');
  assert.equal(j.request.machineType, 'zones/us-central1-a/machineTypes/n2-standard-4');
  assert.equal(j.request.canIpForward, true);
  assert.deepEqual(j.request.networkInterfaces[0].aliasIpRanges, [{ ipCidrRange: '/30' }]);
  assert.equal(
    j.request.disks[0].initializeParams.sourceImage,
    'projects/debian-cloud/global/images/family/debian-12',
  );
  const script = j.request.metadata.items.find(
    (i: { key: string }) => i.key === 'startup-script',
  ).value;
  assert.equal(script, j.startupScript);
  assert.match(script, /nestvirt-verify: vmx=/);
  assert.match(script, /> \/dev\/ttyS0/);
  assert.equal(
    j.gcloud,
    "gcloud compute instances create dry --project=proj-ok --zone=us-central1-a --machine-type=n2-standard-4 --enable-nested-virtualization '--min-cpu-platform=Intel Cascade Lake' --image-family=debian-12 --image-project=debian-cloud --boot-disk-size=20GB --network-interface=network=default,aliases=/30 --can-ip-forward --metadata-from-file=startup-script=nestvirt-verify.sh --labels=nestvirt-role=l1",
  );
  assert.equal(w.fake.calls('POST', /\/instances$/).length, 0);
  // Human form: preflight, the POST line, the body, the gcloud line, the script.
  const h = await create('dry', '--machine-type', 'n2-standard-4', '--dry-run');
  assert.equal(h.code, 0);
  assert.match(h.stdout, /^POST compute\/v1\/projects\/proj-ok\/zones\/us-central1-a\/instances$/m);
  assert.match(h.stdout, /"enableNestedVirtualization": true/);
  assert.match(h.stdout, /^gcloud compute instances create dry /m);
  assert.match(h.stdout, /^# nestvirt-verify\.sh\n#!\/bin\/bash/m);
});

test('--dry-run --offline needs no credentials; --legacy-license drops the flag from the body and the gcloud line', async () => {
  const r = await runCli(
    [
      'gcp',
      'create',
      'dry',
      ...base,
      '--machine-type',
      'n1-standard-2',
      '--legacy-license',
      '--image',
      'debian-12-vmx',
      '--dry-run',
      '--offline',
      '--json',
    ],
    {
      env: { HOME: w.dir, METADATA_SERVER_DETECTION: 'none' },
    },
  );
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.request.advancedMachineFeatures, undefined);
  assert.equal(
    j.request.disks[0].initializeParams.sourceImage,
    'projects/proj-ok/global/images/debian-12-vmx',
  );
  assert.doesNotMatch(j.gcloud, /--enable-nested-virtualization/);
  assert.match(j.gcloud, /--image=debian-12-vmx --image-project=proj-ok/);
  // --image with --image-project: an image in another project.
  const other = await runCli(
    [
      'gcp',
      'create',
      'dry',
      ...base,
      '--machine-type',
      'n2-standard-2',
      '--image',
      'img',
      '--image-project',
      'img-proj',
      '--dry-run',
      '--offline',
      '--json',
    ],
    {
      env: { HOME: w.dir, METADATA_SERVER_DETECTION: 'none' },
    },
  );
  assert.equal(other.code, 0, other.stderr);
  assert.equal(
    JSON.parse(other.stdout).request.disks[0].initializeParams.sourceImage,
    'projects/img-proj/global/images/img',
  );
  assert.match(JSON.parse(other.stdout).gcloud, /--image=img --image-project=img-proj/);
  // N1 without a minimum platform is a warning, not a failure.
  assert.equal(j.preflight.verdict.problems[0].id, 'platform');
});

test('create: insert, zone operation PENDING → RUNNING → DONE via wait, serial port says vmx, exit 0', async () => {
  const r = await create(
    'l1-ok',
    '--machine-type',
    'n2-standard-4',
    '--alias-range',
    '/30',
    '--can-ip-forward',
    '--json',
  );
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.deepEqual(j.verify, {
    vmx: 4,
    kvm: true,
    nested: 'Y',
    line: 'nestvirt-verify: vmx=4 kvm=yes nested=Y',
    ok: true,
    cause: null,
    fix: null,
  });
  assert.deepEqual(Object.keys(j), [
    'preflight',
    'request',
    'gcloud',
    'instance',
    'operation',
    'verify',
  ]);
  assert.deepEqual(Object.keys(j.instance), [
    'name',
    'selfLink',
    'status',
    'cpuPlatform',
    'internalIp',
    'externalIp',
    'aliasIpRanges',
    'canIpForward',
  ]);
  assert.equal(j.instance.status, 'RUNNING');
  assert.equal(j.instance.cpuPlatform, 'Intel Cascade Lake');
  assert.deepEqual(j.instance.aliasIpRanges, ['10.128.4.0/30']);
  assert.equal(j.instance.canIpForward, true);
  // What reached the API is the body we print in --dry-run.
  const ins = w.fake.calls('POST', /\/zones\/us-central1-a\/instances$/).at(-1)!;
  assert.deepEqual(ins.body, j.request);
  // The operation was waited on until DONE, with the wait call (more than once).
  assert.ok(w.fake.calls('POST', new RegExp(`/operations/${j.operation}/wait$`)).length >= 2);
  // The serial port was read with increasing start offsets.
  const starts = w.fake
    .calls('GET', /\/instances\/l1-ok\/serialPort$/)
    .map((c) => Number(c.query.start));
  assert.ok(starts.length >= 2);
  assert.deepEqual(
    starts,
    [...starts].sort((a, b) => a - b),
  );
  assert.ok(starts.at(-1)! > 0);
  assert.match(r.stderr, /✓ creating instance l1-ok in us-central1-a/);
  assert.match(r.stderr, /✓ verifying nesting from inside \(serial port\)/);
});

test('N1 without --min-cpu-platform lands on Sandy Bridge: nesting silently does not take → loud failure naming the platform', async () => {
  const r = await create('l1-n1', '--machine-type', 'n1-standard-2');
  assert.equal(r.code, 1);
  assert.match(r.stdout, /✗ nesting NOT active: nestvirt-verify: vmx=0 kvm=no/);
  assert.match(
    r.stderr,
    /nestvirt: instance l1-n1 booted WITHOUT nested virtualization \(nestvirt-verify: vmx=0 kvm=no nested=-\); likely cause: CPU platform: the instance runs on Intel Sandy Bridge, older than Intel Haswell/,
  );
  assert.match(
    r.stderr,
    /fix: --min-cpu-platform "Intel Haswell"; delete the instance first: gcloud compute instances delete l1-n1 --zone us-central1-a --project proj-ok/,
  );
  // ... and the same series with the platform fixed works.
  const ok = await create(
    'l1-n1-haswell',
    '--machine-type',
    'n1-standard-2',
    '--min-cpu-platform',
    'Intel Haswell',
    '--json',
  );
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(JSON.parse(ok.stdout).verify.vmx, 2);
});

test('E2 forced past the preflight: boots without vmx, failure names the machine series', async () => {
  const pre = await create('l1-e2', '--machine-type', 'e2-standard-4');
  assert.equal(pre.code, 1);
  assert.match(
    pre.stderr,
    /preflight failed, instance l1-e2 not created: e2-standard-4: E2 machine types do not support nested virtualization/,
  );
  assert.equal(w.fake.instances.has('proj-ok/us-central1-a/l1-e2'), false);
  const r = await create('l1-e2', '--machine-type', 'e2-standard-4', '--force', '--json');
  assert.equal(r.code, 1);
  const j = JSON.parse(r.stdout); // one document, carrying the error
  assert.equal(j.error.code, 'gcp.nesting-not-active');
  assert.equal(j.instance.status, 'RUNNING');
  assert.equal(j.verify.ok, false);
  assert.match(j.verify.cause, /^machine series: E2/);
  assert.equal(j.verify.fix, '--machine-type n2-standard-4');
});

test('org policy enforced: preflight stops it; forced, Google refuses the insert (412) and the fix is `policy allow`', async () => {
  const base2 = [
    '--project',
    'proj-denied',
    '--zone',
    'us-central1-a',
    '--machine-type',
    'n2-standard-4',
  ];
  const pre = await runCli(['gcp', 'create', 'l1-pol', ...base2], { env: w.env });
  assert.equal(pre.code, 1);
  assert.match(pre.stderr, /fix: nestvirt gcp policy allow --project proj-denied/);
  const r = await runCli(['gcp', 'create', 'l1-pol', ...base2, '--force'], { env: w.env });
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    /nestvirt: instance l1-pol: the org policy forbids nested virtualization \(Constraint constraints\/compute\.disableNestedVirtualization violated for project proj-denied/,
  );
  assert.match(r.stderr, /fix: nestvirt gcp policy allow --project proj-denied\n/);
});

test('409 ALREADY_EXISTS: one line with the fix', async () => {
  const r = await create('l1-ok', '--machine-type', 'n2-standard-4');
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    /nestvirt: instance l1-ok already exists: The resource 'projects\/proj-ok\/zones\/us-central1-a\/instances\/l1-ok' already exists/,
  );
  assert.match(
    r.stderr,
    /fix: choose another name, or delete it: gcloud compute instances delete l1-ok --zone us-central1-a --project proj-ok/,
  );
});

test('quota: the operation finishes DONE with QUOTA_EXCEEDED → one line about quota', async () => {
  w.fake.failNextInsert = {
    code: 'QUOTA_EXCEEDED',
    message: "Quota 'N2_CPUS' exceeded.  Limit: 8.0 in region us-central1.",
    http: 403,
    httpMessage: 'FORBIDDEN',
  };
  const r = await create('l1-quota', '--machine-type', 'n2-standard-16');
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    /nestvirt: instance l1-quota: quota exceeded: Quota 'N2_CPUS' exceeded\. Limit: 8\.0 in region us-central1\./,
  );
  assert.match(r.stderr, /fix: request more quota/);
});

test('400 invalid machine type (forced past the preflight): one line naming the field, fix lists types', async () => {
  const r = await create('l1-bad', '--machine-type', 'n2-bogus-4', '--force');
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    /nestvirt: instance l1-bad: Google rejected the request: Invalid value for field 'resource\.machineType'/,
  );
  assert.match(
    r.stderr,
    /fix: list valid types with: gcloud compute machine-types list --zones us-central1-a --project proj-ok/,
  );
});

test('403 on insert (missing IAM role) and 403 SERVICE_DISABLED: one line each with the fix', async () => {
  w.fake.inject('POST', /\/instances$/, 403, {
    message:
      "Required 'compute.instances.create' permission for 'projects/proj-ok/zones/us-central1-a/instances/l1-perm'",
    status: 'PERMISSION_DENIED',
    reason: 'forbidden',
  });
  const r = await create('l1-perm', '--machine-type', 'n2-standard-4');
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    /nestvirt: instance l1-perm: permission denied: Required 'compute\.instances\.create' permission/,
  );
  assert.match(
    r.stderr,
    /fix: grant your account roles\/compute\.instanceAdmin\.v1 on project proj-ok/,
  );
  w.fake.inject('GET', /\/zones\/us-central1-a$/, 403, {
    message: 'Compute Engine API has not been used in project proj-ok before or it is disabled.',
    status: 'PERMISSION_DENIED',
    reason: 'accessNotConfigured',
  });
  const d = await create('l1-api', '--machine-type', 'n2-standard-4');
  assert.equal(d.code, 1);
  assert.match(d.stderr, /fix: gcloud services enable compute\.googleapis\.com --project proj-ok/);
});

test('bad input is a usage error (exit 2) before any call', async () => {
  const n = w.fake.requests.length;
  for (const [args, re] of [
    [['Bad_Name', '--machine-type', 'n2-standard-4'], /instance name "Bad_Name" is not valid/],
    [
      ['ok', '--machine-type', 'n2-standard-4', '--alias-range', '30'],
      /--alias-range must be a prefix length like \/30/,
    ],
    [['ok'], /--machine-type is required/],
    [['ok', '--machine-type', 'n2-standard-4', '--offline'], /--offline only goes with --dry-run/],
    [
      ['ok', '--machine-type', 'n2-standard-4', '--image', 'i', '--image-family', 'f'],
      /--image and --image-family are alternatives/,
    ],
    [
      ['ok', '--machine-type', 'n2-standard-4', '--disk-size', 'big'],
      /--disk-size must be a whole number of GB/,
    ],
  ] as [string[], RegExp][]) {
    const r = await create(args[0]!, ...args.slice(1));
    assert.equal(r.code, 2, args.join(' '));
    assert.match(r.stderr, re);
  }
  assert.equal(w.fake.requests.length, n);
});

test('verify timeout: no report on the serial port → one line pointing at get-serial-port-output', async () => {
  // An instance whose startup script is not ours never reports; simulate by a short timeout and no report.
  const r = await runCli(
    [
      'gcp',
      'create',
      'l1-slow',
      ...base,
      '--machine-type',
      'n2-standard-4',
      '--verify-timeout',
      '0.05',
    ],
    {
      env: { ...w.env, NESTVIRT_GCP_POLL_MS: '100' },
    },
  );
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    /instance l1-slow is up but its startup script did not report within 0.05s/,
  );
  assert.match(
    r.stderr,
    /fix: read the output: gcloud compute instances get-serial-port-output l1-slow --zone us-central1-a --project proj-ok/,
  );
});

test('an operation that never finishes: --timeout ends the wait with one line and the describe command', async () => {
  w.fake.stallOperations = true;
  try {
    const r = await create('l1-stuck', '--machine-type', 'n2-standard-4', '--timeout', '0.2');
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /nestvirt: instance l1-stuck: operation operation-\S+ still RUNNING after 0.2s/,
    );
    assert.match(
      r.stderr,
      /fix: follow it with: gcloud compute operations describe operation-\S+ --zone us-central1-a --project proj-ok/,
    );
    assert.ok(w.fake.calls('POST', /\/operations\/[^/]+\/wait$/).length >= 2);
  } finally {
    w.fake.stallOperations = false;
  }
});

test('vmx present but no /dev/kvm in the guest: fails naming kvm_intel, with the ssh command that loads it', async () => {
  w.fake.guestWithoutKvm = true;
  try {
    const r = await create('l1-nokvm', '--machine-type', 'n2-standard-2', '--json');
    assert.equal(r.code, 1);
    const j = JSON.parse(r.stdout);
    assert.equal(j.verify.vmx, 2);
    assert.equal(j.verify.kvm, false);
    assert.match(
      j.verify.cause,
      /vmx but \/dev\/kvm is missing: the kvm_intel module is not loaded/,
    );
    assert.equal(
      j.verify.fix,
      'gcloud compute ssh l1-nokvm --zone us-central1-a -- sudo modprobe kvm_intel',
    );
  } finally {
    w.fake.guestWithoutKvm = false;
  }
});
