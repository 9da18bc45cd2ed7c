import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { nestXml, parseDomainXml, type NestEditOptions } from '../../../src/libvirt/edit.js';
import { diffStat, unifiedDiff } from '../../../src/libvirt/diff.js';
import { UsageError } from '../../../src/errors.js';
import { PROJECT_ROOT } from '../../../src/version.js';

const fixture = (name: string): string =>
  readFileSync(join(PROJECT_ROOT, 'test/fixtures/libvirt', name), 'utf8');

/** Lines removed and added, in order, as `-line` / `+line`. */
function changes(before: string, after: string): string[] {
  return unifiedDiff(before, after, ['a', 'b'], 0)
    .split('\n')
    .filter((l) => /^[-+]/.test(l) && !/^(---|\+\+\+) /.test(l));
}

interface Case {
  name: string;
  xml: string;
  opts: NestEditOptions;
  expect: string[];
}

const cases: Case[] = [
  {
    name: 'Intel host-model, self-closing <cpu/>: opened, vmx required',
    xml: fixture('intel-host-model.xml'),
    opts: { extension: 'vmx' },
    expect: [
      "-  <cpu mode='host-model' check='partial'/>",
      "+  <cpu mode='host-model' check='partial'>",
      "+    <feature policy='require' name='vmx'/>",
      '+  </cpu>',
    ],
  },
  {
    name: 'Intel host-model → host-passthrough',
    xml: fixture('intel-host-model.xml'),
    opts: { extension: 'vmx', mode: 'host-passthrough' },
    expect: [
      "-  <cpu mode='host-model' check='partial'/>",
      "+  <cpu mode='host-passthrough' check='partial'>",
      "+    <feature policy='require' name='vmx'/>",
      '+  </cpu>',
    ],
  },
  {
    name: 'Intel custom with vmx optional: switched to require, never duplicated',
    xml: fixture('intel-optional-vmx.xml'),
    opts: { extension: 'vmx' },
    expect: [
      "-    <feature policy='optional' name='vmx'/>",
      "+    <feature policy='require' name='vmx'/>",
    ],
  },
  {
    name: 'Intel custom with --model: the model text changes in place',
    xml: fixture('intel-optional-vmx.xml'),
    opts: { extension: 'vmx', mode: 'custom', model: 'Cascadelake-Server' },
    expect: [
      "-    <model fallback='allow'>Skylake-Client</model>",
      "-    <feature policy='optional' name='vmx'/>",
      "+    <model fallback='allow'>Cascadelake-Server</model>",
      "+    <feature policy='require' name='vmx'/>",
    ],
  },
  {
    name: "AMD host-passthrough with svm policy='disable' → require",
    xml: fixture('amd-passthrough.xml'),
    opts: { extension: 'svm' },
    expect: [
      "-    <feature policy='disable' name='svm'/>",
      "+    <feature policy='require' name='svm'/>",
    ],
  },
  {
    name: 'AMD without <cpu>: host-passthrough added after </os>',
    xml: fixture('amd-no-cpu.xml'),
    opts: { extension: 'svm', defaultMode: 'host-passthrough' },
    expect: [
      "+  <cpu mode='host-passthrough' check='none'>",
      "+    <feature policy='require' name='svm'/>",
      '+  </cpu>',
    ],
  },
  {
    name: 'AMD without <cpu>, custom model',
    xml: fixture('amd-no-cpu.xml'),
    opts: { extension: 'svm', mode: 'custom', model: 'EPYC' },
    expect: [
      "+  <cpu mode='custom' match='exact' check='partial'>",
      "+    <model fallback='allow'>EPYC</model>",
      "+    <feature policy='require' name='svm'/>",
      '+  </cpu>',
    ],
  },
  {
    name: 'AMD without <cpu>, host-model',
    xml: fixture('amd-no-cpu.xml'),
    opts: { extension: 'svm', mode: 'host-model' },
    expect: [
      "+  <cpu mode='host-model' check='partial'>",
      "+    <feature policy='require' name='svm'/>",
      '+  </cpu>',
    ],
  },
  {
    name: "POWER9: <features> with <nested-hv state='on'/> added",
    xml: fixture('power9.xml'),
    opts: { extension: 'nested-hv' },
    expect: ['+  <features>', "+    <nested-hv state='on'/>", '+  </features>'],
  },
  {
    name: "POWER9: existing <nested-hv state='off'/> switched on",
    xml: fixture('power9.xml').replace(
      '  <cpu ',
      "  <features>\n    <nested-hv state='off'/>\n  </features>\n  <cpu ",
    ),
    opts: { extension: 'nested-hv' },
    expect: ["-    <nested-hv state='off'/>", "+    <nested-hv state='on'/>"],
  },
  {
    name: 'POWER9: <features> without nested-hv gets it as last child',
    xml: fixture('power9.xml').replace(
      '  <cpu ',
      '  <features>\n    <acpi/>\n  </features>\n  <cpu ',
    ),
    opts: { extension: 'nested-hv' },
    expect: ["+    <nested-hv state='on'/>"],
  },
  {
    name: 'TCG qemu64: svm appended after the model',
    xml: fixture('tcg.xml'),
    opts: { extension: 'svm' },
    expect: ["+    <feature policy='require' name='svm'/>"],
  },
  {
    name: 'odd formatting: only the policy value changes, double quotes kept',
    xml: fixture('odd-format.xml'),
    opts: { extension: 'svm' },
    expect: [
      '-\t\t<feature name="svm" policy="optional"/>   <!-- trailing -->',
      '+\t\t<feature name="svm" policy="require"/>   <!-- trailing -->',
    ],
  },
  {
    name: 'odd formatting → host-passthrough: mode set, match and <model> go, comments stay',
    xml: fixture('odd-format.xml'),
    opts: { extension: 'svm', mode: 'host-passthrough' },
    expect: [
      '-\t<cpu mode="custom"  match=\'exact\'>',
      '+\t<cpu mode="host-passthrough">',
      '-\t\t<model fallback="allow">EPYC</model>',
      '-\t\t<feature name="svm" policy="optional"/>   <!-- trailing -->',
      '+\t\t<feature name="svm" policy="require"/>   <!-- trailing -->',
    ],
  },
  {
    name: 'duplicate vmx features: first becomes require, the rest removed',
    xml: fixture('intel-optional-vmx.xml').replace(
      "    <feature policy='disable' name='hle'/>",
      "    <feature policy='require' name='vmx'/>\n    <feature policy='disable' name='hle'/>",
    ),
    opts: { extension: 'vmx' },
    // The optional one becomes require and the second goes: the diff shows one line gone.
    expect: ["-    <feature policy='optional' name='vmx'/>"],
  },
  {
    name: 'empty <cpu></cpu> inline',
    xml: "<domain type='kvm'>\n  <name>x</name>\n  <cpu mode='host-passthrough'></cpu>\n</domain>\n",
    opts: { extension: 'vmx' },
    expect: [
      "-  <cpu mode='host-passthrough'></cpu>",
      "+  <cpu mode='host-passthrough'>",
      "+    <feature policy='require' name='vmx'/>",
      '+  </cpu>',
    ],
  },
  {
    name: '<cpu> with only whitespace and a comment inside',
    xml: "<domain type='kvm'>\n  <name>x</name>\n  <cpu mode='host-model'>\n    <!-- nothing yet -->\n  </cpu>\n</domain>\n",
    opts: { extension: 'svm' },
    expect: ["+    <feature policy='require' name='svm'/>"],
  },
  {
    name: 'self-closing <cpu /> with a space before />',
    xml: "<domain type='kvm'>\n<name>x</name>\n<cpu mode='host-passthrough' />\n</domain>\n",
    opts: { extension: 'svm' },
    expect: [
      "-<cpu mode='host-passthrough' />",
      "+<cpu mode='host-passthrough'>",
      "+  <feature policy='require' name='svm'/>",
      '+</cpu>',
    ],
  },
  {
    name: 'everything on one line: inserted inline',
    xml: "<domain type='qemu'><name>x</name><os><type arch='x86_64'>hvm</type></os></domain>",
    opts: { extension: 'svm', defaultMode: 'maximum' },
    expect: [
      "-<domain type='qemu'><name>x</name><os><type arch='x86_64'>hvm</type></os></domain>",
      "+<domain type='qemu'><name>x</name><os><type arch='x86_64'>hvm</type></os><cpu mode='maximum' check='none'><feature policy='require' name='svm'/></cpu></domain>",
      '\\ No newline at end of file',
      '\\ No newline at end of file',
    ].slice(0, 2),
  },
];

