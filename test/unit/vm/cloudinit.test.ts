import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, writeFile, chmod, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'yaml';
import {
  checkUserData,
  hostnameFor,
  instanceIdFor,
  parsePublicKeys,
  readPublicKeyFile,
  readUserData,
  renderNetworkConfig,
  renderSeed,
  writeSeedIso,
  generateVmKey,
  loadCloudInitInputs,
  writeCloudInit,
  readCloudInitRecord,
  nicsForCloudInit,
  macFor,
} from '../../../src/vm/cloudinit.js';
import { UsageError } from '../../../src/errors.js';
import { run } from '../../../src/util/exec.js';

// Real keys made by ssh-keygen (throwaway, never used anywhere).
const ED25519 =
  'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFLK30q3vKzlIhBOy6FMQcuKr1jCJqyJZeryL5wwPeyd alice@example';
const ECDSA =
  'ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBKhMKX1Grqlxm11XuEXDHbBYBsXlIxik2PWkmxJ9dfUb1YBHcCHqazG0EnijUSYAIQotp7b9/BdMGSG07esEizE=';

const made: string[] = [];
async function tmp(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'nestvirt-ci-unit-'));
  made.push(d);
  return d;
}
after(async () => {
  for (const d of made) await rm(d, { recursive: true, force: true });
});

function usage(code: string, re: RegExp) {
  return (e: unknown): boolean => {
    assert.ok(e instanceof UsageError, `expected UsageError, got ${String(e)}`);
    assert.equal(e.code, code);
    assert.match(e.message, re);
    assert.ok(!e.message.includes('\n'), `one line: ${e.message}`);
    return true;
  };
}

test('hostnameFor turns VM names into valid hostnames', () => {
  for (const [name, want] of [
    ['web1', 'web1'],
    ['my_vm', 'my-vm'],
    ['db.internal', 'db'],
    ['A-b_C', 'A-b-C'],
    ['x'.repeat(70), 'x'.repeat(63)],
  ])
    assert.equal(hostnameFor(name!), want);
});

test('instanceIdFor is stable for one VM and differs for a re-created one', () => {
  const a = instanceIdFor('web', '2026-01-01T00:00:00.000Z');
  assert.equal(a, instanceIdFor('web', '2026-01-01T00:00:00.000Z'));
  assert.notEqual(a, instanceIdFor('web', '2026-01-01T00:00:01.000Z'));
  assert.match(a, /^nestvirt-web-[0-9a-f]{12}$/);
});

