import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bridgeName, tapName, macFor, exposeChain, IFNAME_MAX } from '../../../src/net/names.js';
import {
  allocate,
  firstOverlap,
  formatCidr,
  layout,
  parseCidr,
  parseLoose,
  WELL_KNOWN,
  overlaps,
} from '../../../src/net/subnet.js';
import {
  networkRuleset,
  exposureRuleset,
  deleteChains,
  networkChains,
  exposureChains,
  chainsInJson,
} from '../../../src/net/nft.js';
import {
  networkIptRules,
  exposureIptRules,
  insertArgv,
  deleteArgv,
  parseForwardChain,
  forwardFilters,
} from '../../../src/net/iptables.js';
import { dnsmasqArgv, parseLeases, hostLine } from '../../../src/net/dnsmasq.js';
import { parseOn, parsePort, parseProto } from '../../../src/net/expose.js';
import { pickAddress } from '../../../src/net/attach.js';
import type { Exposure, NetSpec } from '../../../src/net/types.js';
import { UsageError } from '../../../src/errors.js';

const spec: NetSpec = {
  name: 'lab',
  bridge: 'nv-lab',
  subnet: '10.200.0.0/24',
  gateway: '10.200.0.1',
  mtu: 1460,
  mtuSource: 'uplink',
  uplink: 'eth0',
  nat: true,
  dhcpRange: ['10.200.0.128', '10.200.0.254'],
  created: '2026-01-01T00:00:00.000Z',
};

test('bridge names: nv-NAME when it fits, else a hash, always ≤ 15 chars', () => {
  const cases: [string, RegExp][] = [
    ['default', /^nv-default$/],
    ['lab', /^nv-lab$/],
    ['abcdefghijkl', /^nv-abcdefghijkl$/],
    ['abcdefghijklm', /^nv-[0-9a-f]{12}$/],
    ['has.dot', /^nv-[0-9a-f]{12}$/],
  ];
  for (const [n, re] of cases) {
    const b = bridgeName(n);
    assert.match(b, re, n);
    assert.ok(b.length <= IFNAME_MAX);
  }
  assert.notEqual(bridgeName('abcdefghijklm'), bridgeName('abcdefghijkln'));
});

test('tap names and MACs are deterministic per VM and tagged', () => {
  for (const vm of ['a', 'web', 'a-very-long-virtual-machine-name-indeed']) {
    assert.match(tapName(vm), /^nvt-[0-9a-f]{11}$/);
    assert.equal(tapName(vm), tapName(vm));
    assert.match(macFor(vm), /^52:54:00(:[0-9a-f]{2}){3}$/);
    assert.equal(macFor(vm), macFor(vm));
  }
  assert.notEqual(tapName('a'), tapName('b'));
  assert.notEqual(macFor('a'), macFor('b'));
});

test('CIDR parsing: good, bad, host bits set', () => {
  assert.deepEqual(formatCidr(parseCidr('10.1.2.0/24')), '10.1.2.0/24');
  for (const bad of ['10.1.2.0', '10.1.2.0/33', '300.1.1.0/24', 'lots', '10.1.2.0/x'])
    assert.throws(
      () => parseCidr(bad),
      (e) => e instanceof UsageError && /IPv4 CIDR/.test(e.message),
      bad,
    );
  assert.throws(
    () => parseCidr('10.1.2.3/24'),
    (e) => e instanceof UsageError && e.hint === 'use 10.1.2.0/24',
  );
  assert.deepEqual(parseLoose('10.0.0.7', 24), { base: parseCidr('10.0.0.0/24').base, prefix: 24 });
  assert.deepEqual(parseLoose('default'), { base: 0, prefix: 0 });
});

test('overlap table', () => {
  const rows: [string, string, boolean][] = [
    ['10.0.0.0/8', '10.200.0.0/24', true],
    ['10.200.0.0/24', '10.200.1.0/24', false],
    ['192.168.122.0/24', '192.168.122.128/25', true],
    ['172.16.0.0/12', '172.17.0.0/16', true],
    ['172.18.0.0/16', '172.17.0.0/16', false],
  ];
  for (const [a, b, want] of rows)
    assert.equal(overlaps(parseCidr(a), parseCidr(b)), want, `${a} ${b}`);
});

test('allocator skips taken subnets, libvirt and Docker defaults; overlap names the culprit', () => {
  const taken = [
    { cidr: parseCidr('10.200.0.0/24'), what: 'nestvirt network "a"' },
    { cidr: parseCidr('10.200.1.0/24'), what: 'the route to 10.200.1.0/24 on eth1' },
    { cidr: parseCidr('0.0.0.0/0'), what: 'default' },
    ...WELL_KNOWN,
  ];
  assert.equal(formatCidr(allocate(taken)!), '10.200.2.0/24');
  assert.equal(
    firstOverlap(parseCidr('192.168.122.0/24'), taken)?.what,
    "libvirt's default network (virbr0)",
  );
  assert.equal(
    firstOverlap(parseCidr('172.17.5.0/24'), taken)?.what,
    "Docker's default bridge (docker0)",
  );
  assert.equal(
    firstOverlap(parseCidr('10.9.0.0/24'), taken),
    undefined,
    'a default route is no overlap',
  );
  assert.equal(
    formatCidr(allocate([{ cidr: parseCidr('10.0.0.0/8'), what: 'vpc' }])!),
    '192.168.200.0/24',
  );
});

