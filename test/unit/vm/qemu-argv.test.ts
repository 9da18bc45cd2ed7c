import { test } from 'node:test';
import assert from 'node:assert/strict';
import { qemuArgv, cpuModel, optEscape, nicArgv } from '../../../src/vm/qemu-argv.js';
import type { QemuFeatures } from '../../../src/vm/features.js';
import type { LaunchSpec } from '../../../src/vm/types.js';
import { parseChain, parseSmbiosOem, type ChainInfo } from '../../../src/host/chain.js';

const features: QemuFeatures = {
  binary: '/usr/bin/qemu-system-x86_64',
  version: '7.2.22',
  versionNum: [7, 2, 22],
  accels: ['tcg', 'kvm'],
  machines: ['q35', 'pc', 'microvm'],
  cpuModels: ['qemu64', 'max', 'host', 'EPYC'],
};
const chain: ChainInfo = {
  level: 2,
  relative: 1,
  chain: [
    { level: 1, relative: 0, name: 'host', runner: 'pvm' },
    { level: 2, relative: 1, name: 'v', runner: 'tcg' },
  ],
};
const base: LaunchSpec = {
  name: 'v',
  accel: 'tcg',
  nested: false,
  cpus: 2,
  memoryMiB: 512,
  kernel: '/img/vmlinux',
  initrd: '/img/initrd.img',
  append: 'console=ttyS0 quiet',
  disks: [],
  nics: [{ kind: 'user', forwards: [] }],
  qmp: '/r/vms/v/qmp.sock',
  qga: '/r/vms/v/qga.sock',
  serial: '/r/vms/v/serial.sock',
  serialLog: '/r/vms/v/serial.log',
  pidfile: '/r/vms/v/qemu.pid',
  chain,
};

/** The value after a flag (first occurrence), or all values of a repeated flag. */
function opt(argv: string[], flag: string): string | undefined {
  const i = argv.indexOf(flag);
  return i >= 0 ? argv[i + 1] : undefined;
}
function opts(argv: string[], flag: string): string[] {
  return argv.flatMap((a, i) => (a === flag ? [argv[i + 1]!] : []));
}

test('cpu model table: accelerator x nested', () => {
  const rows: [LaunchSpec['accel'], boolean, QemuFeatures['cpuModels'], string][] = [
    ['kvm', true, features.cpuModels, 'host'],
    ['kvm', false, features.cpuModels, 'host,-vmx,-svm'],
    ['tcg', true, features.cpuModels, 'max'],
    ['tcg', false, features.cpuModels, 'max,-vmx,-svm'],
    ['tcg', true, ['qemu64'], 'qemu64,+svm,+npt'],
    ['tcg', false, ['qemu64'], 'qemu64,-vmx,-svm'],
  ];
  for (const [accel, nested, models, want] of rows)
    assert.equal(
      cpuModel(accel, nested, { ...features, cpuModels: models }),
      want,
      `${accel} nested=${nested}`,
    );
});

test('qemuArgv: machine, accel, cpu, memory, smp per case', () => {
  const rows: { spec: Partial<LaunchSpec>; accel: string; cpu: string }[] = [
    { spec: { accel: 'tcg' }, accel: 'tcg,thread=multi', cpu: 'max,-vmx,-svm' },
    { spec: { accel: 'tcg', nested: true }, accel: 'tcg,thread=multi', cpu: 'max' },
    { spec: { accel: 'kvm' }, accel: 'kvm', cpu: 'host,-vmx,-svm' },
    { spec: { accel: 'kvm', nested: true }, accel: 'kvm', cpu: 'host' },
  ];
  for (const r of rows) {
    const a = qemuArgv({ ...base, ...r.spec }, features);
    assert.equal(opt(a, '-machine'), 'q35');
    assert.equal(opt(a, '-accel'), r.accel);
    assert.equal(opt(a, '-cpu'), r.cpu);
    assert.equal(opt(a, '-m'), '512M');
    assert.equal(opt(a, '-smp'), '2');
    assert.ok(a.includes('-nodefaults') && a.includes('-no-user-config'));
    assert.equal(opt(a, '-display'), 'none');
  }
});

test('qemuArgv: direct kernel boot, and none without a kernel', () => {
  const a = qemuArgv(base, features);
  assert.equal(opt(a, '-kernel'), '/img/vmlinux');
  assert.equal(opt(a, '-initrd'), '/img/initrd.img');
  assert.equal(opt(a, '-append'), 'console=ttyS0 quiet');
  const { kernel: _k, initrd: _i, append: _a, ...noKernel } = base;
  const b = qemuArgv(
    { ...noKernel, disks: [{ path: '/r/vms/v/disk.qcow2', format: 'qcow2' }] },
    features,
  );
  assert.equal(b.includes('-kernel'), false);
  assert.equal(b.includes('-initrd'), false);
  assert.equal(b.includes('-append'), false);
});

