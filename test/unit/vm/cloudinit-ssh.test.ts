import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:net';
import { NotPossibleError } from '../../../src/errors.js';
import {
  sshRetryable,
  guestAddresses,
  pickFreePort,
  resolveSshTarget,
  sshArgv,
  sshUserFor,
  waitForSshBanner,
  type SshVmView,
} from '../../../src/vm/ssh.js';

const base: SshVmView = {
  name: 'web',
  dir: '/state/vms/web',
  running: true,
  image: { name: 'debian-ci', sshd: true, cloudInit: true },
  sshPort: 40022,
  identity: '/state/vms/web/id_ed25519',
};

function notPossible(code: string, re: RegExp) {
  return (e: unknown): boolean => {
    assert.ok(e instanceof NotPossibleError, String(e));
    assert.equal(e.code, code);
    assert.match(e.message, re);
    assert.ok(e.hint);
    return true;
  };
}

test('sshUserFor: recorded user, then image user, then debian for cloud-init images, else root', () => {
  assert.equal(
    sshUserFor({
      user: 'alice',
      image: { name: 'i', sshd: true, cloudInit: true, sshUser: 'ubuntu' },
    }),
    'alice',
  );
  assert.equal(
    sshUserFor({ image: { name: 'i', sshd: true, cloudInit: true, sshUser: 'ubuntu' } }),
    'ubuntu',
  );
  assert.equal(sshUserFor({ image: { name: 'i', sshd: true, cloudInit: true } }), 'debian');
  assert.equal(sshUserFor({ image: { name: 'i', sshd: true, cloudInit: false } }), 'root');
});

test('resolveSshTarget: forwarded port on loopback, or the guest address on a bridge', () => {
  assert.deepEqual(resolveSshTarget(base), {
    host: '127.0.0.1',
    port: 40022,
    user: 'debian',
    knownHosts: '/state/vms/web/known_hosts',
    alias: 'nestvirt-web',
    identity: '/state/vms/web/id_ed25519',
  });
  const bridged = {
    ...base,
    sshPort: undefined,
    network: 'lab',
    addresses: ['10.77.0.5', 'fd00::5'],
  } as SshVmView;
  const t = resolveSshTarget(bridged, { user: 'root' });
  assert.equal(t.host, '10.77.0.5');
  assert.equal(t.port, 22);
  assert.equal(t.user, 'root');
  const noKey = { ...base, identity: undefined } as SshVmView;
  assert.equal('identity' in resolveSshTarget(noKey), false);
});

test('resolveSshTarget: one clear reason when ssh cannot work', () => {
  assert.throws(
    () => resolveSshTarget({ ...base, image: { name: 'tiny', sshd: false, cloudInit: false } }),
    notPossible('ssh.no-sshd', /^VM web runs image tiny, which has no sshd$/),
  );
  assert.throws(
    () => resolveSshTarget({ ...base, running: false }),
    notPossible('ssh.not-running', /^VM web is not running$/),
  );
  assert.throws(
    () =>
      resolveSshTarget({ ...base, sshPort: undefined, network: 'lab', addresses: [] } as SshVmView),
    notPossible('ssh.no-address', /^VM web has no address on network lab yet$/),
  );
  assert.throws(
    () => resolveSshTarget({ ...base, sshPort: undefined } as SshVmView),
    notPossible('ssh.no-port', /no port forwarded to its sshd/),
  );
});

test('sshArgv: per-VM known_hosts, accept-new, the VM key, then the command after --', () => {
  const t = resolveSshTarget(base);
  assert.deepEqual(sshArgv(t, ['hostname']), [
    'ssh',
    '-o',
    'StrictHostKeyChecking=accept-new',
    '-o',
    'UserKnownHostsFile=/state/vms/web/known_hosts',
    '-o',
    'GlobalKnownHostsFile=/dev/null',
    '-o',
    'HostKeyAlias=nestvirt-web',
    '-o',
    'HashKnownHosts=no',
    '-o',
    'CheckHostIP=no',
    '-o',
    'ConnectTimeout=20',
    '-o',
    'LogLevel=ERROR',
    '-o',
    'IdentitiesOnly=yes',
    '-i',
    '/state/vms/web/id_ed25519',
    '-p',
    '40022',
    '-l',
    'debian',
    '127.0.0.1',
    '--',
    'hostname',
  ]);
  const bridged = resolveSshTarget({
    ...base,
    sshPort: undefined,
    identity: undefined,
    addresses: ['10.0.0.2'],
  } as SshVmView);
  const argv = sshArgv(bridged, [], { tty: true, sshOptions: ['ServerAliveInterval=5'] });
  assert.ok(!argv.includes('-p') && !argv.includes('-i') && !argv.includes('--'));
  assert.deepEqual(argv.slice(-6), [
    '-t',
    '-o',
    'ServerAliveInterval=5',
    '-l',
    'debian',
    '10.0.0.2',
  ]);
});

