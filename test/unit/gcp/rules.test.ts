/**
 * The static rule table against Google's documented restrictions
 * (docs/gcp.md cites them): Intel series nest; E2, AMD, Arm and
 * memory-optimized series do not; the platform must be Haswell or later.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  machineTypeInfo,
  platformSupportsNesting,
  staticFindings,
  zoneFinding,
  SERIES_RULES,
} from '../../../src/cloud/gcp/rules.js';

const SERIES: [string, boolean, string][] = [
  // machine type, nests?, why (the documented rule)
  ['n1-standard-4', true, 'Intel general-purpose'],
  ['n2-standard-8', true, 'Intel general-purpose'],
  ['n2-highmem-16', true, 'Intel general-purpose'],
  ['n4-standard-4', true, 'Intel general-purpose'],
  ['c2-standard-4', true, 'Intel compute-optimized'],
  ['c3-standard-4', true, 'Intel general-purpose'],
  ['c4-standard-4', true, 'Intel general-purpose'],
  ['h3-standard-88', true, 'Intel compute-optimized'],
  ['z3-highmem-88', true, 'Intel storage-optimized'],
  ['a2-highgpu-1g', true, 'Intel accelerator-optimized'],
  ['g2-standard-4', true, 'Intel accelerator-optimized'],
  ['custom-4-8192', true, 'legacy custom type = N1'],
  ['n2-custom-4-8192', true, 'N2 custom'],
  ['e2-standard-4', false, 'E2 is excluded'],
  ['e2-medium', false, 'E2 is excluded'],
  ['n2d-standard-4', false, 'AMD'],
  ['c2d-standard-4', false, 'AMD'],
  ['t2d-standard-4', false, 'AMD'],
  ['c3d-standard-4', false, 'AMD'],
  ['c4d-standard-4', false, 'AMD'],
  ['n4d-standard-4', false, 'AMD'],
  ['t2a-standard-4', false, 'Arm'],
  ['c4a-standard-4', false, 'Arm'],
  ['n4a-standard-4', false, 'Arm'],
  ['m1-megamem-96', false, 'memory-optimized'],
  ['m2-ultramem-208', false, 'memory-optimized'],
  ['m3-megamem-64', false, 'memory-optimized'],
  ['x4-960-metal', false, 'memory-optimized'],
];

for (const [mt, nests, why] of SERIES) {
  test(`series rule: ${mt} ${nests ? 'nests' : 'does not nest'} (${why})`, () => {
    const info = machineTypeInfo(mt);
    assert.ok(info.rule, `${mt} has a rule`);
    assert.equal(info.rule!.nested, nests);
    const f = staticFindings({ machineType: mt, minCpuPlatform: 'Intel Haswell' }).find(
      (x) => x.id === 'series',
    )!;
    if (!nests && !info.metal) {
      assert.equal(f.status, 'fail');
      assert.equal(f.fix, '--machine-type n2-standard-4');
    } else if (!info.metal) assert.equal(f.status, 'ok');
  });
}

test('every non-Intel series in the table is marked as not nesting', () => {
  for (const r of SERIES_RULES) if (r.vendor !== 'intel') assert.equal(r.nested, false, r.series);
  for (const r of SERIES_RULES)
    if (r.family === 'memory-optimized') assert.equal(r.nested, false, r.series);
});

const PLATFORMS: [string, boolean | undefined][] = [
  ['Intel Sandy Bridge', false],
  ['Intel Ivy Bridge', false],
  ['Intel Haswell', true],
  ['intel haswell', true],
  ['Intel Broadwell', true],
  ['Intel Skylake', true],
  ['Intel Cascade Lake', true],
  ['Intel Ice Lake', true],
  ['Intel Sapphire Rapids', true],
  ['Intel Emerald Rapids', true],
  ['AMD Rome', false],
  ['AMD Milan', false],
  ['Ampere Altra', false],
  ['Google Axion', false],
  ['Automatic', undefined],
  ['Intel Pentium', undefined],
];
for (const [p, ok] of PLATFORMS)
  test(`platform rule: ${p} → ${ok}`, () => assert.equal(platformSupportsNesting(p), ok));

test('N1 without --min-cpu-platform warns with the exact fix; with Haswell it does not', () => {
  const w = staticFindings({ machineType: 'n1-standard-2' }).find((f) => f.id === 'platform')!;
  assert.equal(w.status, 'warn');
  assert.equal(w.fix, '--min-cpu-platform "Intel Haswell"');
  assert.equal(
    staticFindings({ machineType: 'n1-standard-2', minCpuPlatform: 'Intel Skylake' }).find(
      (f) => f.id === 'platform',
    )!.status,
    'ok',
  );
  assert.equal(
    staticFindings({ machineType: 'n2-standard-2' }).find((f) => f.id === 'platform'),
    undefined,
  );
  assert.equal(
    staticFindings({ machineType: 'n1-standard-2', minCpuPlatform: 'Intel Ivy Bridge' }).find(
      (f) => f.id === 'platform',
    )!.status,
    'fail',
  );
});

test('unknown series warns; bare metal is noted; no machine type is skipped', () => {
  assert.equal(staticFindings({ machineType: 'q9-standard-4' })[0]!.status, 'warn');
  assert.equal(staticFindings({ machineType: 'c3-highcpu-192-metal' })[0]!.status, 'warn');
  assert.equal(staticFindings({})[0]!.status, 'skip');
  assert.equal(machineTypeInfo('zones/us-central1-a/machineTypes/n2-standard-4').series, 'n2');
  assert.equal(machineTypeInfo('f1-micro').series, 'n1');
});

test('zone rule: needs a Haswell-or-later platform, and the asked minimum', () => {
  assert.equal(zoneFinding('z', ['Intel Sandy Bridge', 'AMD Rome']).status, 'fail');
  assert.equal(zoneFinding('z', ['Intel Ivy Bridge', 'Intel Skylake']).status, 'ok');
  const f = zoneFinding('z', ['Intel Skylake'], 'Intel Ice Lake');
  assert.equal(f.status, 'fail');
  assert.equal(f.fix, '--min-cpu-platform "Intel Skylake"');
});
