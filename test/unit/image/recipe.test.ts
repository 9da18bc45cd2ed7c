import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  bzImagePayload,
  changedInputs,
  IMAGE_MODULES,
  BOOT_MODULES,
  inputsHash,
  kernelCmdline,
  modName,
  moduleClosure,
  parseLdd,
} from '../../../src/image/recipe.js';
import {
  debFileName,
  parseAptDepends,
  parseAptVersion,
  parseDebFileName,
} from '../../../src/image/kernel.js';

test('modName normalises paths, dashes and compression suffixes', () => {
  const cases: [string, string][] = [
    ['kernel/arch/x86/kvm/kvm-amd.ko', 'kvm_amd'],
    ['kvm_intel', 'kvm_intel'],
    ['kernel/drivers/char/hw_random/virtio-rng.ko.xz', 'virtio_rng'],
    ['9pnet_virtio.ko.zst', '9pnet_virtio'],
  ];
  for (const [i, want] of cases) assert.equal(modName(i), want, i);
});

const ORDER = [
  'kernel/virt/lib/irqbypass.ko',
  'kernel/arch/x86/kvm/kvm.ko',
  'kernel/arch/x86/kvm/kvm-amd.ko',
  'kernel/drivers/crypto/ccp/ccp.ko',
  'kernel/drivers/virtio/virtio.ko',
  'kernel/drivers/virtio/virtio_ring.ko',
  'kernel/drivers/block/virtio_blk.ko',
];
const DEPS: Record<string, string[]> = {
  'kernel/arch/x86/kvm/kvm.ko': ['irqbypass'],
  'kernel/arch/x86/kvm/kvm-amd.ko': ['kvm', 'ccp'],
  'kernel/drivers/block/virtio_blk.ko': ['virtio', 'virtio_ring'],
  'kernel/drivers/virtio/virtio.ko': [],
};

test('moduleClosure: dependencies first, each file once, builtins skipped, unknown names named', () => {
  const table: { want: string[]; builtin?: string[]; out?: string[]; err?: RegExp }[] = [
    {
      want: ['kvm_amd'],
      out: [
        'kernel/virt/lib/irqbypass.ko',
        'kernel/arch/x86/kvm/kvm.ko',
        'kernel/drivers/crypto/ccp/ccp.ko',
        'kernel/arch/x86/kvm/kvm-amd.ko',
      ],
    },
    {
      want: ['kvm-amd', 'kvm'],
      out: [
        'kernel/virt/lib/irqbypass.ko',
        'kernel/arch/x86/kvm/kvm.ko',
        'kernel/drivers/crypto/ccp/ccp.ko',
        'kernel/arch/x86/kvm/kvm-amd.ko',
      ],
    },
    {
      want: ['virtio_blk'],
      out: [
        'kernel/drivers/virtio/virtio.ko',
        'kernel/drivers/virtio/virtio_ring.ko',
        'kernel/drivers/block/virtio_blk.ko',
      ],
    },
    { want: ['dmi_sysfs'], builtin: ['dmi_sysfs'], out: [] },
    { want: ['nope'], err: /kernel module "nope" not found/ },
  ];
  for (const c of table) {
    const f = (): string[] =>
      moduleClosure(c.want, ORDER, (p) => DEPS[p] ?? [], new Set(c.builtin ?? []));
    if (c.err) assert.throws(f, c.err);
    else assert.deepEqual(f(), c.out, c.want.join(','));
  }
});

test('module lists: boot modules are in every image; KVM and 9p/tun/bridge in both', () => {
  for (const name of ['tiny', 'hypervisor'] as const) {
    for (const m of [
      ...BOOT_MODULES,
      'kvm',
      'kvm_amd',
      'kvm_intel',
      'qemu_fw_cfg',
      'ext4',
      'crc32c_generic',
      'tun',
      'bridge',
    ])
      assert.ok(IMAGE_MODULES[name].includes(m), `${name} lacks ${m}`);
  }
});

test('parseLdd keeps resolved paths and the loader, fails on a missing library', () => {
  const out = [
    '\tlinux-vdso.so.1 (0x00007ffd)',
    '\tlibglib-2.0.so.0 => /lib/x86_64-linux-gnu/libglib-2.0.so.0 (0x00007f59e3fe7000)',
    '\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)',
    '\t/lib64/ld-linux-x86-64.so.2 (0x00007f59e426c000)',
  ].join('\n');
  assert.deepEqual(parseLdd(out), [
    '/lib/x86_64-linux-gnu/libglib-2.0.so.0',
    '/lib/x86_64-linux-gnu/libc.so.6',
    '/lib64/ld-linux-x86-64.so.2',
  ]);
  assert.deepEqual(parseLdd('\tstatically linked\n'), []);
  assert.throws(() => parseLdd('\tlibfoo.so.1 => not found\n'), /missing shared library: libfoo/);
});

