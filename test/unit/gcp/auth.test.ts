/** Application Default Credentials: found the way Google's libraries find them, one line when absent. */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runCli, runBin } from '../../helpers/cli.js';
import { world, type World } from './world.js';

let w: World;
before(async () => (w = await world()));
after(async () => w.close());

const NO_CREDS =
  'nestvirt: no Google credentials: run `gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS\n';

test('no credentials: exactly one line, exit 1, nothing sent anywhere', async () => {
  const n = w.fake.requests.length;
  const env = { ...w.env, GOOGLE_APPLICATION_CREDENTIALS: '' };
  for (const argv of [
    ['gcp', 'check', '--project', 'proj-ok'],
    ['gcp', 'policy', 'get', '--project', 'proj-ok'],
    [
      'gcp',
      'create',
      'l1',
      '--project',
      'proj-ok',
      '--zone',
      'us-central1-a',
      '--machine-type',
      'n2-standard-4',
    ],
    [
      'gcp',
      'image',
      'x',
      '--project',
      'proj-ok',
      '--image-family',
      'debian-12',
      '--image-project',
      'debian-cloud',
    ],
  ]) {
    const r = await runCli(argv, { env });
    assert.equal(r.code, 1, argv.join(' '));
    assert.ok(r.stderr.endsWith(NO_CREDS), r.stderr);
    assert.equal(r.stdout, '');
  }
  assert.equal(w.fake.requests.length, n);
});

test('no credentials as a real subprocess: the same line, no stack trace; --json carries the code', async () => {
  const r = await runBin(['gcp', 'check', '--project', 'proj-ok', '--json'], {
    env: {
      HOME: w.dir,
      GOOGLE_APPLICATION_CREDENTIALS: '',
      CLOUDSDK_CONFIG: '',
      METADATA_SERVER_DETECTION: 'none',
      NESTVIRT_GCP_ENDPOINT: w.fake.url,
    },
  });
  assert.equal(r.code, 1);
  assert.ok(r.stderr.endsWith(NO_CREDS), r.stderr);
  assert.equal(JSON.parse(r.stdout).error.code, 'gcp.no-credentials');
});

test("gcloud's well-known file (CLOUDSDK_CONFIG or ~/.config/gcloud) is used when the variable is unset", async () => {
  const dir = join(w.dir, 'home', '.config', 'gcloud');
  await mkdir(dir, { recursive: true });
  await copyFile(
    w.env.GOOGLE_APPLICATION_CREDENTIALS!,
    join(dir, 'application_default_credentials.json'),
  );
  const r = await runCli(['gcp', 'check', '--project', 'proj-ok', '--json'], {
    env: { ...w.env, GOOGLE_APPLICATION_CREDENTIALS: '', HOME: join(w.dir, 'home') },
  });
  assert.equal(r.code, 0, r.stderr);
  const r2 = await runCli(['gcp', 'check', '--project', 'proj-ok'], {
    env: { ...w.env, GOOGLE_APPLICATION_CREDENTIALS: '', HOME: w.dir, CLOUDSDK_CONFIG: dir },
  });
  assert.equal(r2.code, 0, r2.stderr);
});

test('GOOGLE_APPLICATION_CREDENTIALS naming a missing file: one line saying so', async () => {
  const r = await runCli(['gcp', 'check', '--project', 'proj-ok'], {
    env: { ...w.env, GOOGLE_APPLICATION_CREDENTIALS: join(w.dir, 'nope.json') },
  });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /GOOGLE_APPLICATION_CREDENTIALS names .*nope\.json, which does not exist/);
});

test('revoked refresh token: the token endpoint says invalid_grant, nestvirt says so in one line', async () => {
  const { writeFile } = await import('node:fs/promises');
  const bad = join(w.dir, 'revoked.json');
  await writeFile(
    bad,
    JSON.stringify({
      type: 'authorized_user',
      client_id: 'fake-client.apps.example',
      client_secret: 'fake-secret',
      refresh_token: 'revoked',
    }),
  );
  const r = await runCli(['gcp', 'check', '--project', 'proj-ok'], {
    env: { ...w.env, GOOGLE_APPLICATION_CREDENTIALS: bad },
  });
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    /nestvirt: Google rejected the credentials in .*revoked\.json: Token has been expired or revoked\./,
  );
  assert.match(r.stderr, /fix: run `gcloud auth application-default login` again/);
  assert.equal(
    r.stderr
      .trim()
      .split('\n')
      .filter((l) => !/^[…✓✗]/.test(l)).length,
    2,
  );
});

test('every API request carried a bearer token the fake issued', () => {
  const api = w.fake.requests.filter((r) => r.path !== '/token');
  assert.ok(api.length > 0);
  for (const r of api) assert.match(r.authorization ?? '', /^Bearer ya29\.fake-/, r.path);
});

test('no file: ADC falls back to the metadata server (here the fake, via GCE_METADATA_HOST)', async () => {
  // google-auth-library reads these from the process environment.
  const saved = { host: process.env.GCE_METADATA_HOST, det: process.env.METADATA_SERVER_DETECTION };
  process.env.GCE_METADATA_HOST = new URL(w.fake.url).host;
  process.env.METADATA_SERVER_DETECTION = 'assume-present';
  try {
    const r = await runCli(
      ['gcp', 'check', '--project', 'proj-ok', '--zone', 'us-central1-a', '--json'],
      {
        env: {
          ...w.env,
          GOOGLE_APPLICATION_CREDENTIALS: '',
          METADATA_SERVER_DETECTION: 'assume-present',
          GCE_METADATA_HOST: process.env.GCE_METADATA_HOST,
        },
      },
    );
    assert.equal(r.code, 0, r.stderr);
    const md = w.fake.requests.filter(
      (q) => q.path === '/computeMetadata/v1/instance/service-accounts/default/token',
    );
    assert.ok(md.length >= 1, 'a token came from the metadata route');
    const last = w.fake.calls('GET', /\/zones\/us-central1-a$/).at(-1)!;
    assert.match(last.authorization ?? '', /^Bearer ya29\.fake-md-/);
  } finally {
    for (const [k, v] of [
      ['GCE_METADATA_HOST', saved.host],
      ['METADATA_SERVER_DETECTION', saved.det],
    ] as const)
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
  }
});
