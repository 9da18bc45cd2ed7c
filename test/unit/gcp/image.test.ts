/** The legacy flow: an image with the enable-vmx licence, then an instance from it without the flag. */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { runCli } from '../../helpers/cli.js';
import { world, type World } from './world.js';

let w: World;
before(async () => (w = await world()));
after(async () => w.close());

const VMX = 'https://www.googleapis.com/compute/v1/projects/vm-options/global/licenses/enable-vmx';
const run = (...a: string[]) => runCli(a, { env: w.env });

test('image --dry-run: images.insert body with the licence and the gcloud command', async () => {
  const r = await run(
    'gcp',
    'image',
    'deb-vmx',
    '--project',
    'proj-ok',
    '--image-family',
    'debian-12',
    '--image-project',
    'debian-cloud',
    '--dry-run',
    '--json',
  );
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.deepEqual(j.request.licenses, [VMX]);
  assert.equal(j.request.sourceImage, 'projects/debian-cloud/global/images/family/debian-12');
  assert.equal(
    j.gcloud,
    `gcloud compute images create deb-vmx --project=proj-ok --source-image-family=debian-12 --source-image-project=debian-cloud --licenses=${VMX}`,
  );
});

test('legacy create from an unlicensed family: preflight says the image lacks the licence and how to make one', async () => {
  const r = await run(
    'gcp',
    'create',
    'leg',
    '--project',
    'proj-ok',
    '--zone',
    'us-central1-a',
    '--machine-type',
    'n2-standard-2',
    '--legacy-license',
  );
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    /boot image .*debian-12-bookworm-v20261110 does not carry projects\/vm-options\/global\/licenses\/enable-vmx/,
  );
  assert.match(
    r.stderr,
    /fix: nestvirt gcp image leg-vmx --image-family debian-12 --image-project debian-cloud --project proj-ok, then --image leg-vmx/,
  );
});

test('image from a family (getFromFamily → insert → global operation), then a legacy-licence L1 that nests', async () => {
  const r = await run(
    'gcp',
    'image',
    'deb-vmx',
    '--project',
    'proj-ok',
    '--image-family',
    'debian-12',
    '--image-project',
    'debian-cloud',
    '--json',
  );
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout).image;
  assert.equal(j.status, 'READY');
  assert.ok(j.licenses.includes(VMX));
  assert.match(j.source, /projects\/debian-cloud\/global\/images\/debian-12-bookworm-v20261110$/);
  assert.ok(w.fake.calls('GET', /\/global\/images\/family\/debian-12$/).length >= 1);
  assert.ok(w.fake.calls('POST', /\/global\/operations\/[^/]+\/wait$/).length >= 2);

  const c = await run(
    'gcp',
    'create',
    'leg-ok',
    '--project',
    'proj-ok',
    '--zone',
    'us-central1-a',
    '--machine-type',
    'n2-standard-2',
    '--legacy-license',
    '--image',
    'deb-vmx',
    '--json',
  );
  assert.equal(c.code, 0, c.stderr);
  const cj = JSON.parse(c.stdout);
  assert.equal(cj.request.advancedMachineFeatures, undefined);
  assert.equal(cj.verify.vmx, 2);
  assert.ok(
    cj.preflight.findings.some(
      (f: { id: string; status: string }) => f.id === 'image' && f.status === 'ok',
    ),
  );
});

test('image from a disk (the boot disk of an instance), and 409 when the name is taken', async () => {
  const l1 = await run(
    'gcp',
    'create',
    'src-vm',
    '--project',
    'proj-ok',
    '--zone',
    'us-central1-a',
    '--machine-type',
    'n2-standard-2',
    '--skip-verify',
  );
  assert.equal(l1.code, 0, l1.stderr);
  const r = await run(
    'gcp',
    'image',
    'disk-vmx',
    '--project',
    'proj-ok',
    '--source-disk',
    'src-vm',
    '--zone',
    'us-central1-a',
    '--json',
  );
  assert.equal(r.code, 0, r.stderr);
  assert.equal(
    JSON.parse(r.stdout).image.source,
    'projects/proj-ok/zones/us-central1-a/disks/src-vm',
  );
  const again = await run(
    'gcp',
    'image',
    'disk-vmx',
    '--project',
    'proj-ok',
    '--source-disk',
    'src-vm',
    '--zone',
    'us-central1-a',
  );
  assert.equal(again.code, 1);
  assert.match(again.stderr, /nestvirt: image disk-vmx already exists/);
  assert.match(
    again.stderr,
    /fix: choose another name, or delete it: gcloud compute images delete disk-vmx --project proj-ok/,
  );
  const missing = await run(
    'gcp',
    'image',
    'x-vmx',
    '--project',
    'proj-ok',
    '--source-disk',
    'nope',
    '--zone',
    'us-central1-a',
  );
  assert.equal(missing.code, 1);
  assert.match(
    missing.stderr,
    /nestvirt: image x-vmx not found: The resource 'projects\/proj-ok\/zones\/us-central1-a\/disks\/nope' was not found/,
  );
});

test('image source flags: exactly one source; --source-disk needs --zone (exit 2)', async () => {
  for (const [args, re] of [
    [['x'], /give either --source-disk DISK/],
    [
      ['x', '--source-disk', 'd', '--image-family', 'f', '--image-project', 'p'],
      /give either --source-disk DISK/,
    ],
    [['x', '--source-disk', 'd'], /--source-disk needs --zone/],
    [['x', '--image-family', 'f'], /--image-family and --image-project go together/],
  ] as [string[], RegExp][]) {
    const r = await run('gcp', 'image', ...args, '--project', 'proj-ok');
    assert.equal(r.code, 2, args.join(' '));
    assert.match(r.stderr, re);
  }
});