test('renderSeed: meta-data carries id, hostname and keys; user-data is passed unchanged', () => {
  const userData = checkUserData(
    '#cloud-config\nhostname: other\nruncmd:\n  - [touch, /x]\n',
    'u.yaml',
  );
  const files = renderSeed({
    name: 'web_1',
    instanceId: 'iid-1',
    sshKeys: [ED25519, ECDSA],
    userData,
  });
  assert.deepEqual(
    files.map((f) => f.path),
    ['meta-data', 'user-data', 'vendor-data'],
  );
  const meta = parse(files[0]!.content) as Record<string, unknown>;
  assert.deepEqual(meta, {
    'instance-id': 'iid-1',
    'local-hostname': 'web-1',
    'public-keys': [ED25519, ECDSA],
  });
  assert.equal(files[1]!.content, userData.text);
  const vendor = files[2]!.content;
  assert.match(vendor, /^#cloud-config\n/);
  assert.deepEqual(parse(vendor), { ssh_genkeytypes: ['ed25519', 'ecdsa'], ssh_pwauth: false });
});

test('renderSeed without user-data or keys writes an empty cloud-config and no public-keys', () => {
  const files = renderSeed({ name: 'a', instanceId: 'i', sshKeys: [] });
  assert.equal(files[1]!.content, '#cloud-config\n{}\n');
  assert.deepEqual(parse(files[1]!.content), {});
  assert.deepEqual(parse(files[0]!.content), { 'instance-id': 'i', 'local-hostname': 'a' });
});

test('renderSeed adds network-config (v2, matched by MAC) only when NICs need it', () => {
  const files = renderSeed({
    name: 'a',
    instanceId: 'i',
    sshKeys: [],
    nics: [
      {
        mac: '52:54:00:AA:00:01',
        addresses: ['10.77.0.5/24'],
        gateway: '10.77.0.1',
        nameservers: ['10.77.0.1'],
      },
      { mac: '52:54:00:aa:00:02', addresses: 'dhcp' },
    ],
  });
  const nc = files.find((f) => f.path === 'network-config');
  assert.ok(nc);
  assert.deepEqual(parse(nc.content), {
    version: 2,
    ethernets: {
      eth0: {
        match: { macaddress: '52:54:00:aa:00:01' },
        'set-name': 'eth0',
        dhcp4: false,
        addresses: ['10.77.0.5/24'],
        gateway4: '10.77.0.1',
        nameservers: { addresses: ['10.77.0.1'] },
      },
      eth1: { match: { macaddress: '52:54:00:aa:00:02' }, 'set-name': 'eth1', dhcp4: true },
    },
  });
  assert.throws(() => renderNetworkConfig([{ mac: 'nope', addresses: 'dhcp' }]), /bad MAC/);
});

test('checkUserData accepts the three kinds cloud-init reads', () => {
  const cases: [string, string][] = [
    ['#cloud-config\nhostname: x\n', 'cloud-config'],
    ['#cloud-config\r\nhostname: x\r\n', 'cloud-config'],
    ['\uFEFF#cloud-config\npackages: [htop]\n', 'cloud-config'],
    ['#cloud-config\n', 'cloud-config'],
    ['#cloud-config\n# only a comment\n', 'cloud-config'],
    ['#cloud-config\nusers:\n  - name: a\n  - name: a\nusers: []\n', 'cloud-config'],
    ['#!/bin/sh\necho hi\n', 'script'],
    ['#!/usr/bin/env python3\nprint(1)\n', 'script'],
    [
      'Content-Type: multipart/mixed; boundary="XX"\nMIME-Version: 1.0\n\n--XX\nContent-Type: text/cloud-config\n\nhostname: a\n--XX--\n',
      'multipart',
    ],
    ['MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n--b--\n', 'multipart'],
  ];
  for (const [text, kind] of cases)
    assert.equal(checkUserData(text, 'f').kind, kind, JSON.stringify(text));
});

test('checkUserData: YAML errors name the line in one line', () => {
  assert.throws(
    () =>
      checkUserData(
        '#cloud-config\nhostname: a\nruncmd:\n  - [echo, hi\nwrite_files: []\n',
        'ud.yaml',
      ),
    usage('cloudinit.user-data-yaml', /^user-data ud\.yaml line \d+: invalid YAML: /),
  );
  assert.throws(
    () => checkUserData('#cloud-config\nhostname: a\n\tpackages: [x]\n', 'ud.yaml'),
    usage('cloudinit.user-data-yaml', /^user-data ud\.yaml line 3: invalid YAML/),
  );
  assert.throws(
    () => checkUserData('#cloud-config\nkey: "unterminated\n', 'ud'),
    usage('cloudinit.user-data-yaml', /line \d+: invalid YAML: Missing closing "quote$/),
  );
});

test('checkUserData rejects what cloud-init would ignore or choke on', () => {
  assert.throws(
    () => checkUserData('', 'e'),
    usage('cloudinit.user-data-empty', /^user-data e is empty$/),
  );
  assert.throws(() => checkUserData('  \n\n', 'e'), usage('cloudinit.user-data-empty', /empty/));
  assert.throws(
    () => checkUserData('hostname: a\n', 'plain.yaml'),
    usage(
      'cloudinit.user-data-kind',
      /starts with "hostname: a": expected #cloud-config, a #! script or a MIME multipart message/,
    ),
  );
  assert.throws(
    () => checkUserData('#cloud-config\n- a\n- b\n', 'l'),
    usage('cloudinit.user-data-not-mapping', /got a list/),
  );
  assert.throws(
    () => checkUserData('#cloud-config\njust words\n', 'l'),
    usage('cloudinit.user-data-not-mapping', /single value/),
  );
  assert.throws(
    () => checkUserData('#cloud-configx\na: 1\n', 'h'),
    usage('cloudinit.user-data-kind', /expected #cloud-config/),
  );
  assert.throws(
    () => checkUserData('Content-Type: text/plain\n\nhello\n', 'm'),
    usage('cloudinit.user-data-kind', /expected/),
  );
});

test('readUserData: unreadable and binary files are one clear line', async () => {
  const d = await tmp();
  await assert.rejects(
    readUserData(join(d, 'missing.yaml')),
    usage('cloudinit.user-data-unreadable', /missing\.yaml: no such file$/),
  );
  await assert.rejects(
    readUserData(d),
    usage('cloudinit.user-data-unreadable', /it is a directory/),
  );
  await writeFile(join(d, 'bin'), Buffer.from([0x23, 0x21, 0, 1, 2]));
  await assert.rejects(
    readUserData(join(d, 'bin')),
    usage('cloudinit.user-data-binary', /not text/),
  );
  if (process.getuid?.() !== 0) {
    await writeFile(join(d, 'secret'), '#cloud-config\n');
    await chmod(join(d, 'secret'), 0);
    await assert.rejects(
      readUserData(join(d, 'secret')),
      usage('cloudinit.user-data-unreadable', /permission denied/),
    );
  }
  await writeFile(join(d, 'ok.yaml'), '#cloud-config\nhostname: x\n');
  assert.equal((await readUserData(join(d, 'ok.yaml'))).kind, 'cloud-config');
});

test('parsePublicKeys accepts real keys, several per file, comments and blank lines', () => {
  assert.deepEqual(parsePublicKeys(ED25519 + '\n', 'k.pub'), [ED25519]);
  assert.deepEqual(parsePublicKeys(`# mine\n${ED25519}\n\n${ECDSA}\r\n`, 'ak'), [ED25519, ECDSA]);
  assert.deepEqual(parsePublicKeys(`  ${ECDSA}   `, 'k'), [ECDSA]);
});

test('parsePublicKeys: private keys, junk and corrupt blobs are one clear line', () => {
  const priv =
    '-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n';
  assert.throws(
    () => parsePublicKeys(priv, '/home/a/.ssh/id_ed25519'),
    (e: unknown) => {
      usage(
        'cloudinit.ssh-key-private',
        /id_ed25519 is a private key; --ssh-key takes the public key/,
      )(e);
      assert.equal(
        (e as UsageError).hint,
        'pass the public key: --ssh-key /home/a/.ssh/id_ed25519.pub',
      );
      return true;
    },
  );
  assert.throws(
    () => parsePublicKeys('-----BEGIN RSA PRIVATE KEY-----\nx\n', 'k'),
    usage('cloudinit.ssh-key-private', /private key/),
  );
  assert.throws(
    () => parsePublicKeys('hello world', 'k.pub'),
    usage('cloudinit.ssh-key-format', /^k\.pub is not an ssh public key/),
  );
  assert.throws(
    () => parsePublicKeys('ssh-ed25519', 'k.pub'),
    usage('cloudinit.ssh-key-format', /not an ssh public key/),
  );
  assert.throws(
    () => parsePublicKeys('ssh-ed25519 AAAA!!!', 'k.pub'),
    usage('cloudinit.ssh-key-corrupt', /corrupt/),
  );
  // An ECDSA blob labelled ed25519.
  assert.throws(
    () => parsePublicKeys(`ssh-ed25519 ${ECDSA.split(' ')[1]}`, 'k.pub'),
    usage('cloudinit.ssh-key-corrupt', /does not hold a ssh-ed25519 key/),
  );
  assert.throws(
    () => parsePublicKeys(`${ED25519}\nfoo bar\n`, 'ak'),
    usage('cloudinit.ssh-key-format', /^ak line 2 /),
  );
  assert.throws(
    () => parsePublicKeys('# nothing\n\n', 'k.pub'),
    usage('cloudinit.ssh-key-empty', /holds no ssh public key/),
  );
});

test('readPublicKeyFile reads real ssh-keygen output; generateVmKey makes a usable pair', async () => {
  const d = await tmp();
  await assert.rejects(
    readPublicKeyFile(join(d, 'none.pub')),
    usage('cloudinit.ssh-key-unreadable', /none\.pub: no such file/),
  );
  const pub = await generateVmKey(d, 'my_vm', run);
  assert.match(pub, /^ssh-ed25519 AAAA\S+ nestvirt@my-vm$/);
  assert.deepEqual(await readPublicKeyFile(join(d, 'id_ed25519.pub')), [pub]);
  await assert.rejects(
    readPublicKeyFile(join(d, 'id_ed25519')),
    usage('cloudinit.ssh-key-private', /private key/),
  );
  // Again (a re-created VM): replaced, not prompting.
  const again = await generateVmKey(d, 'my_vm', run);
  assert.notEqual(again, pub);
});

test('writeSeedIso makes a cidata ISO atomically and leaves no temporary files', async () => {
  const d = await tmp();
  const files = renderSeed({ name: 'iso', instanceId: 'iid-iso', sshKeys: [ED25519] });
  const iso = await writeSeedIso(files, d, run);
  assert.equal(iso, join(d, 'seed.iso'));
  assert.deepEqual(await readdir(d), ['seed.iso']);
  // The volume id sits at offset 0x8028 of the primary volume descriptor.
  const buf = await readFile(iso);
  assert.equal(buf.subarray(0x8001, 0x8006).toString('latin1'), 'CD001');
  assert.equal(
    buf
      .subarray(0x8028, 0x8028 + 32)
      .toString('latin1')
      .trim(),
    'cidata',
  );
  // Every file is in it, readable back through xorriso.
  const ls = await run(['xorriso', '-indev', iso, '-find', '/', '-type', 'f'], {});
  for (const f of ['meta-data', 'user-data', 'vendor-data'])
    assert.match(ls.stdout, new RegExp(`'/${f}'`));
  const out = join(d, 'meta-data.out');
  await run(['xorriso', '-osirrox', 'on', '-indev', iso, '-extract', '/meta-data', out]);
  assert.equal(await readFile(out, 'utf8'), files[0]!.content);
});

test('writeSeedIso failing leaves the previous seed and no temporary files', async () => {
  const d = await tmp();
  await writeFile(join(d, 'seed.iso'), 'old');
  const failing = async (): Promise<never> => {
    throw new Error('xorriso broke');
  };
  await assert.rejects(
    writeSeedIso(renderSeed({ name: 'a', instanceId: 'i', sshKeys: [] }), d, failing),
    /xorriso broke/,
  );
  assert.deepEqual(await readdir(d), ['seed.iso']);
  assert.equal(await readFile(join(d, 'seed.iso'), 'utf8'), 'old');
});

test('loadCloudInitInputs checks every file before anything exists', async () => {
  const d = await tmp();
  const image = { name: 'deb', features: { cloudInit: true } };
  await writeFile(join(d, 'ud.yaml'), '#cloud-config\nhostname: h\n');
  await writeFile(join(d, 'a.pub'), ED25519 + '\n');
  await writeFile(join(d, 'a'), 'private');
  await writeFile(join(d, 'b.pub'), `${ECDSA}\n${ED25519}\n`);
  const inputs = await loadCloudInitInputs(
    { userData: join(d, 'ud.yaml'), sshKeys: [join(d, 'a.pub'), join(d, 'b.pub')] },
    image,
  );
  assert.ok(inputs);
  assert.equal(inputs.userData?.kind, 'cloud-config');
  assert.deepEqual(inputs.sshKeys, [ED25519, ECDSA]);
  assert.equal(inputs.identity, join(d, 'a'));
  assert.deepEqual(await loadCloudInitInputs({ sshKeys: [] }, image), {
    sshKeys: [],
    keyFiles: [],
  });
  // No cloud-init in the image: nothing to do, and the flags are refused.
  const tiny = { name: 'tiny', features: { cloudInit: false } };
  assert.equal(await loadCloudInitInputs({ sshKeys: [] }, tiny), undefined);
  await assert.rejects(
    loadCloudInitInputs({ userData: join(d, 'ud.yaml'), sshKeys: [] }, tiny),
    usage(
      'cloudinit.image-without-cloud-init',
      /^image tiny has no cloud-init, so --user-data would be ignored$/,
    ),
  );
  await assert.rejects(
    loadCloudInitInputs({ sshKeys: [join(d, 'a.pub')] }, tiny),
    usage('cloudinit.image-without-cloud-init', /--ssh-key would be ignored/),
  );
  await assert.rejects(
    loadCloudInitInputs({ sshKeys: [join(d, 'a')] }, image),
    usage('cloudinit.ssh-key-format', /not an ssh public key/),
  );
});

test('writeCloudInit makes a key when none was given, the seed and its record', async () => {
  const d = await tmp();
  const vm = { name: 'web', dir: d, createdAt: '2026-01-01T00:00:00.000Z' };
  const { seed, record } = await writeCloudInit(vm, {}, { sshKeys: [], keyFiles: [] }, run);
  assert.equal(seed, join(d, 'seed.iso'));
  assert.deepEqual((await readdir(d)).sort(), [
    'cloud-init.json',
    'id_ed25519',
    'id_ed25519.pub',
    'seed.iso',
  ]);
  assert.equal(record.generatedKey, join(d, 'id_ed25519'));
  assert.equal(record.identity, join(d, 'id_ed25519'));
  assert.equal(record.sshUser, 'debian');
  assert.equal(record.instanceId, instanceIdFor('web', vm.createdAt));
  assert.deepEqual(record.sshKeys, [(await readFile(join(d, 'id_ed25519.pub'), 'utf8')).trim()]);
  assert.deepEqual(await readCloudInitRecord(d), record);

  const d2 = await tmp();
  const userData = checkUserData('#!/bin/sh\necho hi\n', 'x.sh');
  const r2 = await writeCloudInit(
    { ...vm, dir: d2 },
    { sshUser: 'root' },
    { sshKeys: [ED25519], keyFiles: ['k.pub'], userData, identity: '/k' },
    run,
  );
  assert.deepEqual((await readdir(d2)).sort(), ['cloud-init.json', 'seed.iso']);
  assert.equal(r2.record.generatedKey, null);
  assert.equal(r2.record.identity, '/k');
  assert.equal(r2.record.sshUser, 'root');
  assert.equal(r2.record.userData?.kind, 'script');
  assert.match(r2.record.userData?.sha256 ?? '', /^[0-9a-f]{64}$/);
  assert.equal(await readCloudInitRecord(await tmp()), undefined);
});

test('nicsForCloudInit: fallback for one user NIC, DHCP by MAC for several', () => {
  const user = [{ kind: 'user' as const, forwards: [] }];
  assert.deepEqual(nicsForCloudInit('web', user), { nics: user, config: undefined });
  assert.deepEqual(nicsForCloudInit('web', []), { nics: [], config: undefined });
  const two = [
    { kind: 'user' as const, forwards: [] as never[] },
    { kind: 'tap' as const, ifname: 'nv-lab-0', mac: '52:54:00:aa:bb:cc' },
  ];
  const r = nicsForCloudInit('web', two);
  assert.equal(r.nics[0]!.mac, macFor('web', 0));
  assert.match(r.nics[0]!.mac!, /^52:54:00(:[0-9a-f]{2}){3}$/);
  assert.equal(r.nics[1], two[1]);
  assert.deepEqual(r.config, [
    { mac: macFor('web', 0), addresses: 'dhcp' },
    { mac: '52:54:00:aa:bb:cc', addresses: 'dhcp' },
  ]);
  assert.notEqual(macFor('web', 0), macFor('web', 1));
  assert.equal(macFor('web', 0), macFor('web', 0));
  // The rendered seed then carries network-config.
  const files = renderSeed({ name: 'web', instanceId: 'i', sshKeys: [], nics: r.config! });
  assert.ok(files.some((f) => f.path === 'network-config'));
});
