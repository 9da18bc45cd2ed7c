/**
 * Networks end to end, inside network namespaces this test creates (see
 * test/helpers/netns.ts): real bridges, dnsmasq, nft and iptables; the
 * machine's own network is never touched.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, writeFile, chmod, readdir, rm } from 'node:fs/promises';
import { seedImage } from '../helpers/images.js';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { run } from '../../src/util/exec.js';
import {
  httpGetIn,
  serveIn,
  ALIAS_IP,
  OUTSIDE_IP,
  makeTopology,
  nsNestvirt,
  nsRun,
  snapshot,
  UPLINK,
  UPLINK_MTU,
  type Topology,
} from '../helpers/netns.js';

let topo: Topology;
let home: string;
let baseline: Awaited<ReturnType<typeof snapshot>>;

const nv = (args: string[], env?: NodeJS.ProcessEnv) => nsNestvirt(topo.host, home, args, { env });

before(async () => {
  topo = await makeTopology();
  home = await mkdtemp(join(tmpdir(), 'nestvirt-net-'));
  // Like /var/lib/nestvirt: others may traverse it, so dnsmasq can drop to nobody.
  await chmod(home, 0o755);
  await seedImage(home, 'tiny');
  // The seeds' alias address on the host's uplink, set up by the user.
  await nsRun(topo.host, ['ip', 'addr', 'add', `${ALIAS_IP}/24`, 'dev', UPLINK]);
  // The user's own rules, present before nestvirt: an iptables FORWARD DROP
  // policy (as Docker sets) and an nft table of their own.
  await nsRun(topo.host, ['iptables', '-P', 'FORWARD', 'DROP']);
  await nsRun(topo.host, ['nft', '-f', '-'], {
    input:
      'table inet user {\n chain input { type filter hook input priority 0; policy accept; tcp dport 9 counter drop comment "user rule"\n }\n}\n',
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
    const [br] = JSON.parse(
      (await nsRun(topo.host, ['ip', '-j', 'addr', 'show', 'dev', 'nv-lab'])).stdout,
    );
    assert.equal(br.mtu, 1460, 'bridge MTU follows the 1460 uplink');
    assert.deepEqual(
      br.addr_info
        .filter((a: { family: string }) => a.family === 'inet')
        .map((a: { local: string; prefixlen: number }) => `${a.local}/${a.prefixlen}`),
      ['10.200.0.1/24'],
    );
    const nft = (await nsRun(topo.host, ['nft', 'list', 'table', 'inet', 'nestvirt'])).stdout;
    assert.match(nft, /ip saddr 10\.200\.0\.0\/24 ip daddr != 10\.200\.0\.0\/24 masquerade/);
    const ipt = (await nsRun(topo.host, ['iptables', '-S', 'FORWARD'])).stdout;
    assert.match(ipt, /^-P FORWARD DROP$/m, "the user's policy stays");
    assert.match(ipt, /-A FORWARD -i nv-lab -m comment --comment "nestvirt:net:lab" -j ACCEPT/);
    assert.equal(
      (await nsRun(topo.host, ['cat', '/proc/sys/net/ipv4/ip_forward'])).stdout.trim(),
      '1',
    );
    assert.match(
      (await nsRun(topo.host, ['nft', 'list', 'table', 'inet', 'user'])).stdout,
      /tcp dport 9 counter packets 0 bytes 0 drop comment "user rule"/,
    );
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
    // iptables FORWARD (policy DROP) without nestvirt's accept: reported with the exact command, which works.
    await nsRun(topo.host, [
      'iptables',
      '-D',
      'FORWARD',
      '-i',
      'nv-lab',
      '-m',
      'comment',
      '--comment',
      'nestvirt:net:lab',
      '-j',
      'ACCEPT',
    ]);
    // Another nft table dropping forwarded packets by policy.
    await nsRun(topo.host, ['nft', '-f', '-'], {
      input:
        'add table inet userfw\nadd chain inet userfw userforward { type filter hook forward priority 0; policy drop; }\n',
    });
    const drop = JSON.parse((await nv(['net', 'doctor', 'lab', '--json'])).stdout) as {
      problems: Array<{ id: string; fix: string }>;
    };
    const fwd = drop.problems.find((p) => p.id === 'net.forward-drop');
    assert.ok(fwd, JSON.stringify(drop.problems));
    assert.ok(drop.problems.some((p) => p.id === 'net.nft-forward-drop'));
    await nsRun(topo.host, ['sh', '-c', fwd.fix]);
    await nsRun(topo.host, ['nft', 'delete', 'table', 'inet', 'userfw']);
    const up = await nv(['net', 'up', 'lab']);
    assert.equal(up.code, 0, up.stderr);
    assert.equal((await nv(['net', 'doctor', 'lab'])).code, 0);
  });

  test('a failed create leaves no bridge, rule or process behind', async () => {
    const bin = await mkdtemp(join(tmpdir(), 'nestvirt-fakebin-'));
    // A dnsmasq that fails, first on PATH: the last step of the plan fails.
    await writeFile(
      join(bin, 'dnsmasq'),
      '#!/bin/sh\necho "dnsmasq: failing on purpose" >&2\nexit 3\n',
    );
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

const fetchIn = httpGetIn;
// In the guest: busybox wget's -T crashes (busybox 1.35), so `timeout` bounds it.

/** Retries until fn returns non-null (guests under TCG are slow). */
async function eventually<T>(what: string, fn: () => Promise<T | null>, ms = 90_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== null) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 1000));
  }
}

