import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  hostFromCapabilities,
  isLocalUri,
  libvirtHost,
  readNested,
} from '../../../src/libvirt/host.js';

const caps = (arch: string, vendor: string, feats: string[]): string =>
  `<capabilities>\n  <host>\n    <uuid>u</uuid>\n    <cpu>\n      <arch>${arch}</arch>\n      <model>m</model>\n      <vendor>${vendor}</vendor>\n${feats.map((f) => `      <feature name='${f}'/>\n`).join('')}    </cpu>\n  </host>\n</capabilities>\n`;

test('isLocalUri', () => {
  for (const u of [
    'qemu:///system',
    'qemu:///session',
    'qemu:///system?socket=/tmp/x/libvirt-sock',
    'qemu+unix:///system',
    'qemu://localhost/system',
  ])
    assert.equal(isLocalUri(u), true, u);
  for (const u of ['qemu+ssh://root@host1/system', 'qemu+tcp://10.0.0.2/system'])
    assert.equal(isLocalUri(u), false, u);
});

test('hostFromCapabilities: Intel vmx, AMD svm, POWER', () => {
  assert.deepEqual(hostFromCapabilities(caps('x86_64', 'Intel', ['vmx', 'ss'])), {
    arch: 'x86_64',
    vendor: 'intel',
    extension: 'vmx',
  });
  assert.deepEqual(hostFromCapabilities(caps('x86_64', 'AMD', ['svm'])), {
    arch: 'x86_64',
    vendor: 'amd',
    extension: 'svm',
  });
  assert.deepEqual(hostFromCapabilities(caps('ppc64le', 'IBM', [])), {
    arch: 'ppc64le',
    vendor: 'ibm',
    extension: 'power-hv',
  });
});

test('readNested and libvirtHost read the module parameter through a root tree', async () => {
  const root = await mkdtemp(join(tmpdir(), 'nv-lvhost-'));
  await mkdir(join(root, 'sys/module/kvm_intel/parameters'), { recursive: true });
  await mkdir(join(root, 'proc'), { recursive: true });
  await writeFile(join(root, 'sys/module/kvm_intel/parameters/nested'), 'Y\n');
  await writeFile(
    join(root, 'proc/cpuinfo'),
    'processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu vme vmx ept\n',
  );
  assert.equal(await readNested(root, 'kvm_intel'), true);
  assert.equal(await readNested(root, 'kvm_amd'), null);
  const h = await libvirtHost(caps('x86_64', 'Intel', ['vmx']), 'qemu:///system', root);
  assert.deepEqual(h, {
    arch: 'x86_64',
    vendor: 'intel',
    extension: 'vmx',
    module: 'kvm_intel',
    nested: true,
    local: true,
  });
  await writeFile(join(root, 'sys/module/kvm_intel/parameters/nested'), '0\n');
  assert.equal(
    (await libvirtHost(caps('x86_64', 'Intel', ['vmx']), 'qemu:///system', root)).nested,
    false,
  );
  // A remote URI: /sys here says nothing about that host.
  assert.equal(
    (await libvirtHost(caps('x86_64', 'Intel', ['vmx']), 'qemu+ssh://h/system', root)).nested,
    null,
  );
});
