/**
 * `image import NAME FILE|URL`: a disk (qcow2, raw, a distribution cloud
 * image; xz/gzip/zstd-compressed files are unpacked) stored as the image's
 * `disk`. The checksum is verified before anything is stored; the format is
 * detected with `qemu-img info --output=json`; nothing is converted unless
 * needed (other formats, or a qcow2 with a backing file, become a
 * standalone qcow2). Downloads resume (download.ts).
 */
import { crypto } from '../util/lazy.js';
import { createReadStream } from 'node:fs';
import { copyFile, mkdir, rename, rm, stat, open } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { NestvirtError, UsageError } from '../errors.js';
import { checkName } from '../state/store.js';
import type { Output, Progress } from '../cli/output.js';
import { eprintln } from '../cli/output.js';
import type { Runner } from '../util/exec.js';
import type { ImageSpec } from './types.js';
import { isBuiltin } from './recipe.js';
import { cacheDir, install, readImage, withImageLock } from './store.js';
import { download, progressText } from './download.js';
import { pipeFileThrough } from './kernel.js';

export type DiskFormat = 'qcow2' | 'raw';

/** What `qemu-img info --output=json` says about a file, reduced to what import needs. */
export interface DiskInfo {
  format: string;
  virtualSize: number;
  backing: string | null;
  /** The stored format, and whether a conversion is needed to get it. */
  store: DiskFormat;
  convert: boolean;
}

/** Interprets `qemu-img info --output=json`. */
export function parseQemuImgInfo(text: string): DiskInfo {
  let j: {
    format?: string;
    'virtual-size'?: number;
    'backing-filename'?: string;
    'full-backing-filename'?: string;
  };
  try {
    j = JSON.parse(text) as typeof j;
  } catch {
    throw new NestvirtError('image.bad-info', 'qemu-img info printed no JSON');
  }
  const format = j.format ?? 'raw';
  const backing = j['full-backing-filename'] ?? j['backing-filename'] ?? null;
  const virtualSize = j['virtual-size'] ?? 0;
  if (format === 'raw') return { format, virtualSize, backing, store: 'raw', convert: false };
  if (format === 'qcow2')
    return { format, virtualSize, backing, store: 'qcow2', convert: backing !== null };
  return { format, virtualSize, backing, store: 'qcow2', convert: true };
}

/** A compressed container around a disk, from its first bytes. */
export function compressionOf(head: Buffer): 'xz' | 'gzip' | 'zstd' | 'bzip2' | null {
  if (head.length >= 6 && head.toString('latin1', 0, 6) === '\xfd7zXZ\0') return 'xz';
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (head.length >= 4 && head.readUInt32LE(0) === 0xfd2fb528) return 'zstd';
  if (head.length >= 3 && head.toString('latin1', 0, 3) === 'BZh') return 'bzip2';
  return null;
}

/** Validates a --sha256 value (64 hex digits, any case; `sha256:` prefix allowed). */
export function checkSha256Arg(v: string): string {
  const s = v
    .trim()
    .replace(/^sha256:/i, '')
    .toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(s))
    throw new UsageError(
      'image.bad-sha256',
      `--sha256 must be 64 hexadecimal digits, got ${JSON.stringify(v)}`,
      "copy the value from the distribution's SHA256SUMS file",
    );
  return s;
}

/** The message for a checksum mismatch (one line). */
export function checksumMismatch(source: string, expected: string, actual: string): UsageError {
  return new UsageError(
    'image.checksum-mismatch',
    `checksum mismatch for ${source}: expected sha256 ${expected}, got ${actual}`,
    'check the --sha256 value and the source; nothing was stored',
  );
}

/** sha256 of a file, streamed. */
export async function sha256File(
  path: string,
  onProgress?: (done: number) => void,
): Promise<string> {
  const h = crypto().createHash('sha256');
  let done = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) {
    h.update(chunk as Buffer);
    done += (chunk as Buffer).length;
    onProgress?.(done);
  }
  return h.digest('hex');
}

export function isUrl(s: string): boolean {
  return /^https?:\/\//i.test(s);
}

export interface ImportOptions {
  root: string;
  name: string;
  /** A file path or an http(s) URL. */
  source: string;
  sha256?: string | undefined;
  run: Runner;
  env?: NodeJS.ProcessEnv;
  out?: Output;
  progress?: Progress;
  /** Declared features of the image (e.g. a cloud image: cloudInit, sshd). */
  features?: Partial<ImageSpec['features']>;
}

