/**
 * `run --user-data/--ssh-key` and `ssh` through the CLI, without booting:
 * VMs are created with --no-start from an image whose files are stand-ins
 * (a real qcow2 made by qemu-img, placeholder kernel and initrd).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runCli, tempHome } from '../../helpers/cli.js';
import { run } from '../../../src/util/exec.js';
import { writeJson } from '../../../src/state/store.js';
import type { ImageSpec } from '../../../src/image/types.js';
import type { VmSpec } from '../../../src/vm/types.js';
import { sshForward, withSshForward } from '../../../src/vm/ssh.js';

let home: string;
const env = (): NodeJS.ProcessEnv => ({ ...process.env, NESTVIRT_HOME: home, NO_COLOR: '1' });
const PUB =
  'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFLK30q3vKzlIhBOy6FMQcuKr1jCJqyJZeryL5wwPeyd alice@example';

async function image(name: string, features: Partial<ImageSpec['features']>): Promise<void> {
  const dir = join(home, 'images', name);
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'vmlinux'), 'kernel stand-in');
  await writeFile(join(dir, 'initrd'), 'initrd stand-in');
  await run(['qemu-img', 'create', '-q', '-f', 'qcow2', join(dir, 'disk.qcow2'), '64M']);
  const spec: ImageSpec = {
    name,
    builtin: false,
    kernel: join(dir, 'vmlinux'),
    initrd: join(dir, 'initrd'),
    cmdline: 'console=ttyS0',
    disk: join(dir, 'disk.qcow2'),
    diskFormat: 'qcow2',
    features: {
      guestAgent: true,
      sshd: false,
      cloudInit: false,
      kvmModules: false,
      nestvirt: false,
      ...features,
    },
    arch: 'x86_64',
    sizeBytes: 1,
    createdAt: new Date().toISOString(),
  };
  await writeJson(join(dir, 'spec.json'), spec);
}

before(async () => {
  home = await tempHome('nestvirt-ci-cli-');
  await image('cloudy', { sshd: true, cloudInit: true });
  await image('plain', {});
  await writeFile(join(home, 'ud.yaml'), '#cloud-config\nhostname: web\n');
  await writeFile(join(home, 'bad.yaml'), '#cloud-config\nhostname: web\n  x: 1\n');
  await writeFile(join(home, 'k.pub'), PUB + '\n');
});
after(async () => {
  await rm(home, { recursive: true, force: true });
});

async function spec(name: string): Promise<VmSpec> {
  return JSON.parse(await readFile(join(home, 'vms', name, 'spec.json'), 'utf8')) as VmSpec;
}

test('run --user-data --ssh-key attaches a seed, records it and forwards a port to sshd', async () => {
  const r = await runCli(
    [
      'run',
      'cloudy',
      '--name',
      'a',
      '--no-start',
      '--user-data',
      join(home, 'ud.yaml'),
      '--ssh-key',
      join(home, 'k.pub'),
    ],
    { env: env() },
  );
  assert.equal(r.code, 0, r.stderr);
  const dir = join(home, 'vms', 'a');
  const s = await spec('a');
  assert.equal(s.seed, join(dir, 'seed.iso'));
  const fwd = sshForward(s.nics);
  assert.ok(fwd && fwd.host === '127.0.0.1' && fwd.port > 1024, JSON.stringify(s.nics));
  const files = await readdir(dir);
  for (const f of ['seed.iso', 'cloud-init.json', 'spec.json'])
    assert.ok(files.includes(f), files.join(' '));
  assert.ok(!files.includes('id_ed25519'), 'no key made when one was given');
  assert.ok(!files.some((f) => f.startsWith('.seed')), 'no staging left');
  const rec = JSON.parse(await readFile(join(dir, 'cloud-init.json'), 'utf8')) as {
    sshKeys: string[];
    identity: string | null;
  };
  assert.deepEqual(rec.sshKeys, [PUB]);
  assert.equal(rec.identity, null, 'k.pub has no private key beside it');
});

test('run without --ssh-key makes the VM its own key pair; --port HOST:22 is kept as the ssh port', async () => {
  const r = await runCli(['run', 'cloudy', '--name', 'b', '--no-start', '--port', '2222:22'], {
    env: env(),
  });
  assert.equal(r.code, 0, r.stderr);
  const dir = join(home, 'vms', 'b');
  const files = await readdir(dir);
  assert.ok(files.includes('id_ed25519') && files.includes('id_ed25519.pub'), files.join(' '));
  const rec = JSON.parse(await readFile(join(dir, 'cloud-init.json'), 'utf8')) as {
    identity: string;
    generatedKey: string;
  };
  assert.equal(rec.identity, join(dir, 'id_ed25519'));
  assert.equal(rec.generatedKey, join(dir, 'id_ed25519'));
  const s = await spec('b');
  assert.deepEqual(sshForward(s.nics), { host: '127.0.0.1', port: 2222 });
  const forwards = s.nics.flatMap((n) => (n.kind === 'user' ? n.forwards : []));
  assert.equal(forwards.length, 1);
});

test('an image without cloud-init gets no seed; the cloud-init flags are refused on it', async () => {
  const r = await runCli(['run', 'plain', '--name', 'c', '--no-start'], { env: env() });
  assert.equal(r.code, 0, r.stderr);
  const s = await spec('c');
  assert.equal(s.seed, undefined);
  assert.equal(sshForward(s.nics), undefined);
  const bad = await runCli(['run', 'plain', '--name', 'd', '--ssh-key', join(home, 'k.pub')], {
    env: env(),
  });
  assert.equal(bad.code, 2);
  assert.match(
    bad.stderr,
    /^nestvirt: image plain has no cloud-init, so --ssh-key would be ignored\n/,
  );
});

test('bad user-data stops run before the VM exists', async () => {
  const r = await runCli(['run', 'cloudy', '--name', 'e', '--user-data', join(home, 'bad.yaml')], {
    env: env(),
  });
  assert.equal(r.code, 2);
  assert.match(r.stderr, /^nestvirt: user-data \S+bad\.yaml line 2: invalid YAML: .+\n  fix: /);
  assert.ok(!(await readdir(join(home, 'vms'))).includes('e'));
});

test('ssh: clear errors for a missing VM, a stopped one, one without sshd, and --json without --print', async () => {
  const missing = await runCli(['ssh', 'nope'], { env: env() });
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /^nestvirt: no VM named "nope"\n/);
  const stopped = await runCli(['ssh', 'a', '--', 'true'], { env: env() });
  assert.equal(stopped.code, 1);
  assert.equal(
    stopped.stderr,
    'nestvirt: VM a is not running\n  fix: start it: nestvirt start a\n',
  );
  const nosshd = await runCli(['ssh', 'c'], { env: env() });
  assert.equal(nosshd.code, 1);
  assert.match(
    nosshd.stderr,
    /^nestvirt: VM c runs image plain, which has no sshd\n  fix: use `nestvirt exec c -- CMD`/,
  );
  const json = await runCli(['ssh', 'a', '--json'], { env: env() });
  assert.equal(json.code, 2);
  assert.match(json.stderr, /--json goes with --print/);
  const help = await runCli(['ssh', '--help'], { env: env() });
  assert.equal(help.code, 0);
  assert.match(help.stdout, /usage: nestvirt ssh VM/);
  const runHelp = await runCli(['run', '--help'], { env: env() });
  assert.match(runHelp.stdout, /--user-data FILE/);
  assert.match(runHelp.stdout, /--ssh-key FILE/);
});

test('withSshForward adds a loopback forward to 22 only where it belongs', async () => {
  const port = async (): Promise<number> => 40123;
  const user = [{ kind: 'user' as const, forwards: [] }];
  assert.deepEqual(await withSshForward(user, { sshd: true, cloudInit: false }, port), [
    {
      kind: 'user',
      forwards: [{ proto: 'tcp', hostAddr: '127.0.0.1', hostPort: 40123, guestPort: 22 }],
    },
  ]);
  assert.deepEqual(user[0]!.forwards, [], 'input untouched');
  assert.equal(await withSshForward(user, { sshd: false, cloudInit: false }, port), user);
  const tap = [{ kind: 'tap' as const, ifname: 'nv-tap0', mac: '52:54:00:00:00:01' }];
  assert.equal(await withSshForward(tap, { sshd: true, cloudInit: true }, port), tap);
  const has = [
    {
      kind: 'user' as const,
      forwards: [{ proto: 'tcp' as const, hostAddr: '0.0.0.0', hostPort: 2200, guestPort: 22 }],
    },
  ];
  assert.equal(await withSshForward(has, { sshd: true, cloudInit: true }, port), has);
  assert.deepEqual(sshForward(has), { host: '127.0.0.1', port: 2200 });
});

test('run with two NICs gives each a MAC and the seed a network-config (DHCP by MAC)', async () => {
  const r = await runCli(
    ['run', 'cloudy', '--name', 'n2', '--no-start', '--net', 'user', '--net', 'user'],
    { env: env() },
  );
  assert.equal(r.code, 0, r.stderr);
  const s = await spec('n2');
  const macs = s.nics.map((n) => n.mac);
  assert.equal(macs.length, 2);
  for (const m of macs) assert.match(m ?? '', /^52:54:00(:[0-9a-f]{2}){3}$/);
  const out = join(home, 'nc.out');
  await run([
    'xorriso',
    '-osirrox',
    'on',
    '-indev',
    join(home, 'vms', 'n2', 'seed.iso'),
    '-extract',
    '/network-config',
    out,
  ]);
  const nc = await readFile(out, 'utf8');
  for (const m of macs) assert.match(nc, new RegExp(`macaddress: ${m}`));
  assert.match(nc, /dhcp4: true/);
});
