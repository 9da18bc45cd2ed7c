/** The human report: grouped, coloured only when the output is a TTY. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { join } from 'node:path';
import { runDoctor } from '../../../src/host/doctor.js';
import { renderDoctor } from '../../../src/host/render.js';
import { run } from '../../../src/util/exec.js';
import { PROJECT_ROOT } from '../../helpers/cli.js';

const out = (color: boolean) => ({
  stdout: new PassThrough(),
  stderr: new PassThrough(),
  color,
  interactive: false,
});

test('colour on a TTY, plain otherwise; problems in red, fixes in yellow', async () => {
  const r = await runDoctor({
    root: join(PROJECT_ROOT, 'test/fixtures/host/gce-e2-no-nesting'),
    run,
  });
  const coloured = renderDoctor(r, out(true));
  assert.match(coloured, /\x1b\[31m✗\x1b\[0m the CPU offers neither/);
  assert.match(coloured, /\x1b\[33mfix:\x1b\[0m Google Compute Engine/);
  const plain = renderDoctor(r, out(false));
  assert.doesNotMatch(plain, /\x1b\[/);
  assert.deepEqual(
    plain.split('\n').filter((l) => /^\S/.test(l)),
    ['CPU', 'Machine', 'KVM', 'Verdict'],
  );
});