test('layout: gateway, reserved half, dynamic half', () => {
  const l = layout(parseCidr('10.200.0.0/24'));
  assert.equal(l.gateway, '10.200.0.1');
  assert.deepEqual(l.dynamic, ['10.200.0.128', '10.200.0.254']);
  assert.throws(() => layout(parseCidr('10.0.0.0/30')), /too small/);
});

test('reserved addresses: stable per VM, unique, outside the dynamic range', () => {
  const used = new Set<string>(['10.200.0.1']);
  const seen = new Set<string>();
  for (let i = 0; i < 100; i++) {
    const ip = pickAddress(spec, `vm${i}`, used);
    assert.ok(!used.has(ip));
    used.add(ip);
    seen.add(ip);
    const last = Number(ip.split('.')[3]);
    assert.ok(last >= 2 && last <= 127, ip);
  }
  assert.equal(seen.size, 100);
  assert.equal(pickAddress(spec, 'web', new Set()), pickAddress(spec, 'web', new Set()));
});

test('network nft ruleset: own table, chains <purpose>.<net>, masquerade only with NAT', () => {
  const text = networkRuleset(spec);
  assert.equal(
    text,
    [
      'add table inet nestvirt',
      'add chain inet nestvirt fwd.lab { type filter hook forward priority filter; policy accept; }',
      'add rule inet nestvirt fwd.lab iifname != "nv-lab" oifname "nv-lab" ct state new ct status & dnat == 0 drop comment "nestvirt:net:lab"',
      'add chain inet nestvirt nat.lab { type nat hook postrouting priority srcnat; policy accept; }',
      'add rule inet nestvirt nat.lab ip saddr 10.200.0.0/24 ip daddr != 10.200.0.0/24 masquerade comment "nestvirt:net:lab"',
      '',
    ].join('\n'),
  );
  assert.deepEqual(networkChains(spec), ['fwd.lab', 'nat.lab']);
  const routed = networkRuleset({ ...spec, nat: false });
  assert.doesNotMatch(routed, /masquerade/);
  assert.deepEqual(networkChains({ ...spec, nat: false }), ['fwd.lab']);
});

const exp: Exposure = {
  vm: 'web',
  port: 8000,
  proto: 'tcp',
  onAddr: '10.0.0.5',
  onPort: 8000,
  target: '10.200.0.17',
  network: 'lab',
  addedAlias: null,
  created: '2026-01-01T00:00:00.000Z',
};

