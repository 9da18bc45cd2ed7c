import { test } from 'node:test';
import assert from 'node:assert/strict';
import { QmpClient, QmpError, JsonLines, awaitQmp } from '../../../src/vm/qmp.js';
import { QgaClient, QgaError, QgaTimeout } from '../../../src/vm/qga.js';
import { fakeQmp, fakeQga } from '../../fakes/qemu-sockets.js';

test('QMP: greeting, capabilities negotiation, execute with ids, errors', async () => {
  const srv = await fakeQmp();
  try {
    const q = await QmpClient.connect(srv.path);
    assert.equal(q.greeting.QMP.version.qemu.major, 7);
    assert.equal(srv.requests[0]!.execute, 'qmp_capabilities');
    const st = await q.execute<{ status: string }>('query-status');
    assert.equal(st.status, 'running');
    assert.equal(typeof srv.requests[1]!.id, 'string');
    await assert.rejects(
      q.execute('no-such-thing'),
      (e) => e instanceof QmpError && e.errorClass === 'CommandNotFound',
    );
    q.close();
  } finally {
    await srv.close();
  }
});

test('QMP: events are collected and awaited; quit closes', async () => {
  const srv = await fakeQmp();
  try {
    const q = await QmpClient.connect(srv.path);
    const ev = q.waitEvent('POWERDOWN', 2000);
    await q.execute('system_powerdown');
    assert.equal((await ev)?.event, 'POWERDOWN');
    assert.equal(await q.waitEvent('SHUTDOWN', 50), undefined);
    await q.execute('quit').catch(() => {});
    assert.equal(await q.waitClosed(2000), true);
    await assert.rejects(q.execute('query-status'), /closed/);
  } finally {
    await srv.close();
  }
});

test('QMP: a server that hangs up after the greeting is a clear error', async () => {
  const srv = await fakeQmp({ dieAfterGreeting: true });
  try {
    await assert.rejects(QmpClient.connect(srv.path, { timeoutMs: 2000 }), /closed/);
  } finally {
    await srv.close();
  }
  await assert.rejects(QmpClient.connect('/nonexistent/qmp.sock', { timeoutMs: 500 }), /ENOENT/);
});

test("awaitQmp: a QEMU slower to greet than a client's patience is still reached", async () => {
  // One client at a time, each greeted 2.5 s after it is taken up: a client
  // that gave up after 2 s and reconnected would queue dead connections
  // ahead of its live one and never be greeted.
  const srv = await fakeQmp({ slowSerialMs: 2500 });
  try {
    const t0 = Date.now();
    assert.equal(await awaitQmp(srv.path, { deadline: t0 + 15_000, check: () => {} }), true);
    assert.ok(Date.now() - t0 < 6000, `greeted after ${Date.now() - t0} ms`);
    assert.equal(srv.requests[0]!.execute, 'qmp_capabilities');
  } finally {
    await srv.close();
  }
});

test('awaitQmp: retries until the socket exists, stops when check throws, false at the deadline', async () => {
  const t0 = Date.now();
  assert.equal(
    await awaitQmp('/nonexistent/qmp.sock', { deadline: t0 + 300, check: () => {} }),
    false,
  );
  assert.ok(Date.now() - t0 >= 300);
  let n = 0;
  await assert.rejects(
    awaitQmp('/nonexistent/qmp.sock', {
      deadline: Date.now() + 10_000,
      check: () => {
        if (++n === 3) throw new Error('QEMU exited');
      },
    }),
    /QEMU exited/,
  );
});

test('JsonLines: 0xFF markers and garbage between documents', () => {
  const docs: unknown[] = [];
  const junk: string[] = [];
  const l = new JsonLines(
    (d) => docs.push(d),
    (j) => junk.push(j),
  );
  l.push(
    Buffer.concat([
      Buffer.from('{"return": 1}\nnot json\n'),
      Buffer.from([0xff]),
      Buffer.from('{"return": {"x": "é"}}\r\n{"ret'),
    ]),
  );
  l.push('urn": 3}\n');
  assert.deepEqual(docs, [{ return: 1 }, { return: { x: 'é' } }, { return: 3 }]);
  assert.deepEqual(junk, ['not json']);
});

