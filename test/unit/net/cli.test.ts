import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runCli, tempHome } from '../../helpers/cli.js';
import type { Runner } from '../../../src/util/exec.js';

/** A runner standing in for `ip`/`nft` on a host with one uplink and nothing else; records calls. */
function fakeHost(calls: string[][] = []): Runner {
  return async (argv) => {
    calls.push(argv);
    const s = argv.join(' ');
    let stdout = '';
    let code = 0;
    if (s === 'ip -j -4 route show default')
      stdout = JSON.stringify([{ dst: 'default', gateway: '10.0.0.1', dev: 'eth0' }]);
    else if (s === 'ip -j -4 route show table all')
      stdout = JSON.stringify([
        { dst: '10.0.0.0/24', dev: 'eth0' },
        { dst: 'default', dev: 'eth0' },
      ]);
    else if (s === 'ip -j -4 addr show')
      stdout = JSON.stringify([
        { ifname: 'eth0', addr_info: [{ family: 'inet', local: '10.0.0.2', prefixlen: 24 }] },
      ]);
    else if (s === 'ip -j -d link show dev eth0')
      stdout = JSON.stringify([{ ifname: 'eth0', mtu: 1460 }]);
    else if (s.startsWith('ip -j -d link show dev')) code = 1;
    else code = 1;
    return { argv, code, signal: null, stdout, stderr: '', timedOut: false };
  };
}

async function cli(argv: string[], opts: { uid?: number; calls?: string[][] } = {}) {
  const home = await tempHome();
  return runCli(argv, {
    env: { NESTVIRT_HOME: home },
    runner: fakeHost(opts.calls),
    uid: opts.uid ?? 0,
  });
}

test('bad input: one line, exit 2, nothing run on the host', async () => {
  const rows: [string[], RegExp][] = [
    [['net', 'create', '1bad'], /invalid net name "1bad"/],
    [
      ['net', 'create', 'lab', '--subnet', 'lots'],
      /--subnet must be an IPv4 CIDR like 10\.200\.0\.0\/24, got "lots"/,
    ],
    [['net', 'create', 'lab', '--subnet', '10.1.2.3/24'], /has host bits set/],
    [['net', 'create', 'lab', '--mtu', 'big'], /--mtu must be an integer/],
    [['net', 'create', 'user'], /"user" names QEMU user-mode networking/],
    [['net', 'rm', 'nope'], /no network named "nope"/],
    [['net', 'doctor', 'nope'], /no network named "nope"/],
    [['expose', 'web', 'http'], /PORT must be 1–65535, got "http"/],
    [['expose', 'web', '80', '--proto', 'sctp'], /--proto must be tcp or udp/],
    [['expose', 'web', '80', '--on', 'example.org'], /--on must be ADDR, ADDR:PORT or :PORT/],
    [['expose', 'web', '80'], /no VM named "web"/],
    [['unexpose', 'web', '80'], /port 80\/tcp of VM web is not exposed/],
  ];
  for (const [argv, re] of rows) {
    const calls: string[][] = [];
    const r = await cli(argv, { calls });
    assert.equal(r.code, 2, `${argv.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, re, argv.join(' '));
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    assert.ok(
      !calls.some((c) => /^(ip (link|addr|tuntap) (add|del|set)|nft -f|dnsmasq)/.test(c.join(' '))),
      'no host change',
    );
  }
});

test('a subnet overlapping a route is refused with a free one suggested', async () => {
  const r = await cli(['net', 'create', 'lab', '--subnet', '10.0.0.0/16']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /subnet 10\.0\.0\.0\/16 overlaps the route to 10\.0\.0\.0\/24 on eth0/);
  assert.match(r.stderr, /fix: use a free one: --subnet 10\.200\.0\.0\/16/);
  const lib = await cli(['net', 'create', 'lab', '--subnet', '192.168.122.0/24']);
  assert.match(lib.stderr, /libvirt's default network \(virbr0\)/);
});

test('not root: bridge networks are refused in one line pointing at --net user', async () => {
  const r = await cli(['net', 'create', 'lab'], { uid: 1000 });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /bridge networks need root \(CAP_NET_ADMIN\)/);
  assert.match(r.stderr, /--net user --port HOST:GUEST/);
});

test('net ls on an empty root, as text and JSON', async () => {
  const r = await cli(['net', 'ls', '--json']);
  assert.equal(r.code, 0);
  assert.deepEqual(JSON.parse(r.stdout), { networks: [] });
  const t = await cli(['expose', 'ls', '--json']);
  assert.deepEqual(JSON.parse(t.stdout), { exposures: [] });
});

test('help lists the net subcommands and expose examples', async () => {
  const r = await cli(['net', '--help']);
  assert.match(r.stdout, /create[\s\S]*ls[\s\S]*rm[\s\S]*up[\s\S]*doctor/);
  const e = await cli(['expose', '--help']);
  assert.match(e.stdout, /--on ADDR\[:PORT\]/);
  assert.match(e.stdout, /nestvirt expose web 8000 --on 10\.0\.0\.5/);
});

test('run --net NAME without root: one line pointing at --net user', async () => {
  const r = await cli(['run', 'tiny', '--name', 'x', '--net', 'lab', '--no-start'], { uid: 1000 });
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /--net lab needs root \(CAP_NET_ADMIN\) for its tap and bridge/);
  assert.match(
    r.stderr,
    /fix: use QEMU user-mode networking instead: --net user --port HOST:GUEST/,
  );
});

test('run --net of an unknown network is refused; default is allowed (made on first start)', async () => {
  const r = await cli(['run', 'tiny', '--name', 'x', '--net', 'nope', '--no-start']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /--net nope: no such network/);
});
