/**
 * cloud-init end to end: a Debian image bootstrapped (mmdebstrap) in the test set-up
 * (cloud-init, sshd, qemu-guest-agent; cached between runs), booted under
 * TCG by `nestvirt run --user-data --ssh-key --wait`; the NoCloud seed sets
 * the hostname (user-data) and the ssh key (meta-data), and `nestvirt ssh`
 * logs in with the private key beside the given .pub.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { runBin, tempHome, type CliResult } from '../helpers/cli.js';
import { debianImage, installDebianImage, type DebianImage } from '../helpers/debian-image.js';
import { run } from '../../src/util/exec.js';
import { writeJson } from '../../src/state/store.js';

const VM = 'ci1';
const HOST = `berry-${randomBytes(3).toString('hex')}`;
let home: string;
let work: string;
let image: DebianImage;
let spec: Awaited<ReturnType<typeof installDebianImage>>;

function nv(argv: string[], timeoutMs = 120_000): Promise<CliResult> {
  return runBin(argv, { env: { NESTVIRT_HOME: home }, timeoutMs });
}

function say(line: string): void {
  process.stderr.write(`# cloudinit: ${line}\n`);
}

before(
  async () => {
    const t0 = performance.now();
    image = await debianImage({ log: say });
    say(
      `image ${image.build.cached ? 'reused' : 'built'} in ${((performance.now() - t0) / 1000).toFixed(1)} s ` +
        `(build steps: ${Object.entries(image.build.seconds)
          .map(([k, v]) => `${k} ${v} s`)
          .join(', ')})`,
    );
    home = await tempHome('nestvirt-ci-');
    work = await mkdtemp(join(tmpdir(), 'nestvirt-ci-work-'));
    spec = await installDebianImage(home, image);
    // The same files, declared without cloud-init: --user-data must be refused.
    await writeJson(join(home, 'images', 'plain', 'spec.json'), {
      ...spec,
      name: 'plain',
      features: { ...spec.features, cloudInit: false, sshd: false },
    });
    await run([
      'ssh-keygen',
      '-q',
      '-t',
      'ed25519',
      '-N',
      '',
      '-C',
      'ci@test',
      '-f',
      join(work, 'key'),
    ]);
    await writeFile(
      join(work, 'user-data.yaml'),
      [
        '#cloud-config',
        `hostname: ${HOST}`,
        'write_files:',
        '  - path: /etc/nestvirt-ci',
        '    content: "seeded by nestvirt\\n"',
        '',
      ].join('\n'),
    );
  },
  { timeout: 45 * 60_000 },
);

after(async () => {
  if (home) {
    await nv(['rm', '--force', VM]).catch(() => undefined);
    await rm(home, { recursive: true, force: true });
  }
  if (work) await rm(work, { recursive: true, force: true });
});

async function vmsLeft(): Promise<string[]> {
  return readdir(join(home, 'vms')).catch(() => []);
}

test('bad cloud-init input is one line, exit 2, and leaves no VM', async () => {
  await writeFile(
    join(work, 'broken.yaml'),
    '#cloud-config\nhostname: a\nruncmd:\n  - [echo, hi\nusers: []\n',
  );
  await writeFile(join(work, 'notes.txt'), 'hostname: a\n');
  const cases: [string[], RegExp][] = [
    [
      ['--user-data', join(work, 'broken.yaml')],
      /^nestvirt: user-data \S+broken\.yaml line \d+: invalid YAML: /,
    ],
    [
      ['--user-data', join(work, 'notes.txt')],
      /starts with "hostname: a": expected #cloud-config, a #! script or a MIME multipart message/,
    ],
    [
      ['--user-data', join(work, 'missing.yaml')],
      /cannot read user-data \S+missing\.yaml: no such file/,
    ],
    [['--ssh-key', join(work, 'key')], /key is a private key; --ssh-key takes the public key/],
    [['--ssh-key', join(work, 'notes.txt')], /is not an ssh public key/],
  ];
  for (const [flags, re] of cases) {
    const r = await nv(['run', 'debian-ci', '--name', 'bad', ...flags]);
    assert.equal(r.code, 2, `${flags.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, re);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  }
  const priv = await nv(['run', 'debian-ci', '--name', 'bad', '--ssh-key', join(work, 'key')]);
  assert.match(
    priv.stderr,
    new RegExp(`fix: pass the public key: --ssh-key ${join(work, 'key.pub')}`),
  );
  const plain = await nv([
    'run',
    'plain',
    '--name',
    'bad',
    '--user-data',
    join(work, 'user-data.yaml'),
  ]);
  assert.equal(plain.code, 2, plain.stderr);
  assert.match(plain.stderr, /image plain has no cloud-init, so --user-data would be ignored/);
  assert.deepEqual(await vmsLeft(), []);
});

test(
  'run --user-data --ssh-key --wait, then nestvirt ssh: the seed set the hostname and the key',
  { timeout: 30 * 60_000 },
  async () => {
    const t0 = performance.now();
    const r = await nv(
      [
        'run',
        'debian-ci',
        '--name',
        VM,
        '--memory',
        '1G',
        '--cpus',
        '2',
        '--user-data',
        join(work, 'user-data.yaml'),
        '--ssh-key',
        join(work, 'key.pub'),
        '--wait',
        '--wait-timeout',
        '1200',
        '--json',
      ],
      25 * 60_000,
    );
    assert.equal(r.code, 0, r.stderr);
    const info = JSON.parse(r.stdout) as {
      status: string;
      ports: { hostAddr: string; hostPort: number; guestPort: number }[];
      readyMs: number;
    };
    assert.equal(info.status, 'running');
    const fwd = info.ports.find((p) => p.guestPort === 22);
    assert.ok(fwd, `a port forwarded to 22: ${JSON.stringify(info.ports)}`);
    assert.equal(fwd.hostAddr, '127.0.0.1');
    say(`boot to guest agent: ${(info.readyMs / 1000).toFixed(1)} s`);

    // What went into the seed is recorded, and the seed is a cidata ISO.
    const dir = join(home, 'vms', VM);
    const rec = JSON.parse(await readFile(join(dir, 'cloud-init.json'), 'utf8')) as Record<
      string,
      unknown
    >;
    const pub = (await readFile(join(work, 'key.pub'), 'utf8')).trim();
    assert.deepEqual(rec.sshKeys, [pub]);
    assert.equal(rec.identity, join(work, 'key'));
    assert.equal(rec.generatedKey, null);
    assert.equal((rec.userData as { kind: string }).kind, 'cloud-config');
    const iso = await readFile(join(dir, 'seed.iso'));
    assert.equal(
      iso
        .subarray(0x8028, 0x8028 + 32)
        .toString('latin1')
        .trim(),
      'cidata',
    );

    const t1 = performance.now();
    const host = await nv(['ssh', VM, '--timeout', '600', '--', 'hostname'], 11 * 60_000);
    assert.equal(host.code, 0, host.stderr);
    assert.equal(host.stdout.trim(), HOST);
    say(
      `ready to first ssh command: ${((performance.now() - t1) / 1000).toFixed(1)} s; run to ssh: ${((performance.now() - t0) / 1000).toFixed(1)} s`,
    );

    // Logged in as the image's default user, with the key from the seed's meta-data.
    const who = await nv([
      'ssh',
      VM,
      '--',
      'id -un; cat ~/.ssh/authorized_keys; cat /etc/nestvirt-ci',
    ]);
    assert.equal(who.code, 0, who.stderr);
    const [user, ...rest] = who.stdout.trim().split('\n');
    assert.equal(user, 'debian');
    assert.ok(rest.includes(pub), who.stdout);
    assert.ok(rest.includes('seeded by nestvirt'), who.stdout);

    // cloud-init itself reports success (no module failed).
    const status = await nv(['ssh', VM, '--', 'cloud-init status --wait'], 11 * 60_000);
    assert.match(status.stdout, /status: done/, status.stdout + status.stderr);

    // The remote command's exit code comes back; the host key went into the VM's own known_hosts.
    const code = await nv(['ssh', VM, '--', 'exit 7']);
    assert.equal(code.code, 7);
    const known = await readFile(join(dir, 'known_hosts'), 'utf8');
    assert.match(known, new RegExp(`^nestvirt-${VM} ssh-ed25519 AAAA`, 'm'));

    const printed = await nv(['ssh', VM, '--print', '--json']);
    assert.equal(printed.code, 0, printed.stderr);
    const p = JSON.parse(printed.stdout) as {
      host: string;
      port: number;
      user: string;
      identity: string;
      argv: string[];
    };
    assert.deepEqual(
      [p.host, p.port, p.user, p.identity],
      ['127.0.0.1', fwd.hostPort, 'debian', join(work, 'key')],
    );
    assert.deepEqual(p.argv.slice(-3), ['-l', 'debian', '127.0.0.1']);

    // A clean shutdown through the power button (systemd-logind), then one clear line, exit 1.
    const stop = await nv(['stop', VM, '--timeout', '300'], 6 * 60_000);
    assert.equal(stop.code, 0, stop.stderr);
    assert.doesNotMatch(stop.stdout + stop.stderr, /by force/);
    const down = await nv(['ssh', VM, '--', 'true']);
    assert.equal(down.code, 1);
    assert.match(
      down.stderr,
      new RegExp(`^nestvirt: VM ${VM} is not running\\n  fix: start it: nestvirt start ${VM}\\n$`),
    );
  },
);