test('exposure nft ruleset: DNAT prerouting+output, hairpin masquerade, forward accept', () => {
  const text = exposureRuleset(exp, spec);
  assert.match(
    text,
    /add chain inet nestvirt pre\.web\.8000-tcp \{ type nat hook prerouting priority dstnat;/,
  );
  assert.match(
    text,
    /add rule inet nestvirt pre\.web\.8000-tcp ip daddr 10\.0\.0\.5 tcp dport 8000 dnat ip to 10\.200\.0\.17:8000 comment "nestvirt:expose:web:8000\/tcp"/,
  );
  assert.match(
    text,
    /add rule inet nestvirt out\.web\.8000-tcp ip daddr 10\.0\.0\.5 tcp dport 8000 dnat ip to 10\.200\.0\.17:8000/,
  );
  assert.match(
    text,
    /add rule inet nestvirt post\.web\.8000-tcp ip saddr 10\.200\.0\.0\/24 ip daddr 10\.200\.0\.17 tcp dport 8000 ct status dnat masquerade/,
  );
  assert.match(
    text,
    /add rule inet nestvirt fwd\.web\.8000-tcp oifname "nv-lab" ip daddr 10\.200\.0\.17 tcp dport 8000 ct status dnat accept/,
  );
  const hostPort = exposureRuleset({ ...exp, onAddr: null, onPort: 8080, proto: 'udp' }, spec);
  assert.match(hostPort, /fib daddr type local udp dport 8080 dnat ip to 10\.200\.0\.17:8000/);
  assert.deepEqual(exposureChains(exp), [
    'pre.web.8000-tcp',
    'out.web.8000-tcp',
    'post.web.8000-tcp',
    'fwd.web.8000-tcp',
  ]);
  assert.equal(exposeChain('pre', 'a', 1, 'udp'), 'pre.a.1-udp');
  assert.equal(
    deleteChains(['a.b']),
    'flush chain inet nestvirt a.b\ndelete chain inet nestvirt a.b\n',
  );
});

test('chains are read back from nft JSON, only from our table', () => {
  const json = JSON.stringify({
    nftables: [
      { metainfo: {} },
      { table: { family: 'inet', name: 'nestvirt', handle: 1 } },
      { chain: { family: 'inet', table: 'nestvirt', name: 'nat.lab', handle: 2 } },
      { chain: { family: 'ip', table: 'filter', name: 'FORWARD', handle: 1 } },
      { chain: { family: 'inet', table: 'mine', name: 'nat.lab', handle: 3 } },
    ],
  });
  assert.deepEqual(chainsInJson(json), ['nat.lab']);
});

test('iptables compat rules: tagged, inserted at the top, deleted by exact spec', () => {
  const [a, b] = networkIptRules(spec);
  assert.deepEqual(insertArgv('iptables', a!), [
    'iptables',
    '-w',
    '-t',
    'filter',
    '-I',
    'FORWARD',
    '1',
    '-i',
    'nv-lab',
    '-m',
    'comment',
    '--comment',
    'nestvirt:net:lab',
    '-j',
    'ACCEPT',
  ]);
  assert.deepEqual(deleteArgv('iptables', b!).slice(0, 6), [
    'iptables',
    '-w',
    '-t',
    'filter',
    '-D',
    'FORWARD',
  ]);
  assert.ok(b!.spec.includes('RELATED,ESTABLISHED'));
  const [e] = exposureIptRules(exp, spec);
  assert.ok(
    e!.spec
      .join(' ')
      .includes(
        '-o nv-lab -d 10.200.0.17/32 -p tcp -m tcp --dport 8000 -m conntrack --ctstate DNAT -m comment --comment nestvirt:expose:web:8000/tcp -j ACCEPT',
      ),
  );
});

test('iptables FORWARD parsing: when does it filter', () => {
  const rows: [string, boolean][] = [
    ['-P FORWARD ACCEPT\n', false],
    ['-P FORWARD DROP\n', true],
    ['-P FORWARD ACCEPT\n-A FORWARD -j DOCKER-USER\n', true],
    [
      '-P FORWARD ACCEPT\n-A FORWARD -i nv-lab -m comment --comment nestvirt:net:lab -j ACCEPT\n',
      false,
    ],
  ];
  for (const [s, want] of rows) assert.equal(forwardFilters(parseForwardChain(s)), want, s);
  assert.equal(parseForwardChain('-P FORWARD DROP\n-A FORWARD -j X\n').rules.length, 1);
});

test('dnsmasq argv: bound to the bridge only, files under the network dir, MTU option', () => {
  const argv = dnsmasqArgv(spec, '/r/nets/lab');
  for (const want of [
    '--conf-file=',
    '--interface=nv-lab',
    '--bind-interfaces',
    '--except-interface=lo',
    '--listen-address=10.200.0.1',
    '--pid-file=/r/nets/lab/dnsmasq.pid',
    '--dhcp-leasefile=/r/nets/lab/dnsmasq.leases',
    '--dhcp-hostsdir=/r/nets/lab/dhcp-hosts',
    '--dhcp-range=10.200.0.128,10.200.0.254,255.255.255.0,1h',
    '--dhcp-option=option:mtu,1460',
    '--domain=lab.nestvirt',
  ])
    assert.ok(argv.includes(want), want);
  assert.equal(argv[0], 'dnsmasq');
});

test('lease file parsing and reservation lines', () => {
  const leases = parseLeases(
    '1700000000 52:54:00:AA:bb:cc 10.200.0.17 web 01:52:54:00:aa:bb:cc\n1700000001 52:54:00:00:00:01 10.200.0.130 * *\ngarbage\n',
  );
  assert.deepEqual(leases, [
    { expiry: 1700000000, mac: '52:54:00:aa:bb:cc', ip: '10.200.0.17', hostname: 'web' },
    { expiry: 1700000001, mac: '52:54:00:00:00:01', ip: '10.200.0.130', hostname: null },
  ]);
  assert.equal(
    hostLine({ vm: 'Web_1', network: 'lab', tap: 't', mac: '52:54:00:01:02:03', ip: '10.200.0.9' }),
    '52:54:00:01:02:03,10.200.0.9,web-1\n',
  );
});

test('expose argument parsing', () => {
  assert.deepEqual(parseOn(undefined, 8000), { addr: null, port: 8000 });
  assert.deepEqual(parseOn('10.0.0.5', 8000), { addr: '10.0.0.5', port: 8000 });
  assert.deepEqual(parseOn('10.0.0.5:80', 8000), { addr: '10.0.0.5', port: 80 });
  assert.deepEqual(parseOn(':8080', 8000), { addr: null, port: 8080 });
  for (const bad of ['10.0.0.500', 'host:80', ':0', ':', '10.0.0.5:99999'])
    assert.throws(
      () => parseOn(bad, 1),
      (e) => e instanceof UsageError && e.code === 'expose.bad-on',
      bad,
    );
  assert.equal(parsePort('22'), 22);
  assert.throws(() => parsePort('0'), /1–65535/);
  assert.throws(() => parsePort('http'), /1–65535/);
  assert.equal(parseProto(undefined), 'tcp');
  assert.equal(parseProto('UDP'), 'udp');
  assert.throws(() => parseProto('sctp'), /tcp or udp/);
});
