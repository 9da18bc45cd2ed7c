/**
 * Networks end to end, inside network namespaces this test creates (see
 * test/helpers/netns.ts): real bridges, dnsmasq, nft and iptables; the
 * machine's own network is never touched.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, writeFile, chmod, readdir, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { run } from '../../src/util/exec.js';
import { makeTopology, nsNestvirt, nsRun, snapshot, UPLINK, UPLINK_MTU, type Topology } from '../helpers/netns.js';

let topo: Topology;
let home: string;
let baseline: Awaited<ReturnType<typeof snapshot>>;

const nv = (args: string[], env?: NodeJS.ProcessEnv) => nsNestvirt(topo.host, home, args, { env });

before(async () => {
  topo = await makeTopology();
  home = await mkdtemp(join(tmpdir(), 'nestvirt-net-'));
  // The user's own rules, present before nestvirt: an iptables FORWARD DROP
  // policy (as Docker sets) and an nft table of their own.
  await nsRun(topo.host, ['iptables', '-P', 'FORWARD', 'DROP']);
  await nsRun(topo.host, ['nft', '-f', '-'], {
    input: 'table inet user {\n chain input { type filter hook input priority 0; policy accept; tcp dport 9 counter drop comment "user rule"\n }\n}\n',
  });
  baseline = await snapshot(topo.host);
});

after(async () => {
  await topo?.destroy();
  if (home) await rm(home, { recursive: true, force: true });
});

describe('network lifecycle', () => {
  test('net create: bridge with the uplink MTU, gateway, dnsmasq, rules; user rules kept', async () => {
    const r = await nv(['net', 'create', 'lab', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const { network } = JSON.parse(r.stdout);
    assert.equal(network.bridge, 'nv-lab');
    assert.equal(network.subnet, '10.200.0.0/24');
    assert.equal(network.mtu, UPLINK_MTU);
    assert.equal(network.mtuSource, 'uplink');
    assert.equal(network.uplink, UPLINK);
    assert.deepEqual(network.status, { bridge: true, dnsmasq: true, rules: true, up: true });
    const [br] = JSON.parse((await nsRun(topo.host, ['ip', '-j', 'addr', 'show', 'dev', 'nv-lab'])).stdout);
    assert.equal(br.mtu, 1460, 'bridge MTU follows the 1460 uplink');
    assert.deepEqual(br.addr_info.filter((a: { family: string }) => a.family === 'inet').map((a: { local: string; prefixlen: number }) => `${a.local}/${a.prefixlen}`), ['10.200.0.1/24']);
    const nft = (await nsRun(topo.host, ['nft', 'list', 'table', 'inet', 'nestvirt'])).stdout;
    assert.match(nft, /ip saddr 10\.200\.0\.0\/24 ip daddr != 10\.200\.0\.0\/24 masquerade/);
    const ipt = (await nsRun(topo.host, ['iptables', '-S', 'FORWARD'])).stdout;
    assert.match(ipt, /^-P FORWARD DROP$/m, "the user's policy stays");
    assert.match(ipt, /-A FORWARD -i nv-lab -m comment --comment "nestvirt:net:lab" -j ACCEPT/);
    assert.equal((await nsRun(topo.host, ['cat', '/proc/sys/net/ipv4/ip_forward'])).stdout.trim(), '1');
    assert.match((await nsRun(topo.host, ['nft', 'list', 'table', 'inet', 'user'])).stdout, /tcp dport 9 counter packets 0 bytes 0 drop comment "user rule"/);
    const dns = await nsRun(topo.host, ['ss', '-lnup'], { check: false });
    assert.match(dns.stdout, /10\.200\.0\.1:53 .*dnsmasq/);
  });

  test('overlapping subnets are refused with a free one suggested', async () => {
    const same = await nv(['net', 'create', 'other', '--subnet', '10.200.0.0/24']);
    assert.equal(same.code, 2);
    assert.match(same.stderr, /overlaps nestvirt network "lab" \(10\.200\.0\.0\/24\)/);
    assert.match(same.stderr, /fix: use a free one: --subnet 10\.200\.1\.0\/24/);
    const uplink = await nv(['net', 'create', 'other', '--subnet', '198.51.100.128/25']);
    assert.equal(uplink.code, 2);
    assert.match(uplink.stderr, /overlaps .*198\.51\.100\.0\/24/);
    assert.ok(!existsSync(join(home, 'nets', 'other')));
  });

  test('net doctor: clean, then finds ip_forward off and missing masquerade; net up repairs', async () => {
    const ok = await nv(['net', 'doctor', 'lab', '--json']);
    assert.equal(ok.code, 0, ok.stdout + ok.stderr);
    assert.equal(JSON.parse(ok.stdout).ok, true);
    await nsRun(topo.host, ['sysctl', '-qw', 'net.ipv4.ip_forward=0']);
    await nsRun(topo.host, ['nft', 'delete', 'chain', 'inet', 'nestvirt', 'nat.lab']);
    const bad = await nv(['net', 'doctor', 'lab', '--json']);
    assert.equal(bad.code, 1);
    const ids = JSON.parse(bad.stdout).problems.map((p: { id: string }) => p.id);
    assert.ok(ids.includes('net.ip-forward-off'), ids.join());
    assert.ok(ids.includes('net.masquerade-missing'), ids.join());
    await nsRun(topo.host, ['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    const up = await nv(['net', 'up', 'lab']);
    assert.equal(up.code, 0, up.stderr);
    assert.equal((await nv(['net', 'doctor', 'lab'])).code, 0);
  });

  test('a failed create leaves no bridge, rule or process behind', async () => {
    const bin = await mkdtemp(join(tmpdir(), 'nestvirt-fakebin-'));
    // A dnsmasq that fails, first on PATH: the last step of the plan fails.
    await writeFile(join(bin, 'dnsmasq'), '#!/bin/sh\necho "dnsmasq: failing on purpose" >&2\nexit 3\n');
    await chmod(join(bin, 'dnsmasq'), 0o755);
    const beforeFail = await snapshot(topo.host);
    const r = await nv(['net', 'create', 'broken'], { PATH: `${bin}:${process.env.PATH}` });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /failing on purpose/);
    assert.deepEqual(await snapshot(topo.host), beforeFail);
    assert.ok(!existsSync(join(home, 'nets', 'broken')));
    assert.ok(!(await readdir(join(home, 'ledger'))).some((f) => f.includes('broken')));
    await rm(bin, { recursive: true, force: true });
  });
});

describe('teardown', () => {
  test('net rm: the namespace is exactly as before', async () => {
    const r = await nv(['net', 'rm', 'lab']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(await snapshot(topo.host), baseline);
    assert.deepEqual(await readdir(join(home, 'ledger')), []);
    const pids = (await run(['ip', 'netns', 'pids', topo.host], { check: false })).stdout.trim();
    assert.equal(pids, '', 'no dnsmasq left');
  });
});