async function listen(
  onConn: (s: import('node:net').Socket) => void,
): Promise<{ server: Server; port: number }> {
  const server = createServer(onConn);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const addr = server.address();
  return { server, port: typeof addr === 'object' && addr ? addr.port : 0 };
}

test('waitForSshBanner: true only when an sshd greets', async () => {
  // Like QEMU's hostfwd before the guest listens: accept, then close at once.
  const closing = await listen((s) => s.destroy());
  const t0 = Date.now();
  assert.equal(await waitForSshBanner('127.0.0.1', closing.port, 1500), false);
  assert.ok(Date.now() - t0 >= 1400);
  closing.server.close();
  // A server that speaks something else.
  const http = await listen((s) => s.end('HTTP/1.1 400 Bad Request\r\n\r\n'));
  assert.equal(await waitForSshBanner('127.0.0.1', http.port, 800), false);
  http.server.close();
  // An sshd's identification string (RFC 4253 section 4.2), in two pieces.
  const sshd = await listen((s) => {
    s.write('SSH-2.0-Open');
    setTimeout(() => s.write('SSH_9.2p1 Debian-2\r\n'), 50);
  });
  assert.equal(await waitForSshBanner('127.0.0.1', sshd.port, 5000), true);
  sshd.server.close();
  // Nothing listening at all.
  const free = await pickFreePort();
  assert.equal(await waitForSshBanner('127.0.0.1', free, 500), false);
});

test('pickFreePort returns a bindable loopback port', async () => {
  const p = await pickFreePort();
  assert.ok(p > 1024 && p < 65536);
  const { server, port } = await listen(() => {});
  assert.notEqual(port, 0);
  server.close();
  const again = createServer();
  await new Promise<void>((resolve, reject) => {
    again.on('error', reject);
    again.listen(p, '127.0.0.1', resolve);
  });
  again.close();
});

test('guestAddresses picks the NIC by MAC, IPv4 first, no loopback or link-local', () => {
  const ifaces = [
    {
      name: 'lo',
      'hardware-address': '00:00:00:00:00:00',
      'ip-addresses': [
        { 'ip-address-type': 'ipv4' as const, 'ip-address': '127.0.0.1', prefix: 8 },
      ],
    },
    {
      name: 'eth0',
      'hardware-address': '52:54:00:12:34:56',
      'ip-addresses': [
        { 'ip-address-type': 'ipv6' as const, 'ip-address': 'fe80::5054:ff:fe12:3456', prefix: 64 },
        { 'ip-address-type': 'ipv6' as const, 'ip-address': 'fd00:77::5', prefix: 64 },
        { 'ip-address-type': 'ipv4' as const, 'ip-address': '10.77.0.5', prefix: 24 },
      ],
    },
    { name: 'eth1', 'hardware-address': '52:54:00:00:00:02' },
  ];
  assert.deepEqual(guestAddresses(ifaces, '52:54:00:12:34:56'), ['10.77.0.5', 'fd00:77::5']);
  assert.deepEqual(guestAddresses(ifaces, '52:54:00:12:34:56'.toUpperCase()), [
    '10.77.0.5',
    'fd00:77::5',
  ]);
  assert.deepEqual(guestAddresses(ifaces, '52:54:00:00:00:02'), []);
  assert.deepEqual(guestAddresses(ifaces, '52:54:00:99:99:99'), []);
});

test('ssh retries only quick ssh failures (255) in a VM that started minutes ago', () => {
  // sshd restarted by cloud-init after the banner answered: retried.
  assert.equal(sshRetryable(255, 300, 40_000), true);
  // The remote command's own exit code, however quick: not retried.
  assert.equal(sshRetryable(1, 300, 40_000), false);
  assert.equal(sshRetryable(0, 300, 40_000), false);
  // A session that lasted, or a VM up for long: not a boot race.
  assert.equal(sshRetryable(255, 60_000, 40_000), false);
  assert.equal(sshRetryable(255, 300, 3 * 3600_000), false);
  // Start time unknown: not retried.
  assert.equal(sshRetryable(255, 300, null), false);
});
