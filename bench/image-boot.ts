/**
 * bench/image-boot: how fast and how reliably the `tiny` image boots under
 * TCG, and why it is built the way it is. Boots each variant N times with a
 * plain qemu-system-x86_64 (q35, -cpu max) and measures the time from spawn
 * to the guest agent answering guest-sync:
 *
 *   bzImage+none   Debian's compressed kernel, same initramfs (the baseline)
 *   vmlinux+none   what `tiny` ships: uncompressed ELF kernel booted via PVH,
 *                  uncompressed initramfs
 *   vmlinux+gzip   the same with a gzip -1 initramfs
 *
 * Any boot that does not answer within the timeout counts as a hang.
 * Usage: node dist/bench/image-boot.js [N=20] [variants=all]
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createReadStream, createWriteStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { testImage } from '../test/helpers/images.js';
import { bootGuest, Qga } from '../test/integration/image-guest.js';
import type { ImageSpec } from '../src/image/types.js';

const N = Number(process.argv[2] ?? 20);
const only = process.argv[3];
const TIMEOUT = 180_000;

let current: { stop(): Promise<void> } | undefined;
// Interrupted (Ctrl-C, kill): stop the guest being measured instead of orphaning it.
for (const sig of ['SIGINT', 'SIGTERM'] as const)
  process.once(sig, () => {
    void (current?.stop() ?? Promise.resolve()).finally(() => process.exit(130));
  });

async function bootOnce(spec: ImageSpec): Promise<number | null> {
  const g = await bootGuest(spec, { memMiB: 256 });
  current = g;
  try {
    const q = await Qga.connect(g.qgaSock, TIMEOUT, g.proc);
    const ms = performance.now() - g.startedAt;
    q.close();
    return ms;
  } catch {
    const log = await readFile(g.serialLog, 'utf8').catch(() => '');
    process.stderr.write(
      `HANG: no guest agent within ${TIMEOUT / 1000} s; last console lines:\n${log.split('\n').slice(-25).join('\n')}\n`,
    );
    return null;
  } finally {
    current = undefined;
    await g.stop();
  }
}

function stats(xs: number[]): string {
  if (!xs.length) return 'n/a';
  const s = [...xs].sort((a, b) => a - b);
  const med = s[Math.floor(s.length / 2)]!;
  return `median ${(med / 1000).toFixed(2)} s, min ${(s[0]! / 1000).toFixed(2)} s, max ${(s[s.length - 1]! / 1000).toFixed(2)} s`;
}

const { spec, cache } = await testImage('tiny');
const tmp = await mkdtemp(join(tmpdir(), 'nestvirt-bench-'));
try {
  // The shipped initramfs is an uncompressed cpio; make the gzip variant from it.
  const gz = join(tmp, 'initrd.gz');
  await pipeline(createReadStream(spec.initrd!), createGzip({ level: 1 }), createWriteStream(gz));
  const bundle = (await import('node:fs/promises')).readdir(join(cache, 'kernel'));
  const dirs = (await bundle).filter((d) => !d.startsWith('.')).sort();
  const bz = join(cache, 'kernel', dirs[dirs.length - 1]!, 'bzImage');
  const variants: [string, ImageSpec][] = [
    ['bzImage+none', { ...spec, kernel: bz }],
    ['vmlinux+none', spec],
    ['vmlinux+gzip', { ...spec, initrd: gz }],
  ];
  const results = new Map<string, { ok: number[]; hangs: number }>();
  for (const [name] of variants) results.set(name, { ok: [], hangs: 0 });
  // Interleave the variants so machine load affects them alike.
  for (let i = 0; i < N; i++)
    for (const [name, s] of variants) {
      if (only && !only.split(',').includes(name)) continue;
      const ms = await bootOnce(s);
      const r = results.get(name)!;
      if (ms === null) r.hangs++;
      else r.ok.push(ms);
      process.stderr.write(
        `${name} #${i + 1}: ${ms === null ? 'HANG' : (ms / 1000).toFixed(2) + ' s'}\n`,
      );
    }
  const base = results.get('bzImage+none')!;
  const med = (xs: number[]): number =>
    [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
  console.log(`tiny boot to guest agent under TCG, ${N} boots per variant`);
  for (const [name, r] of results) {
    if (!r.ok.length && !r.hangs) continue;
    const ratio = med(r.ok) / med(base.ok);
    console.log(
      `  ${name.padEnd(13)} ${stats(r.ok)}; hangs ${r.hangs}/${r.ok.length + r.hangs}; ratio to bzImage+none ${Number.isFinite(ratio) ? ratio.toFixed(2) : 'n/a'}`,
    );
  }
} finally {
  await rm(tmp, { recursive: true, force: true });
}
