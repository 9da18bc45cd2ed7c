import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { writeFile, readFile } from 'node:fs/promises';
import { acquire } from '../../src/state/lock.js';
import { writeJson, readJson, checkName } from '../../src/state/store.js';
import { applyPlan, planScript, type Plan } from '../../src/host/plan.js';
import { tempHome } from '../helpers/cli.js';

test('lock: second acquirer is busy, stale lock is taken over', async () => {
  const d = await tempHome();
  const p = join(d, 'x.lock');
  const l = await acquire(p, 'vm x');
  await assert.rejects(acquire(p, 'vm x'), /vm x is busy: pid \d+/);
  await l.release();
  await writeFile(p, JSON.stringify({ pid: 2 ** 22 + 12345, cmd: 'dead' }));
  const l2 = await acquire(p, 'vm x');
  assert.equal(JSON.parse(await readFile(p, 'utf8')).pid, process.pid);
  await l2.release();
});

test('writeJson/readJson round trip; missing file is undefined', async () => {
  const d = await tempHome();
  await writeJson(join(d, 'a', 'b.json'), { x: 1 });
  assert.deepEqual(await readJson(join(d, 'a', 'b.json')), { x: 1 });
  assert.equal(await readJson(join(d, 'nope.json')), undefined);
});

test('checkName rejects traversal and odd names', () => {
  for (const bad of ['../x', 'a/b', '', '-x', 'x'.repeat(64), 'a b'])
    assert.throws(() => checkName('vm', bad), /invalid vm name/);
  assert.equal(checkName('vm', 'web-1.test_2'), 'web-1.test_2');
});

test('applyPlan reverts done steps in reverse on failure', async () => {
  const log: string[] = [];
  const step = (n: string, fail = false) => ({
    title: n,
    shell: [`echo ${n}`],
    apply: async () => {
      if (fail) throw new Error(`${n} failed`);
      log.push(`+${n}`);
    },
    revert: async () => void log.push(`-${n}`),
  });
  const plan: Plan = { title: 't', steps: [step('a'), step('b'), step('c', true)], notes: [] };
  await assert.rejects(applyPlan(plan), /c failed/);
  assert.deepEqual(log, ['+a', '+b', '-b', '-a']);
  assert.match(planScript(plan), /^#!\/bin\/sh\n[\s\S]*set -eu\n[\s\S]*echo a\n/);
});
