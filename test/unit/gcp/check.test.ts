/** `gcp check` online (the official clients against the protocol fake) and offline. */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { runCli } from '../../helpers/cli.js';
import { world, type World } from './world.js';

let w: World;
before(async () => (w = await world()));
after(async () => w.close());

const check = (...args: string[]) => runCli(['gcp', 'check', ...args], { env: w.env });

test('offline: static rules only, no credentials, no API call', async () => {
  const n = w.fake.requests.length;
  const r = await runCli(
    ['gcp', 'check', '--project', 'p', '--machine-type', 'e2-standard-4', '--offline', '--json'],
    {
      env: { PATH: process.env.PATH, HOME: w.dir, METADATA_SERVER_DETECTION: 'none' },
    },
  );
  assert.equal(r.code, 1);
  const j = JSON.parse(r.stdout);
  assert.equal(j.offline, true);
  assert.equal(j.policy, null);
  assert.equal(j.verdict.nestedVirtualization, false);
  assert.deepEqual(
    j.verdict.problems.map((p: { id: string }) => p.id),
    ['series'],
  );
  assert.equal(j.verdict.problems[0].fix, '--machine-type n2-standard-4');
  assert.equal(w.fake.requests.length, n, 'no request reached the fake');
  const ok = await runCli(
    ['gcp', 'check', '--project', 'p', '--machine-type', 'n2-standard-4', '--offline'],
    { env: { HOME: w.dir, METADATA_SERVER_DETECTION: 'none' } },
  );
  assert.equal(ok.code, 0);
  assert.match(ok.stdout, /✓ series\s+n2-standard-4: N2 is an Intel/);
  assert.match(ok.stdout, /verdict: an L1 here can run nested VMs/);
});

test('online, all good: policy, zone platforms, machine type read through the API', async () => {
  const r = await check(
    '--project',
    'proj-ok',
    '--zone',
    'us-central1-a',
    '--machine-type',
    'n2-standard-4',
    '--json',
  );
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.deepEqual(j.policy, {
    constraint: 'constraints/compute.disableNestedVirtualization',
    enforced: false,
  });
  assert.ok(j.zoneCpuPlatforms.includes('Intel Ice Lake'));
  assert.deepEqual(j.machine, {
    guestCpus: 4,
    memoryMb: 16384,
    isSharedCpu: false,
    architecture: 'X86_64',
  });
  assert.deepEqual(
    j.findings.map((f: { id: string; status: string }) => `${f.id}:${f.status}`),
    ['series:ok', 'policy:ok', 'zone:ok', 'machine-type:ok'],
  );
  assert.equal(j.verdict.nestedVirtualization, true);
  // The documented, stable schema (docs/gcp.md "JSON").
  assert.deepEqual(Object.keys(j), [
    'project',
    'zone',
    'machineType',
    'minCpuPlatform',
    'offline',
    'findings',
    'policy',
    'zoneCpuPlatforms',
    'machine',
    'verdict',
  ]);
  assert.deepEqual(Object.keys(j.verdict), ['nestedVirtualization', 'problems']);
  // The calls are the real REST paths, each with a bearer token from the token endpoint.
  for (const p of [
    /^\/v2\/projects\/proj-ok\/policies\/compute\.disableNestedVirtualization:getEffectivePolicy$/,
    /^\/compute\/v1\/projects\/proj-ok\/zones\/us-central1-a$/,
    /^\/compute\/v1\/projects\/proj-ok\/zones\/us-central1-a\/machineTypes\/n2-standard-4$/,
  ]) {
    const c = w.fake.calls('GET', p);
    assert.ok(c.length >= 1, String(p));
    assert.match(c.at(-1)!.authorization ?? '', /^Bearer ya29\.fake-/);
  }
});

test('org policy enforced through a folder: negative verdict, exit 1, fix is `policy allow`', async () => {
  const r = await check(
    '--project',
    'proj-denied',
    '--zone',
    'us-central1-a',
    '--machine-type',
    'n2-standard-4',
  );
  assert.equal(r.code, 1);
  assert.match(
    r.stdout,
    /✗ policy\s+org policy constraints\/compute\.disableNestedVirtualization is enforced for project proj-denied/,
  );
  assert.match(r.stdout, /fix: nestvirt gcp policy allow --project proj-denied/);
  assert.match(r.stdout, /verdict: an L1 here cannot run nested VMs/);
});

test('zone with only pre-Haswell Intel: negative verdict naming the platforms', async () => {
  const r = await check('--project', 'proj-ok', '--zone', 'old-zone1-a', '--json');
  assert.equal(r.code, 1);
  const z = JSON.parse(r.stdout).findings.find((f: { id: string }) => f.id === 'zone');
  assert.equal(z.status, 'fail');
  assert.match(z.message, /offers no Intel Intel Haswell-or-later|no Intel .*Haswell/);
});

test('machine type not offered in the zone (API 404) becomes a failed finding', async () => {
  const r = await check(
    '--project',
    'proj-ok',
    '--zone',
    'us-central1-a',
    '--machine-type',
    'n2-bogus-4',
    '--json',
  );
  assert.equal(r.code, 1);
  const f = JSON.parse(r.stdout).findings.find((x: { id: string }) => x.id === 'machine-type');
  assert.equal(f.status, 'fail');
  assert.match(f.fix, /gcloud compute machine-types list --zones us-central1-a/);
});

test("unknown zone: one line from Google's 404, exit 1", async () => {
  const r = await check('--project', 'proj-ok', '--zone', 'mars-north1-a');
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    /nestvirt: zone mars-north1-a not found: The resource 'projects\/proj-ok\/zones\/mars-north1-a' was not found/,
  );
  assert.match(r.stderr, /fix: list zones with: gcloud compute zones list --project proj-ok/);
  assert.doesNotMatch(r.stderr, /\n\s+at /);
});

test('missing --project is a usage error (exit 2)', async () => {
  const r = await check('--zone', 'us-central1-a');
  assert.equal(r.code, 2);
  assert.match(r.stderr, /gcp check: --project is required/);
});