/** Imports a disk image; see the module comment. */
export async function importImage(o: ImportOptions): Promise<ImageSpec> {
  checkName('image', o.name);
  if (isBuiltin(o.name))
    throw new UsageError(
      'image.reserved',
      `${o.name} is a built-in image name`,
      `pick another name, or build it with \`nestvirt image build ${o.name}\``,
    );
  const expected = o.sha256 !== undefined ? checkSha256Arg(o.sha256) : undefined;
  if (!isUrl(o.source)) {
    const st = await stat(o.source).catch(() => undefined);
    if (!st || !st.isFile())
      throw new UsageError(
        'image.no-source',
        `no such file: ${o.source}`,
        'give a path to a qcow2/raw disk image or an http(s) URL',
      );
  }
  const step = <T>(title: string, fn: (u: (d: string) => void) => Promise<T>): Promise<T> =>
    o.progress ? o.progress.step(title, fn) : fn(() => {});
  return withImageLock(o.root, o.name, async () => {
    if (await readImage(o.root, o.name))
      throw new UsageError(
        'image.exists',
        `image ${o.name} already exists`,
        `remove it first (\`nestvirt image rm ${o.name}\`) or pick another name`,
      );
    let file: string;
    let partToClean: string | undefined;
    if (isUrl(o.source)) {
      const dl = join(cacheDir(o.root, o.env), 'downloads');
      await mkdir(dl, { recursive: true });
      const key = crypto().createHash('sha256').update(o.source).digest('hex').slice(0, 16);
      const part = join(dl, `${key}.part`);
      partToClean = part;
      await step(`download ${o.source}`, async (update) => {
        let lastLine = 0;
        await download(o.source, part, {
          onProgress: (done, total) => {
            if (o.out?.interactive) update(progressText(done, total, true));
            else if (o.out && Date.now() - lastLine > 2000) {
              lastLine = Date.now();
              eprintln(o.out, `  download ${progressText(done, total, false)}`);
            }
          },
        });
      });
      file = part;
    } else file = resolve(o.source);
    const actual = await step('verify checksum (sha256)', async () => {
      const sum = await sha256File(file);
      if (expected && sum !== expected) {
        if (partToClean) {
          await rm(partToClean, { force: true });
          await rm(partToClean + '.json', { force: true });
        }
        throw checksumMismatch(o.source, expected, sum);
      }
      return sum;
    });
    return install(o.root, o.name, async (dir, finalDir) => {
      let src = file;
      const head = Buffer.alloc(8);
      const fh = await open(src, 'r');
      await fh.read(head, 0, 8, 0);
      await fh.close();
      const comp = compressionOf(head);
      if (comp) {
        const tool: Record<string, string[]> = {
          xz: ['xz', '-dc'],
          gzip: ['gzip', '-dc'],
          zstd: ['zstd', '-dcq'],
          bzip2: ['bzip2', '-dc'],
        };
        const unpacked = join(dir, 'unpacked');
        await step(`unpack (${comp})`, async () => {
          const code = await pipeFileThrough(tool[comp]!, src, unpacked);
          if (code !== 0)
            throw new UsageError(
              'image.bad-archive',
              `cannot unpack ${o.source} (${comp} exited ${code})`,
            );
        });
        src = unpacked;
      }
      const info = parseQemuImgInfo(
        (await o.run(['qemu-img', 'info', '--output=json', src])).stdout,
      );
      const dest = join(dir, `disk.${info.store}`);
      if (info.convert)
        await step(`convert ${info.format} to qcow2`, async () => {
          await o.run(['qemu-img', 'convert', '-O', 'qcow2', src, dest], {
            timeoutMs: 60 * 60_000,
          });
        });
      else
        await step('store disk', async () => {
          if (src === file && partToClean) await rename(src, dest);
          else if (src !== file) await rename(src, dest);
          else await copyFile(src, dest);
        });
      if (src !== file) await rm(src, { force: true });
      if (partToClean) {
        await rm(partToClean, { force: true });
        await rm(partToClean + '.json', { force: true });
      }
      const size = (await stat(dest)).size;
      return {
        name: o.name,
        builtin: false,
        disk: join(finalDir, basename(dest)),
        diskFormat: info.store,
        features: {
          guestAgent: false,
          sshd: false,
          cloudInit: false,
          kvmModules: false,
          nestvirt: false,
          ...o.features,
        },
        arch: 'x86_64',
        sha256: actual,
        source: isUrl(o.source) ? o.source : resolve(o.source),
        sizeBytes: size,
        createdAt: new Date().toISOString(),
      };
    });
  });
}