for (const c of cases)
  test(`nestXml: ${c.name}`, () => {
    const r = nestXml(c.xml, c.opts);
    assert.equal(r.changed, true);
    assert.deepEqual(
      changes(c.xml, r.text).map((l) => l.replace(/\n\\ No newline at end of file$/, '')),
      c.expect,
    );
    // The result is well-formed, and nesting it again changes nothing.
    parseDomainXml(r.text);
    const again = nestXml(r.text, {
      ...c.opts,
      defaultMode: c.opts.defaultMode ?? 'host-passthrough',
    });
    assert.equal(again.changed, false, `second edit changed: ${again.notes.join('; ')}`);
    assert.ok(r.notes.length > 0);
    const ext = c.opts.extension === 'nested-hv' ? 'nested-hv' : `name='${c.opts.extension}'`;
    const count =
      r.text.split(ext).length - 1 + (r.text.split(`name="${c.opts.extension}"`).length - 1);
    assert.equal(count, 1, `exactly one ${c.opts.extension} after the edit`);
  });

test('nestXml: outside <cpu>, odd-format.xml is byte-identical (comments, CDATA, prolog)', () => {
  const xml = fixture('odd-format.xml');
  const r = nestXml(xml, { extension: 'svm', mode: 'host-model' });
  const cpuStart = xml.indexOf('\t<cpu mode="custom"');
  const cpuEnd = xml.indexOf('</cpu>') + '</cpu>'.length;
  assert.equal(r.text.slice(0, cpuStart), xml.slice(0, cpuStart));
  assert.ok(r.text.endsWith(xml.slice(cpuEnd)));
  assert.match(r.text, /<!-- <cpu mode='host-model'\/> commented out -->/);
  assert.match(r.text, /<!\[CDATA\[a <cpu mode='custom'> inside CDATA is not an element\]\]>/);
  // host-model keeps the model only as libvirt's fallback: we drop it with match.
  assert.match(r.text, /<cpu mode="host-model">/);
});