const PAGE = 'hello from web, a nested VM\n';
let webIp = '';

describe('VMs on the network (tiny under TCG)', () => {
  test('run --net lab: two VMs get their reserved addresses by DHCP; ls/info show them', async () => {
    // One after the other: two TCG guests booting at once on 2 shared cores is slower than in turn.
    const web = await nv([
      'run',
      'tiny',
      '--name',
      'web',
      '--net',
      'lab',
      '--wait',
      '--wait-timeout',
      '600',
    ]);
    assert.equal(web.code, 0, web.stderr);
    const client = await nv([
      'run',
      'tiny',
      '--name',
      'client',
      '--net',
      'lab',
      '--wait',
      '--wait-timeout',
      '600',
    ]);
    assert.equal(web.code, 0, web.stderr);
    assert.equal(client.code, 0, client.stderr);
    const links = JSON.parse(
      (await nsRun(topo.host, ['ip', '-j', 'link', 'show', 'master', 'nv-lab'])).stdout,
    ) as Array<{ ifname: string; mtu: number }>;
    assert.equal(links.length, 2);
    for (const l of links) {
      assert.match(l.ifname, /^nvt-[0-9a-f]{11}$/);
      assert.equal(l.mtu, UPLINK_MTU);
    }
    const leased = await eventually('both DHCP leases', async () => {
      const ls = JSON.parse((await nv(['ls', '--json'])).stdout) as {
        vms: Array<{
          name: string;
          addresses: Array<{ ip: string; source: string; network: string }>;
        }>;
      };
      const all = ls.vms.map((v) => v.addresses[0]);
      return all.length === 2 && all.every((a) => a?.source === 'lease') ? ls : null;
    });
    for (const v of leased.vms) {
      const nic = JSON.parse((await nv(['info', v.name, '--json'])).stdout);
      assert.equal(nic.addresses[0].ip, v.addresses[0]!.ip);
      assert.equal(nic.addresses[0].network, 'lab');
      assert.match(
        nic.addresses[0].ip,
        /^10\.200\.0\.([2-9]|[1-9][0-9]|1[01][0-9]|12[0-7])$/,
        'the reservation, not the dynamic range',
      );
    }
    webIp = leased.vms.find((v) => v.name === 'web')!.addresses[0]!.ip;
    const netls = JSON.parse((await nv(['net', 'ls', '--json'])).stdout);
    assert.deepEqual(netls.networks[0].vms.map((v: { vm: string }) => v.vm).sort(), [
      'client',
      'web',
    ]);
  });

  test('the host reaches the VM; the VM reaches outside through NAT despite the FORWARD DROP policy', async () => {
    const serve = await nv([
      'exec',
      'web',
      '--',
      'sh',
      '-c',
      `mkdir -p /www && printf '${PAGE.replace(/\n/g, '\\n')}' > /www/index.html && busybox httpd -p 8000 -h /www`,
    ]);
    assert.equal(serve.code, 0, serve.stderr);
    assert.equal(
      await eventually('web from the host', () => fetchIn(topo.host, `http://${webIp}:8000/`)),
      PAGE,
    );
    // A server on the outside machine; the client VM fetches it (masquerade).
    await serveIn(topo.outside, 8080, 'outside-page\n');
    const out = await nv([
      'exec',
      'client',
      '--',
      'timeout',
      '20',
      'wget',
      '-q',
      '-O',
      '-',
      `http://${OUTSIDE_IP}:8080/`,
    ]);
    assert.equal(out.code, 0, out.stderr + out.stdout);
    assert.match(out.stdout, /outside-page/);
  });

  test('expose --on ALIAS: reachable from outside, from the host and (hairpin) from the other VM', async () => {
    const r = await nv(['expose', 'web', '8000', '--on', ALIAS_IP, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const { exposure } = JSON.parse(r.stdout);
    assert.deepEqual(
      { ...exposure, created: undefined },
      {
        vm: 'web',
        port: 8000,
        proto: 'tcp',
        onAddr: ALIAS_IP,
        onPort: 8000,
        target: webIp,
        network: 'lab',
        addedAlias: null,
        created: undefined,
      },
    );
    assert.equal(
      await fetchIn(topo.outside, `http://${ALIAS_IP}:8000/`),
      PAGE,
      'from the outside machine',
    );
    assert.equal(
      await fetchIn(topo.host, `http://${ALIAS_IP}:8000/`),
      PAGE,
      'from the host itself',
    );
    const direct = await nv([
      'exec',
      'client',
      '--',
      'timeout',
      '20',
      'wget',
      '-q',
      '-O',
      '-',
      `http://${webIp}:8000/`,
    ]);
    assert.equal(direct.stdout, PAGE, 'VM to VM on the bridge');
    const hair = await nv([
      'exec',
      'client',
      '--',
      'timeout',
      '20',
      'wget',
      '-q',
      '-O',
      '-',
      `http://${ALIAS_IP}:8000/`,
    ]);
    assert.equal(hair.stdout, PAGE, 'VM to VM through the alias (hairpin)');
    const ipt = (await nsRun(topo.host, ['iptables', '-S', 'FORWARD'])).stdout;
    assert.match(ipt, /nestvirt:expose:web:8000\/tcp/);
    assert.equal((await nv(['net', 'doctor', 'lab'])).code, 0);
    const dup = await nv(['expose', 'web', '8000']);
    assert.equal(dup.code, 2);
    assert.match(dup.stderr, /already exposed/);
  });

  test('--add-alias adds the address and rm takes exposure and alias with the VM; stop removes the tap', async () => {
    const r = await nv(['expose', 'client', '8000', '--on', '198.51.100.9:9000', '--add-alias']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      (await nsRun(topo.host, ['ip', '-4', 'addr', 'show', 'dev', UPLINK])).stdout,
      /198\.51\.100\.9\/24/,
    );
    const tapsBefore = (await nsRun(topo.host, ['ip', '-j', 'link', 'show', 'master', 'nv-lab']))
      .stdout;
    assert.equal(JSON.parse(tapsBefore).length, 2);
    assert.equal((await nv(['stop', 'client', '--force'])).code, 0);
    assert.equal(
      JSON.parse((await nsRun(topo.host, ['ip', '-j', 'link', 'show', 'master', 'nv-lab'])).stdout)
        .length,
      1,
      'stopped VM has no tap',
    );
    assert.equal((await nv(['rm', 'client'])).code, 0);
    assert.doesNotMatch(
      (await nsRun(topo.host, ['ip', '-4', 'addr', 'show', 'dev', UPLINK])).stdout,
      /198\.51\.100\.9/,
    );
    assert.doesNotMatch(
      (await nsRun(topo.host, ['nft', 'list', 'table', 'inet', 'nestvirt'])).stdout,
      /client/,
    );
  });

  test('run --net default creates the default network on first use, with a free subnet', async () => {
    const r = await nv(['run', 'tiny', '--name', 'd', '--net', 'default']);
    assert.equal(r.code, 0, r.stderr);
    const nets = JSON.parse((await nv(['net', 'ls', '--json'])).stdout).networks as Array<{
      name: string;
      subnet: string;
      mtu: number;
      status: { up: boolean };
      vms: { vm: string }[];
    }>;
    const def = nets.find((n) => n.name === 'default');
    assert.ok(def, 'default network exists');
    assert.equal(def.subnet, '10.200.1.0/24', 'next free subnet after lab');
    assert.equal(def.mtu, UPLINK_MTU);
    assert.equal(def.status.up, true);
    assert.deepEqual(
      def.vms.map((v) => v.vm),
      ['d'],
    );
    assert.equal((await nv(['rm', '--force', 'd'])).code, 0);
    assert.equal((await nv(['net', 'rm', 'default'])).code, 0);
  });

  test('net rm refuses while a VM is on the network; unexpose removes exactly its rules', async () => {
    const busy = await nv(['net', 'rm', 'lab']);
    assert.equal(busy.code, 2);
    assert.match(busy.stderr, /used by VM\(s\): web/);
    const u = await nv(['unexpose', 'web', '8000']);
    assert.equal(u.code, 0, u.stderr);
    assert.equal(await fetchIn(topo.outside, `http://${ALIAS_IP}:8000/`), null);
    assert.doesNotMatch((await nsRun(topo.host, ['iptables', '-S', 'FORWARD'])).stdout, /expose/);
    assert.equal((await nv(['rm', '--force', 'web'])).code, 0);
  });
});

describe('teardown', () => {
  test('net rm: the namespace is exactly as before', async () => {
    // VMs an earlier failed test may have left (a passing run removed them already).
    await nv(['rm', '--force', 'web', 'client', 'd']);
    await nv(['net', 'rm', 'default']);
    const r = await nv(['net', 'rm', 'lab']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(await snapshot(topo.host), baseline);
    assert.deepEqual(await readdir(join(home, 'ledger')), []);
    const pids = (await run(['ip', 'netns', 'pids', topo.host], { check: false })).stdout.trim();
    assert.equal(pids, '', 'no dnsmasq left');
  });
});
