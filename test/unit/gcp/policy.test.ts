/** `gcp policy get | allow | deny` through Org Policy v2 (HTTP/JSON) against the protocol fake. */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { runCli } from '../../helpers/cli.js';
import { world, type World } from './world.js';

let w: World;
before(
  async () =>
    (w = await world({ projects: { 'proj-flip': 'folders/300', 'proj-lag': 'folders/300' } })),
);
after(async () => w.close());

const policy = (...args: string[]) => runCli(['gcp', 'policy', ...args], { env: w.env });

test('get: nothing set on the project, enforced through its folder', async () => {
  const r = await policy('get', '--project', 'proj-flip', '--json');
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), {
    resource: 'projects/proj-flip',
    constraint: 'constraints/compute.disableNestedVirtualization',
    set: null,
    effective: { enforced: true },
    nestedAllowed: false,
  });
  const f = await policy('get', '--folder', '300');
  assert.match(
    f.stdout,
    /folders\/300: constraints\/compute\.disableNestedVirtualization\n\s+set here:\s+enforced\n\s+effective: enforced/,
  );
});

test('allow: creates the project policy (enforce=false), shows the effective result; again: nothing changes', async () => {
  const r = await policy('allow', '--project', 'proj-flip', '--json');
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.changed, true);
  assert.equal(j.set.enforced, false);
  assert.deepEqual(j.effective, { enforced: false });
  assert.equal(j.nestedAllowed, true);
  const post = w.fake.calls('POST', /^\/v2\/projects\/proj-flip\/policies$/);
  assert.equal(post.length, 1);
  assert.deepEqual(post[0]!.body.spec.rules, [{ enforce: false }]);
  assert.equal(
    post[0]!.body.name,
    'projects/proj-flip/policies/compute.disableNestedVirtualization',
  );
  const again = await policy('allow', '--project', 'proj-flip');
  assert.equal(again.code, 0);
  assert.match(again.stdout, /already set; nothing changed/);
  assert.equal(w.fake.calls('POST', /^\/v2\/projects\/proj-flip\/policies$/).length, 1);
  assert.equal(w.fake.calls('PATCH', /proj-flip/).length, 0);
});

test('deny: patches the existing policy with its etag; check then says no', async () => {
  const r = await policy('deny', '--project', 'proj-flip');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /effective: enforced\n\s+✗ nested virtualization is disabled/);
  const patch = w.fake.calls(
    'PATCH',
    /^\/v2\/projects\/proj-flip\/policies\/compute\.disableNestedVirtualization$/,
  );
  assert.equal(patch.length, 1);
  assert.match(patch[0]!.body.spec.etag, /^W\/"/);
  const c = await runCli(['gcp', 'check', '--project', 'proj-flip'], { env: w.env });
  assert.equal(c.code, 1);
  assert.match(c.stdout, /enforced for project proj-flip/);
});

test('--dry-run prints the v2 body and the gcloud command; no credentials, no request', async () => {
  const n = w.fake.requests.length;
  const r = await runCli(
    ['gcp', 'policy', 'allow', '--organization', '100', '--dry-run', '--json'],
    { env: { HOME: w.dir, METADATA_SERVER_DETECTION: 'none' } },
  );
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), {
    dryRun: true,
    request: {
      name: 'organizations/100/policies/compute.disableNestedVirtualization',
      spec: { rules: [{ enforce: false }] },
    },
    gcloud:
      'gcloud resource-manager org-policies disable-enforce compute.disableNestedVirtualization --organization=100',
  });
  assert.equal(w.fake.requests.length, n);
});

test('403 when the caller may not set policies: one line naming the role', async () => {
  const r = await policy('allow', '--project', 'proj-ro');
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    /nestvirt: setting org policy constraints\/compute\.disableNestedVirtualization on projects\/proj-ro: permission denied: Permission 'orgpolicy\.policies\.create' denied/,
  );
  assert.match(
    r.stderr,
    /fix: grant your account roles\/orgpolicy\.policyAdmin on project proj-ro/,
  );
});

test('unknown project: Google answers 403 PERMISSION_DENIED ("or it may not exist")', async () => {
  const r = await policy('get', '--project', 'nope');
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    /permission denied: Permission 'orgpolicy\.policy\.get' denied on resource '\/\/cloudresourcemanager\.googleapis\.com\/projects\/nope' \(or it may not exist\)/,
  );
});

test('target must be exactly one of --project/--folder/--organization; ids numeric (exit 2)', async () => {
  assert.equal((await policy('get')).code, 2);
  const two = await policy('get', '--project', 'a', '--folder', '1');
  assert.equal(two.code, 2);
  assert.match(two.stderr, /give exactly one of --project, --folder or --organization \(got 2\)/);
  const bad = await policy('deny', '--folder', 'eng');
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--folder must be a numeric id, got "eng"/);
});

test('allow while the change has not propagated yet: exit 1 with "check again", then get shows it allowed', async () => {
  w.fake.policyLagReads = 1;
  try {
    const r = await policy('allow', '--project', 'proj-lag');
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /the effective policy on projects\/proj-lag still enforces the constraint; policy changes can take minutes to propagate/,
    );
    assert.match(
      r.stderr,
      /fix: check again in a few minutes: nestvirt gcp policy get --project proj-lag/,
    );
  } finally {
    w.fake.policyLagReads = 0;
  }
  const g = await policy('get', '--project', 'proj-lag', '--json');
  assert.equal(JSON.parse(g.stdout).nestedAllowed, true);
});