test('QGA: sync skips stale replies, then ping and exec with output and exit code', async () => {
  const srv = await fakeQga({
    staleOnConnect: '{"return": 12345}\n{"return": {"pid": 9}}\n',
    programs: {
      sh: (args) => ({
        exitcode: 3,
        stdout: `ran ${args.join(' ')}\n`,
        stderr: 'oops\n',
        pollsUntilExit: 2,
      }),
      cat: (_a, input) => ({ exitcode: 0, stdout: input?.toString() ?? '' }),
      killed: () => ({ signal: 9 }),
    },
  });
  try {
    const c = await QgaClient.connect(srv.path);
    assert.equal(srv.requests[0]!.execute, 'guest-sync-delimited');
    await c.ping();
    const r = await c.exec(['sh', '-c', 'echo hi']);
    assert.equal(r.exitCode, 3);
    assert.equal(r.stdout.toString(), 'ran -c echo hi\n');
    assert.equal(r.stderr.toString(), 'oops\n');
    const ex = srv.requests.find((d) => d.execute === 'guest-exec')!;
    assert.deepEqual(ex.arguments, { path: 'sh', arg: ['-c', 'echo hi'], 'capture-output': true });
    assert.equal(srv.requests.filter((d) => d.execute === 'guest-exec-status').length, 3);
    assert.equal(
      (await c.exec(['cat'], { input: Buffer.from('piped') })).stdout.toString(),
      'piped',
    );
    const k = await c.exec(['killed']);
    assert.equal(k.exitCode, 137);
    assert.equal(k.signal, 9);
    await assert.rejects(
      c.exec(['nope']),
      (e) => e instanceof QgaError && /Failed to execute child process/.test(e.message),
    );
    c.close();
  } finally {
    await srv.close();
  }
});

test('QGA: falls back to guest-sync on agents without guest-sync-delimited', async () => {
  const srv = await fakeQga({ noDelimited: true });
  try {
    const c = await QgaClient.connect(srv.path);
    await c.ping();
    assert.deepEqual(
      srv.requests.map((d) => d.execute),
      ['guest-sync-delimited', 'guest-sync', 'guest-ping'],
    );
    c.close();
  } finally {
    await srv.close();
  }
});

test('QGA: an agent that never answers times out clearly; exec timeout', async () => {
  const srv = await fakeQga({ silent: true });
  try {
    await assert.rejects(
      QgaClient.connect(srv.path, { timeoutMs: 300 }),
      (e) => e instanceof QgaTimeout,
    );
  } finally {
    await srv.close();
  }
  const slow = await fakeQga({ programs: { sleep: () => ({ pollsUntilExit: 1e9 }) } });
  try {
    const c = await QgaClient.connect(slow.path);
    await assert.rejects(
      c.exec(['sleep', '100'], { timeoutMs: 300 }),
      (e) => e instanceof QgaTimeout && /still running/.test(e.message),
    );
    c.close();
  } finally {
    await slow.close();
  }
});

test('console in use: judged from QMP query-chardev', async () => {
  const { consoleInUse } = await import('../../../src/vm/console.js');
  let serial = 'disconnected:unix:/r/vms/v/serial.sock,server=on';
  const srv = await fakeQmp({
    commands: {
      'query-chardev': () => [
        { label: 'qmp', filename: 'unix:/r/vms/v/qmp.sock,server=on', 'frontend-open': true },
        { label: 'serial0', filename: serial, 'frontend-open': true },
      ],
    },
  });
  try {
    assert.equal(await consoleInUse(srv.path), false);
    serial = 'unix:/r/vms/v/serial.sock,server=on';
    assert.equal(await consoleInUse(srv.path), true);
  } finally {
    await srv.close();
  }
  assert.equal(await consoleInUse('/nonexistent/qmp.sock'), false);
});
