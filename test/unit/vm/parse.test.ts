import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  parseSize,
  parseMemoryMiB,
  parseCpus,
  parsePort,
  parseSeconds,
  checkForwards,
  checkVmName,
  generateName,
} from '../../../src/vm/parse.js';
import { nicsFromFlags } from '../../../src/vm/nics.js';
import { scanDetach } from '../../../src/vm/console.js';
import { checkHostLimits } from '../../../src/vm/lifecycle.js';
import { UsageError, NotPossibleError } from '../../../src/errors.js';
import {
  parseAccels,
  parseCpuModels,
  parseMachines,
  parseVersion,
} from '../../../src/vm/features.js';

test('sizes: units, bare numbers, bad input', () => {
  const ok: [string, number][] = [
    ['512M', 512 * 2 ** 20],
    ['2G', 2 * 2 ** 30],
    ['1.5G', 1.5 * 2 ** 30],
    ['2GiB', 2 * 2 ** 30],
    ['4096k', 4096 * 1024],
    ['10', 10],
  ];
  for (const [t, n] of ok) assert.equal(parseSize('--disk-size', t), n, t);
  for (const bad of ['lots', '', '-1G', '0', '2X', '1e9'])
    assert.throws(
      () => parseSize('--disk-size', bad),
      (e) => e instanceof UsageError && /--disk-size must be/.test(e.message),
      bad,
    );
  assert.equal(parseMemoryMiB('512'), 512);
  assert.equal(parseMemoryMiB('1G'), 1024);
  assert.throws(() => parseMemoryMiB('32M'), /at least 64M/);
  assert.throws(
    () => parseMemoryMiB('lots'),
    /--memory must be a size like 512M or 2G, got "lots"/,
  );
});

test('cpus and seconds', () => {
  assert.equal(parseCpus('4'), 4);
  for (const bad of ['0', '-1', '1.5', 'two', '256'])
    assert.throws(() => parseCpus(bad), /--cpus must be a whole number/);
  assert.equal(parseSeconds('--timeout', '2.5'), 2.5);
  assert.throws(() => parseSeconds('--timeout', 'soon'), /--timeout must be a number of seconds/);
});

test('ports: HOST:GUEST, address, udp, and errors', () => {
  assert.deepEqual(parsePort('2222:22'), {
    proto: 'tcp',
    hostAddr: '127.0.0.1',
    hostPort: 2222,
    guestPort: 22,
  });
  assert.deepEqual(parsePort('0.0.0.0:8080:80/tcp'), {
    proto: 'tcp',
    hostAddr: '0.0.0.0',
    hostPort: 8080,
    guestPort: 80,
  });
  assert.deepEqual(parsePort('5353:53/udp'), {
    proto: 'udp',
    hostAddr: '127.0.0.1',
    hostPort: 5353,
    guestPort: 53,
  });
  for (const bad of ['22', '70000:22', 'a:b', '1.2.3.999:1:2', '1:2/sctp', ':22'])
    assert.throws(() => parsePort(bad), UsageError, bad);
  assert.throws(() => checkForwards([parsePort('1:2'), parsePort('1:3')]), /forwarded twice/);
  checkForwards([parsePort('1:2'), parsePort('1:2/udp')]);
});

test('names: valid, traversal and odd ones refused; generated names are valid', () => {
  assert.equal(checkVmName('web-1'), 'web-1');
  for (const bad of ['../etc', 'a/b', '.hidden', '', 'x y', '-f', 'a'.repeat(64)])
    assert.throws(() => checkVmName(bad), /invalid vm name/);
  for (let i = 0; i < 50; i++) checkVmName(generateName('tiny'));
  assert.equal(
    generateName('tiny', () => Buffer.from([0, 1, 0xab, 0xcd])),
    'tiny-amber-finch-abcd',
  );
});

test('network flags into NICs', async () => {
  assert.deepEqual(await nicsFromFlags([], [], 'v'), [{ kind: 'user', forwards: [] }]);
  assert.deepEqual(await nicsFromFlags(['user'], ['2222:22'], 'v'), [
    {
      kind: 'user',
      forwards: [{ proto: 'tcp', hostAddr: '127.0.0.1', hostPort: 2222, guestPort: 22 }],
    },
  ]);
  assert.deepEqual(await nicsFromFlags(['none'], [], 'v'), []);
  await assert.rejects(
    nicsFromFlags(['none'], ['1:2'], 'v'),
    /--port needs a user-mode network card/,
  );
  await assert.rejects(nicsFromFlags(['lab'], [], 'v'), /--net "lab": no such network/);
  const tap = await nicsFromFlags(['user', 'lab'], [], 'v', async (net, vm, i) => ({
    kind: 'tap',
    ifname: `nv-${net}-${i}`,
    mac: '52:54:00:00:00:01',
  }));
  assert.deepEqual(tap[1], { kind: 'tap', ifname: 'nv-lab-1', mac: '52:54:00:00:00:01' });
  await assert.rejects(
    nicsFromFlags(['lab'], ['1:2'], 'v', async () => ({ kind: 'tap', ifname: 't', mac: 'm' })),
    /add --net user/,
  );
});

test('console detach key splits input', () => {
  assert.deepEqual(scanDetach(Buffer.from('ls\n')), {
    forward: Buffer.from('ls\n'),
    detach: false,
  });
  assert.deepEqual(scanDetach(Buffer.from([0x61, 0x1d, 0x62])), {
    forward: Buffer.from('a'),
    detach: true,
  });
});

test('host limits: memory and cpus beyond the host are not possible (exit 1)', () => {
  const host = { memBytes: 2 * 2 ** 30, cpus: 2 };
  checkHostLimits({ cpus: 2, memoryMiB: 1024 }, host);
  assert.throws(
    () => checkHostLimits({ cpus: 1, memoryMiB: 4096 }, host),
    (e) =>
      e instanceof NotPossibleError &&
      /--memory 4G is more than this host has \(2G\)/.test(e.message),
  );
  assert.throws(
    () => checkHostLimits({ cpus: 3, memoryMiB: 64 }, host),
    /--cpus 3 is more than this host has \(2\)/,
  );
});

test('QEMU feature parsers', () => {
  assert.deepEqual(parseVersion('QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7)'), {
    version: '7.2.22',
    versionNum: [7, 2, 22],
  });
  assert.deepEqual(parseAccels('Accelerators supported in QEMU binary:\ntcg\nkvm\n'), [
    'tcg',
    'kvm',
  ]);
  assert.deepEqual(
    parseMachines(
      'Supported machines are:\nmicrovm              microvm (i386)\nq35                  Standard PC\nnone                 empty machine\n',
    ),
    ['microvm', 'q35', 'none'],
  );
  assert.deepEqual(
    parseCpuModels(
      'Available CPUs:\nx86 486                   (alias)\nx86 max                   Enables all\n\nRecognized CPUID flags:\n  3dnow\n',
    ),
    ['486', 'max'],
  );
});
