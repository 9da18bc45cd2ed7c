import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { domainCpu, pickExtension, verdict } from '../../../src/libvirt/analyze.js';
import type { LibvirtHost } from '../../../src/libvirt/types.js';
import { PROJECT_ROOT } from '../../../src/version.js';

const fixture = (name: string): string =>
  readFileSync(join(PROJECT_ROOT, 'test/fixtures/libvirt', name), 'utf8');

const intelOn: LibvirtHost = {
  arch: 'x86_64',
  vendor: 'intel',
  extension: 'vmx',
  module: 'kvm_intel',
  nested: true,
  local: true,
};
const intelOff: LibvirtHost = { ...intelOn, nested: false };
const amdOn: LibvirtHost = {
  arch: 'x86_64',
  vendor: 'amd',
  extension: 'svm',
  module: 'kvm_amd',
  nested: true,
  local: true,
};
const amdNoKvm: LibvirtHost = {
  arch: 'x86_64',
  vendor: 'amd',
  extension: null,
  module: 'kvm_amd',
  nested: null,
  local: true,
};
const p9On: LibvirtHost = {
  arch: 'ppc64le',
  vendor: 'ibm',
  extension: 'power-hv',
  module: 'kvm_hv',
  nested: true,
  local: true,
};

const cases: [string, string, LibvirtHost, boolean, RegExp][] = [
  [
    'Intel host-model, nested on',
    'intel-host-model.xml',
    intelOn,
    true,
    /host-model includes vmx.*kvm_intel has nested=1/,
  ],
  [
    'Intel host-model, nested off → nestvirt enable',
    'intel-host-model.xml',
    intelOff,
    false,
    /nested=0: run `nestvirt enable`/,
  ],
  [
    'Intel custom, vmx optional',
    'intel-optional-vmx.xml',
    intelOn,
    true,
    /optional.*require is safer/,
  ],
  [
    'AMD passthrough with svm disabled',
    'amd-passthrough.xml',
    amdOn,
    false,
    /disables svm \(policy='disable'\): run `nestvirt libvirt nest x`/,
  ],
  [
    'AMD without <cpu>: qemu64 has svm',
    'amd-no-cpu.xml',
    amdOn,
    true,
    /QEMU's default model qemu64\) includes svm/,
  ],
  [
    'Intel without <cpu>: qemu64 lacks vmx',
    'amd-no-cpu.xml',
    intelOn,
    false,
    /does not include vmx/,
  ],
  ['POWER9 without nested-hv', 'power9.xml', p9On, false, /no <nested-hv state='on'\/>/],
  ['TCG qemu64: host does not matter', 'tcg.xml', amdNoKvm, true, /TCG emulates it/],
  ['odd-format: EPYC with optional svm', 'odd-format.xml', amdOn, true, /optional/],
];

for (const [name, file, host, can, why] of cases)
  test(`verdict: ${name}`, () => {
    const xml = fixture(file);
    const base = domainCpu(xml, null);
    const ext = pickExtension(base.type, base.arch, host);
    const v = verdict('x', domainCpu(xml, ext), ext, host);
    assert.equal(v.canNest, can, v.reason);
    assert.match(v.reason, why);
  });

test('pickExtension: TCG is always svm, KVM follows the host, POWER is nested-hv', () => {
  assert.equal(pickExtension('qemu', 'x86_64', intelOn), 'svm');
  assert.equal(pickExtension('kvm', 'x86_64', intelOn), 'vmx');
  assert.equal(pickExtension('kvm', 'x86_64', amdOn), 'svm');
  assert.equal(pickExtension('kvm', 'ppc64le', p9On), 'nested-hv');
  assert.equal(pickExtension('kvm', 's390x', p9On), 'sie');
  assert.equal(pickExtension('kvm', 'aarch64', p9On), null);
});

test('POWER9 with nested-hv on and kvm_hv nested=1 can nest', () => {
  const xml = fixture('power9.xml').replace(
    '  <cpu ',
    "  <features>\n    <nested-hv state='on'/>\n  </features>\n  <cpu ",
  );
  const v = verdict('p9', domainCpu(xml, 'nested-hv'), 'nested-hv', p9On);
  assert.equal(v.canNest, true, v.reason);
});

test('TCG host-passthrough cannot start; vmx cannot be emulated', () => {
  const xml = fixture('tcg.xml').replace(/<cpu[\s\S]*<\/cpu>/, "<cpu mode='host-passthrough'/>");
  assert.equal(verdict('t', domainCpu(xml, 'svm'), 'svm', amdNoKvm).canNest, false);
  assert.match(
    verdict('t', domainCpu(fixture('tcg.xml'), 'vmx'), 'vmx', intelOn).reason,
    /cannot emulate vmx/,
  );
});