test('nestXml: inserted markup follows the document: double quotes, tabs, CRLF', () => {
  const xml =
    '<domain type="kvm">\r\n\t<name>x</name>\r\n\t<os>\r\n\t\t<type arch="x86_64">hvm</type>\r\n\t</os>\r\n</domain>\r\n';
  const r = nestXml(xml, { extension: 'vmx', defaultMode: 'host-passthrough' });
  assert.equal(
    r.text,
    '<domain type="kvm">\r\n\t<name>x</name>\r\n\t<os>\r\n\t\t<type arch="x86_64">hvm</type>\r\n\t</os>\r\n' +
      '\t<cpu mode="host-passthrough" check="none">\r\n\t\t<feature policy="require" name="vmx"/>\r\n\t</cpu>\r\n</domain>\r\n',
  );
});

test('nestXml: a feature without policy already means require', () => {
  const xml =
    "<domain type='kvm'><name>x</name><cpu mode='host-model'><feature name='vmx'/></cpu></domain>\n";
  assert.equal(nestXml(xml, { extension: 'vmx' }).changed, false);
});

test('nestXml: custom mode without a model is a usage error naming --model', () => {
  assert.throws(
    () => nestXml(fixture('amd-no-cpu.xml'), { extension: 'svm', mode: 'custom' }),
    (e: unknown) =>
      e instanceof UsageError && e.code === 'libvirt.missing-model' && /--model/.test(e.hint ?? ''),
  );
});

const invalid: [string, string, RegExp][] = [
  [
    'unclosed element',
    "<domain type='kvm'><name>x</name>",
    /line 1, column \d+: <domain> is not closed/,
  ],
  [
    'mismatched tag',
    '<domain>\n  <cpu></features>\n</domain>',
    /line 2, column 8: end tag <\/features> does not match <cpu>/,
  ],
  ['unquoted attribute', '<domain type=kvm></domain>', /value must be quoted/],
  ['bare ampersand', '<domain><name>a & b</name></domain>', /bare '&'/],
  ['two roots', '<domain/><domain/>', /second root/],
  ['empty', '', /no root element/],
  ['duplicate attribute', "<domain type='kvm' type='qemu'/>", /duplicate attribute type/],
];
for (const [name, xml, re] of invalid)
  test(`parseDomainXml rejects ${name} with one line`, () => {
    assert.throws(
      () => parseDomainXml(xml),
      (e: unknown) =>
        e instanceof UsageError &&
        e.code === 'libvirt.invalid-xml' &&
        re.test(e.message) &&
        !e.message.includes('\n'),
    );
  });

test('parseDomainXml rejects a non-domain root', () => {
  assert.throws(
    () => parseDomainXml('<network><name>default</name></network>'),
    (e: unknown) => e instanceof UsageError && e.code === 'libvirt.not-a-domain',
  );
});

test('diff of a nest edit is minimal: 1 line for a policy switch', () => {
  const xml = fixture('intel-optional-vmx.xml');
  const r = nestXml(xml, { extension: 'vmx' });
  assert.deepEqual(diffStat(xml, r.text), { added: 1, removed: 1 });
});
