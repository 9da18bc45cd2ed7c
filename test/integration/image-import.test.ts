/**
 * `nestvirt image import` against a local HTTP server started by the test
 * (node:http on 127.0.0.1, Range supported), and `image rm` refusing an
 * image a VM uses. Real qemu-img detects and converts formats.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { runBin, tempHome } from '../helpers/cli.js';
import { run } from '../../src/util/exec.js';

let server: Server;
let base = '';
let dir = '';
let disk: Buffer;
let diskSum = '';
/** Requests seen, with their Range header. */
const seen: { path: string; range?: string }[] = [];
/** Paths that cut the connection after this many bytes on their first request. */
const cutOnce = new Map<string, number>();

before(async () => {
  dir = await tempHome('nestvirt-import-src-');
  // A real qcow2 with some data, so the format is qcow2 and the size is not tiny.
  const raw = join(dir, 'src.raw');
  await writeFile(
    raw,
    Buffer.concat([Buffer.alloc(1 << 20, 7), Buffer.from('nestvirt'), Buffer.alloc(3 << 20, 1)]),
  );
  await run(['qemu-img', 'convert', '-O', 'qcow2', raw, join(dir, 'disk.qcow2')]);
  disk = await readFile(join(dir, 'disk.qcow2'));
  diskSum = createHash('sha256').update(disk).digest('hex');
  server = createServer((req, res) => {
    const range = req.headers.range;
    seen.push({ path: req.url ?? '', ...(range ? { range } : {}) });
    if (req.url !== '/disk.qcow2' && req.url !== '/cut/disk.qcow2') {
      res.writeHead(404).end();
      return;
    }
    const m = range ? /^bytes=(\d+)-$/.exec(range) : null;
    const start = m ? Number(m[1]) : 0;
    const body = disk.subarray(start);
    const headers = {
      'content-length': String(body.length),
      etag: '"v1"',
      'accept-ranges': 'bytes',
    };
    if (m)
      res.writeHead(206, {
        ...headers,
        'content-range': `bytes ${start}-${disk.length - 1}/${disk.length}`,
      });
    else res.writeHead(200, headers);
    const cut = cutOnce.get(req.url);
    if (cut !== undefined) {
      cutOnce.delete(req.url);
      res.write(body.subarray(0, cut), () => res.destroy());
      return;
    }
    res.end(body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

after(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
  await rm(dir, { recursive: true, force: true });
});

async function leftovers(home: string): Promise<string[]> {
  const out: string[] = [];
  for (const d of ['images', 'cache/downloads']) {
    for (const f of await readdir(join(home, d)).catch(() => [] as string[])) out.push(`${d}/${f}`);
  }
  return out;
}

test(
  'import from a URL stores the qcow2 unchanged and verifies its checksum',
  { timeout: 120_000 },
  async () => {
    const home = await tempHome();
    try {
      const r = await runBin(
        ['image', 'import', 'web', `${base}/disk.qcow2`, '--sha256', diskSum, '--json'],
        { env: { NESTVIRT_HOME: home } },
      );
      assert.equal(r.code, 0, r.stderr);
      const spec = JSON.parse(r.stdout) as {
        disk: string;
        diskFormat: string;
        sha256: string;
        builtin: boolean;
      };
      assert.equal(spec.diskFormat, 'qcow2');
      assert.equal(spec.sha256, diskSum);
      assert.equal(spec.builtin, false);
      assert.deepEqual(await readFile(spec.disk), disk);
      assert.deepEqual(await leftovers(home), ['images/web']);
      const ls = await runBin(['image', 'ls', '--json'], { env: { NESTVIRT_HOME: home } });
      const rows = JSON.parse(ls.stdout) as {
        name: string;
        built: boolean;
        diskFormat: string | null;
      }[];
      assert.deepEqual(
        rows.find((x) => x.name === 'web'),
        { ...rows.find((x) => x.name === 'web'), built: true, diskFormat: 'qcow2' },
      );
    } finally {
      await rm(home, { recursive: true, force: true });
    }
  },
);

test('an interrupted download resumes with a Range request', { timeout: 120_000 }, async () => {
  const home = await tempHome();
  try {
    cutOnce.set('/cut/disk.qcow2', 700_000);
    seen.length = 0;
    const r = await runBin(
      ['image', 'import', 'cut', `${base}/cut/disk.qcow2`, '--sha256', diskSum, '--json'],
      { env: { NESTVIRT_HOME: home } },
    );
    assert.equal(r.code, 0, r.stderr);
    const reqs = seen.filter((s) => s.path === '/cut/disk.qcow2');
    assert.equal(reqs.length, 2, JSON.stringify(reqs));
    assert.equal(reqs[0]!.range, undefined);
    assert.match(reqs[1]!.range ?? '', /^bytes=\d+-$/);
    assert.ok(Number(/\d+/.exec(reqs[1]!.range!)![0]) > 0);
    const spec = JSON.parse(r.stdout) as { disk: string };
    assert.deepEqual(await readFile(spec.disk), disk);
    // Non-TTY progress: percentage and bytes lines on stderr.
    assert.match(r.stderr, /download/);
  } finally {
    await rm(home, { recursive: true, force: true });
  }
});

test(
  'a partial download left by an earlier run is resumed by the next run',
  { timeout: 120_000 },
  async () => {
    const home = await tempHome();
    try {
      // First run: the server cuts every attempt's connection (4 attempts).
      const url = `${base}/cut/disk.qcow2`;
      seen.length = 0;
      const { createHash: h } = await import('node:crypto');
      const key = h('sha256').update(url).digest('hex').slice(0, 16);
      const part = join(home, 'cache', 'downloads', `${key}.part`);
      await mkdir(join(home, 'cache', 'downloads'), { recursive: true });
      await writeFile(part, disk.subarray(0, 1_000_000));
      await writeFile(part + '.json', JSON.stringify({ url, etag: '"v1"', total: disk.length }));
      const r = await runBin(['image', 'import', 'resumed', url, '--sha256', diskSum], {
        env: { NESTVIRT_HOME: home },
      });
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(
        seen.map((s) => s.range),
        ['bytes=1000000-'],
      );
    } finally {
      await rm(home, { recursive: true, force: true });
    }
  },
);

test(
  'a wrong checksum: one clear line, exit 2, nothing left behind',
  { timeout: 120_000 },
  async () => {
    const home = await tempHome();
    try {
      const wrong = 'f'.repeat(64);
      const r = await runBin(['image', 'import', 'bad', `${base}/disk.qcow2`, '--sha256', wrong], {
        env: { NESTVIRT_HOME: home },
      });
      assert.equal(r.code, 2);
      const errLines = r.stderr.split('\n').filter((l) => l.startsWith('nestvirt:'));
      assert.equal(errLines.length, 1);
      assert.match(errLines[0]!, /checksum mismatch .*expected sha256 f{64}, got [0-9a-f]{64}/);
      assert.doesNotMatch(r.stderr, /at .*\.js:\d+/);
      assert.deepEqual(await leftovers(home), []);
      const bad = await runBin(
        ['image', 'import', 'bad', `${base}/disk.qcow2`, '--sha256', 'xyz'],
        { env: { NESTVIRT_HOME: home } },
      );
      assert.equal(bad.code, 2);
      assert.match(bad.stderr, /--sha256 must be 64 hexadecimal digits/);
    } finally {
      await rm(home, { recursive: true, force: true });
    }
  },
);

test(
  'import of a local raw file keeps it raw; a vmdk is converted to qcow2',
  { timeout: 120_000 },
  async () => {
    const home = await tempHome();
    try {
      const raw = join(dir, 'plain.raw');
      await writeFile(raw, Buffer.alloc(2 << 20, 3));
      const r = await runBin(['image', 'import', 'plain', raw, '--json'], {
        env: { NESTVIRT_HOME: home },
      });
      assert.equal(r.code, 0, r.stderr);
      assert.equal((JSON.parse(r.stdout) as { diskFormat: string }).diskFormat, 'raw');
      const vmdk = join(dir, 'x.vmdk');
      await run(['qemu-img', 'convert', '-O', 'vmdk', raw, vmdk]);
      const v = await runBin(['image', 'import', 'vm', vmdk, '--json'], {
        env: { NESTVIRT_HOME: home },
      });
      assert.equal(v.code, 0, v.stderr);
      const spec = JSON.parse(v.stdout) as { disk: string; diskFormat: string };
      assert.equal(spec.diskFormat, 'qcow2');
      const info = JSON.parse(
        (await run(['qemu-img', 'info', '--output=json', spec.disk])).stdout,
      ) as { format: string };
      assert.equal(info.format, 'qcow2');
      const missing = await runBin(['image', 'import', 'nope', join(dir, 'missing.img')], {
        env: { NESTVIRT_HOME: home },
      });
      assert.equal(missing.code, 2);
      assert.match(missing.stderr, /no such file/);
      const dup = await runBin(['image', 'import', 'plain', raw], { env: { NESTVIRT_HOME: home } });
      assert.equal(dup.code, 2);
      assert.match(dup.stderr, /already exists/);
    } finally {
      await rm(home, { recursive: true, force: true });
    }
  },
);

test(
  'image rm refuses while a VM spec references the image, names the VM, then removes',
  { timeout: 120_000 },
  async () => {
    const home = await tempHome();
    try {
      const raw = join(dir, 'rm.raw');
      await writeFile(raw, Buffer.alloc(1 << 20));
      assert.equal(
        (await runBin(['image', 'import', 'used', raw], { env: { NESTVIRT_HOME: home } })).code,
        0,
      );
      await mkdir(join(home, 'vms', 'web1'), { recursive: true });
      await writeFile(
        join(home, 'vms', 'web1', 'spec.json'),
        JSON.stringify({ name: 'web1', image: 'used' }),
      );
      const r = await runBin(['image', 'rm', 'used'], { env: { NESTVIRT_HOME: home } });
      assert.equal(r.code, 1);
      assert.match(r.stderr, /image used is used by VM web1/);
      assert.ok(await stat(join(home, 'images', 'used', 'spec.json')));
      await rm(join(home, 'vms', 'web1'), { recursive: true });
      const ok = await runBin(['image', 'rm', 'used', '--json'], { env: { NESTVIRT_HOME: home } });
      assert.equal(ok.code, 0, ok.stderr);
      assert.deepEqual(JSON.parse(ok.stdout), { removed: ['used'] });
      assert.deepEqual(await leftovers(home), []);
      const again = await runBin(['image', 'rm', 'used'], { env: { NESTVIRT_HOME: home } });
      assert.equal(again.code, 2);
      assert.match(again.stderr, /no image named "used"/);
    } finally {
      await rm(home, { recursive: true, force: true });
    }
  },
);