function fakeBzImage(payload: Buffer, setupSects = 3): Buffer {
  const buf = Buffer.alloc((setupSects + 1) * 512 + 64 + payload.length);
  buf[0x1f1] = setupSects;
  buf.write('HdrS', 0x202, 'latin1');
  buf.writeUInt32LE(64, 0x248);
  buf.writeUInt32LE(payload.length, 0x24c);
  payload.copy(buf, (setupSects + 1) * 512 + 64);
  return buf;
}

test('bzImagePayload finds the compressed kernel and its uncompressed size', () => {
  const size = Buffer.alloc(4);
  size.writeUInt32LE(65906612);
  const table: [Buffer, string][] = [
    [Buffer.concat([Buffer.from('\xfd7zXZ\0', 'latin1'), Buffer.alloc(10), size]), 'xz'],
    [Buffer.concat([Buffer.from([0x1f, 0x8b, 8, 0, 0, 0]), Buffer.alloc(10), size]), 'gzip'],
    [Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0, 0]), Buffer.alloc(10), size]), 'zstd'],
    [Buffer.concat([Buffer.from('abcdef'), Buffer.alloc(10), size]), 'unknown'],
  ];
  for (const [payload, format] of table) {
    const p = bzImagePayload(fakeBzImage(payload));
    assert.equal(p.format, format);
    assert.equal(p.offset, 4 * 512 + 64);
    assert.equal(p.length, payload.length);
    assert.equal(p.uncompressedSize, 65906612);
  }
  assert.throws(() => bzImagePayload(Buffer.alloc(4096)), /not a bzImage/);
  const truncated = fakeBzImage(Buffer.alloc(100)).subarray(0, 2100);
  assert.throws(() => bzImagePayload(truncated), /past the end/);
});

test('inputsHash is stable under key order and changes with any value', () => {
  const a = {
    recipe: '6',
    kernel: 'linux-image-6.1.0-56-amd64=6.1.192-2',
    'deb:busybox-static': '1:1.35.0-4',
  };
  const b = {
    'deb:busybox-static': '1:1.35.0-4',
    kernel: 'linux-image-6.1.0-56-amd64=6.1.192-2',
    recipe: '6',
  };
  assert.equal(inputsHash(a), inputsHash(b));
  assert.match(inputsHash(a), /^[0-9a-f]{32}$/);
  for (const k of Object.keys(a) as (keyof typeof a)[])
    assert.notEqual(inputsHash({ ...a, [k]: a[k] + 'x' }), inputsHash(a), k);
  assert.notEqual(inputsHash({ ...a, nestvirt: '0.1.0+abc' }), inputsHash(a));
  assert.deepEqual(changedInputs(a, { ...a, kernel: 'k2', node: 'v20' }), ['kernel', 'node']);
  assert.deepEqual(changedInputs(undefined, { x: '1' }), ['x']);
});

test('kernelCmdline: serial console, panic reboots, root by label for the hypervisor', () => {
  assert.equal(
    kernelCmdline(),
    'console=ttyS0 8250.nr_uarts=1 pci=noearly cryptomgr.notests panic=-1 quiet',
  );
  assert.equal(
    kernelCmdline({ rootLabel: 'nestvirt-root' }),
    'console=ttyS0 8250.nr_uarts=1 pci=noearly cryptomgr.notests panic=-1 quiet nestvirt.root=LABEL=nestvirt-root',
  );
  assert.equal(
    kernelCmdline({ quiet: false }),
    'console=ttyS0 8250.nr_uarts=1 pci=noearly cryptomgr.notests panic=-1',
  );
});

test('apt output parsing and .deb file names', () => {
  assert.equal(
    parseAptDepends('linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n'),
    'linux-image-6.1.0-56-amd64',
  );
  assert.equal(parseAptDepends('linux-image-amd64\n'), undefined);
  assert.equal(
    parseAptVersion('Package: linux-image-6.1.0-56-amd64\nVersion: 6.1.192-2\nArch: amd64\n'),
    '6.1.192-2',
  );
  const table: [{ name: string; version: string }, string][] = [
    [
      { name: 'linux-image-6.1.0-56-amd64', version: '6.1.192-2' },
      'linux-image-6.1.0-56-amd64_6.1.192-2_amd64.deb',
    ],
    [
      { name: 'linux-image-6.1.0-9-amd64', version: '1:6.1.0-9' },
      'linux-image-6.1.0-9-amd64_1%3a6.1.0-9_amd64.deb',
    ],
  ];
  for (const [pkg, file] of table) {
    assert.equal(debFileName(pkg), file);
    assert.deepEqual(parseDebFileName(file), pkg);
  }
  assert.equal(parseDebFileName('busybox_1.35_amd64.deb'), undefined);
});
