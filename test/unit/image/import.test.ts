import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  checkSha256Arg,
  checksumMismatch,
  compressionOf,
  isUrl,
  parseQemuImgInfo,
  sha256File,
} from '../../../src/image/import.js';
import {
  parseContentRange,
  planResponse,
  progressText,
  rangeRequest,
} from '../../../src/image/download.js';
import { ExitCode } from '../../../src/errors.js';

test('parseQemuImgInfo: qcow2/raw stored as is; other formats and backed qcow2 converted', () => {
  const table: [object, { store: string; convert: boolean; format: string }][] = [
    [
      { format: 'qcow2', 'virtual-size': 2147483648 },
      { store: 'qcow2', convert: false, format: 'qcow2' },
    ],
    [
      { format: 'raw', 'virtual-size': 1048576 },
      { store: 'raw', convert: false, format: 'raw' },
    ],
    [
      { format: 'qcow2', 'backing-filename': 'base.img' },
      { store: 'qcow2', convert: true, format: 'qcow2' },
    ],
    [{ format: 'vmdk' }, { store: 'qcow2', convert: true, format: 'vmdk' }],
    [{ format: 'vpc' }, { store: 'qcow2', convert: true, format: 'vpc' }],
  ];
  for (const [json, want] of table) {
    const got = parseQemuImgInfo(JSON.stringify(json));
    assert.deepEqual(
      { store: got.store, convert: got.convert, format: got.format },
      want,
      JSON.stringify(json),
    );
  }
  assert.equal(parseQemuImgInfo('{"format":"qcow2","virtual-size":5}').virtualSize, 5);
  assert.throws(() => parseQemuImgInfo('not json'), /no JSON/);
});

test('compressionOf recognises xz, gzip, zstd, bzip2 and nothing else', () => {
  const table: [Buffer, string | null][] = [
    [Buffer.from('\xfd7zXZ\0\0\0', 'latin1'), 'xz'],
    [Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0]), 'gzip'],
    [Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0]), 'zstd'],
    [Buffer.from('BZh91AY&'), 'bzip2'],
    [Buffer.from('QFI\xfb\0\0\0\x03', 'latin1'), null],
    [Buffer.alloc(8), null],
  ];
  for (const [head, want] of table) assert.equal(compressionOf(head), want);
});

test('checkSha256Arg accepts 64 hex digits (any case, sha256: prefix) and rejects the rest', () => {
  const hex = 'ab'.repeat(32);
  assert.equal(checkSha256Arg(hex.toUpperCase()), hex);
  assert.equal(checkSha256Arg(`sha256:${hex}`), hex);
  for (const bad of ['', 'xyz', hex.slice(1), hex + '0', 'g'.repeat(64)]) {
    assert.throws(
      () => checkSha256Arg(bad),
      (e: { exitCode: number; message: string }) =>
        e.exitCode === ExitCode.USAGE && /64 hexadecimal/.test(e.message),
    );
  }
  const e = checksumMismatch('http://x/y.img', 'a'.repeat(64), 'b'.repeat(64));
  assert.equal(e.exitCode, ExitCode.USAGE);
  assert.ok(!e.message.includes('\n'));
});

test('sha256File matches a known digest', async () => {
  const d = await mkdtemp(join(tmpdir(), 'nestvirt-sha-'));
  try {
    await writeFile(join(d, 'f'), 'abc');
    assert.equal(
      await sha256File(join(d, 'f')),
      'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad',
    );
  } finally {
    await rm(d, { recursive: true, force: true });
  }
});

test('rangeRequest: nothing for a fresh start; Range + If-Range when resuming', () => {
  assert.deepEqual(rangeRequest(0, undefined), {});
  assert.deepEqual(rangeRequest(100, undefined), { range: 'bytes=100-' });
  assert.deepEqual(rangeRequest(100, { url: 'u', etag: '"v1"' }), {
    range: 'bytes=100-',
    'if-range': '"v1"',
  });
  assert.deepEqual(rangeRequest(5, { url: 'u', lastModified: 'Mon, 23 Nov 2026 20:00:00 GMT' }), {
    range: 'bytes=5-',
    'if-range': 'Mon, 23 Nov 2026 20:00:00 GMT',
  });
});

test('parseContentRange', () => {
  assert.deepEqual(parseContentRange('bytes 100-199/200'), { start: 100, end: 199, total: 200 });
  assert.deepEqual(parseContentRange('bytes 0-9/*'), { start: 0, end: 9, total: null });
  assert.deepEqual(parseContentRange('bytes */200'), { unsatisfied: 200 });
  assert.equal(parseContentRange('items 1-2/3'), undefined);
  assert.equal(parseContentRange(undefined), undefined);
});

test('planResponse decides append, restart, complete, redirect or fail', () => {
  const table: [number, Record<string, string>, number, object][] = [
    [200, { 'content-length': '500' }, 0, { action: 'restart', total: 500 }],
    [200, { 'content-length': '500' }, 100, { action: 'restart', total: 500 }], // server ignored Range
    [206, { 'content-range': 'bytes 100-499/500' }, 100, { action: 'append', total: 500 }],
    [
      206,
      { 'content-range': 'bytes 50-499/500' },
      100,
      { action: 'fail', reason: 'server resumed at byte 50, expected 100' },
    ],
    [206, {}, 100, { action: 'fail', reason: 'HTTP 206 without a usable Content-Range' }],
    [416, { 'content-range': 'bytes */500' }, 500, { action: 'complete', total: 500 }],
    [416, { 'content-range': 'bytes */500' }, 600, { action: 'restart', total: null }],
    [302, { location: '/other' }, 0, { action: 'redirect', location: '/other' }],
    [404, {}, 0, { action: 'fail', reason: 'HTTP 404' }],
  ];
  for (const [status, headers, have, want] of table)
    assert.deepEqual(planResponse(status, headers, have), want, `${status} ${have}`);
});

test('progressText: a bar on a TTY, percentage and bytes otherwise', () => {
  assert.equal(progressText(512 << 10, 1 << 20, false), '50% (0.5/1.0 MiB)');
  assert.equal(progressText(1 << 20, 1 << 20, true, 10), '[##########] 100% 1.0/1.0 MiB');
  assert.equal(progressText(0, 1 << 20, true, 4), '[----] 0% 0.0/1.0 MiB');
  assert.equal(progressText(3 << 20, null, true), '3.0 MiB');
});

test('isUrl', () => {
  for (const [s, want] of [
    ['http://127.0.0.1/x', true],
    ['HTTPS://h/x', true],
    ['./x.qcow2', false],
    ['ftp://h/x', false],
  ] as const)
    assert.equal(isUrl(s), want, s);
});