test('qemuArgv: disk overlay boots first; seed is read-only raw', () => {
  const a = qemuArgv(
    {
      ...base,
      disks: [
        { path: '/r/vms/v/disk.qcow2', format: 'qcow2' },
        { path: '/r/vms/v/seed.iso', format: 'raw', readonly: true },
      ],
    },
    features,
  );
  assert.deepEqual(opts(a, '-drive'), [
    'file=/r/vms/v/disk.qcow2,if=none,id=disk0,format=qcow2,discard=unmap',
    'file=/r/vms/v/seed.iso,if=none,id=disk1,format=raw,readonly=on',
  ]);
  const devs = opts(a, '-device');
  assert.ok(devs.includes('virtio-blk-pci,drive=disk0,bootindex=1'));
  assert.ok(devs.includes('virtio-blk-pci,drive=disk1'));
});

test('qemuArgv: paths with commas are escaped for QEMU option syntax', () => {
  assert.equal(optEscape('/a,b/c'), '/a,,b/c');
  const a = qemuArgv(
    { ...base, disks: [{ path: '/x,y/disk.qcow2', format: 'qcow2' }], qmp: '/x,y/qmp.sock' },
    features,
  );
  assert.ok(opts(a, '-drive')[0]!.startsWith('file=/x,,y/disk.qcow2,'));
  assert.ok(opts(a, '-chardev').includes('socket,id=qmp,path=/x,,y/qmp.sock,server=on,wait=off'));
});

test('NIC table: user with forwards, user plain, tap', () => {
  const rows: [Parameters<typeof nicArgv>[0], number, string[]][] = [
    [
      { kind: 'user', forwards: [] },
      0,
      ['-netdev', 'user,id=net0', '-device', 'virtio-net-pci,netdev=net0'],
    ],
    [
      {
        kind: 'user',
        forwards: [
          { proto: 'tcp', hostAddr: '127.0.0.1', hostPort: 2222, guestPort: 22 },
          { proto: 'udp', hostAddr: '0.0.0.0', hostPort: 5353, guestPort: 53 },
        ],
      },
      0,
      [
        '-netdev',
        'user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=udp:0.0.0.0:5353-:53',
        '-device',
        'virtio-net-pci,netdev=net0',
      ],
    ],
    [
      { kind: 'tap', ifname: 'nv-t0', mac: '52:54:00:12:34:56' },
      1,
      [
        '-netdev',
        'tap,id=net1,ifname=nv-t0,script=no,downscript=no',
        '-device',
        'virtio-net-pci,netdev=net1,mac=52:54:00:12:34:56',
      ],
    ],
  ];
  for (const [nic, i, want] of rows) assert.deepEqual(nicArgv(nic, i), want);
  const a = qemuArgv(
    {
      ...base,
      nics: [
        { kind: 'user', forwards: [] },
        { kind: 'tap', ifname: 't', mac: '52:54:00:00:00:01' },
      ],
    },
    features,
  );
  assert.deepEqual(opts(a, '-netdev'), [
    'user,id=net0',
    'tap,id=net1,ifname=t,script=no,downscript=no',
  ]);
  const none = qemuArgv({ ...base, nics: [] }, features);
  assert.equal(none.includes('-netdev'), false);
});

test('qemuArgv: QMP, serial (logged) and guest agent chardevs; pidfile', () => {
  const a = qemuArgv(base, features);
  const ch = opts(a, '-chardev');
  assert.deepEqual(ch, [
    'socket,id=qmp,path=/r/vms/v/qmp.sock,server=on,wait=off',
    'socket,id=serial0,path=/r/vms/v/serial.sock,server=on,wait=off,logfile=/r/vms/v/serial.log,logappend=on',
    'socket,id=qga0,path=/r/vms/v/qga.sock,server=on,wait=off',
  ]);
  assert.equal(opt(a, '-mon'), 'chardev=qmp,mode=control');
  assert.equal(opt(a, '-serial'), 'chardev:serial0');
  assert.ok(
    opts(a, '-device').includes(
      'virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0',
    ),
  );
  assert.equal(opt(a, '-pidfile'), '/r/vms/v/qemu.pid');
  assert.equal(a.includes('-daemonize'), false);
});

test('qemuArgv: the chain goes in fw_cfg and SMBIOS type 11, both decodable', () => {
  const a = qemuArgv(base, features);
  const fw = opt(a, '-fw_cfg')!;
  assert.match(fw, /^name=opt\/org\.nestvirt\/chain,string=/);
  // QEMU turns ",," back into ","
  const json = fw.slice(fw.indexOf('string=') + 7).replace(/,,/g, ',');
  assert.deepEqual(parseChain(json), chain);
  const sm = opt(a, '-smbios')!;
  assert.match(sm, /^type=11,value=org\.nestvirt\.chain=/);
  const raw = Buffer.from(sm.slice('type=11,value='.length) + '\0\0', 'latin1');
  assert.deepEqual(parseSmbiosOem(raw), chain);
});
