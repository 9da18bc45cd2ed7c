/**
 * A newc ("070701") cpio writer for initramfs archives: walks a staging
 * directory and writes every entry owned by root, in sorted order, so the
 * archive does not depend on who built it. Compression is applied by the
 * caller's stream (gzip through node:zlib).
 */
import { lstat, readdir, readlink, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Writable } from 'node:stream';

export interface CpioEntry {
  /** Path inside the archive, no leading slash. */
  name: string;
  /** File type and permission bits as in st_mode. */
  mode: number;
  data: Buffer;
  mtime?: number;
}

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;

function hex8(n: number): string {
  return (n >>> 0).toString(16).padStart(8, '0');
}

function pad4(n: number): Buffer {
  return Buffer.alloc((4 - (n % 4)) % 4);
}

/** One newc header + name + data, padded to 4 bytes. */
export function cpioRecord(e: CpioEntry, ino: number): Buffer {
  const name = Buffer.from(e.name + '\0');
  const isDir = (e.mode & 0o170000) === S_IFDIR;
  const header =
    '070701' +
    hex8(ino) +
    hex8(e.mode) +
    hex8(0) + // uid
    hex8(0) + // gid
    hex8(isDir ? 2 : 1) +
    hex8(e.mtime ?? 0) +
    hex8(e.data.length) +
    hex8(0) + // devmajor
    hex8(0) + // devminor
    hex8(0) + // rdevmajor
    hex8(0) + // rdevminor
    hex8(name.length) +
    hex8(0); // check
  const head = Buffer.concat([Buffer.from(header, 'latin1'), name]);
  return Buffer.concat([head, pad4(head.length), e.data, pad4(e.data.length)]);
}

/** The archive trailer. */
export function cpioTrailer(ino: number): Buffer {
  return cpioRecord({ name: 'TRAILER!!!', mode: 0, data: Buffer.alloc(0) }, ino);
}

async function write(out: Writable, b: Buffer): Promise<void> {
  if (!out.write(b)) await new Promise<void>((r) => out.once('drain', () => r()));
}

/** Lists a staging tree as archive entries (directories before their contents, sorted). */
export async function* walk(dir: string, prefix = ''): AsyncGenerator<CpioEntry> {
  const names = (await readdir(dir)).sort();
  for (const n of names) {
    const p = join(dir, n);
    const name = prefix ? `${prefix}/${n}` : n;
    const st = await lstat(p);
    if (st.isSymbolicLink())
      yield { name, mode: S_IFLNK | 0o777, data: Buffer.from(await readlink(p)) };
    else if (st.isDirectory()) {
      yield { name, mode: S_IFDIR | (st.mode & 0o7777), data: Buffer.alloc(0) };
      yield* walk(p, name);
    } else if (st.isFile())
      yield { name, mode: S_IFREG | (st.mode & 0o7777), data: await readFile(p) };
  }
}

/** Writes the staging tree `dir` as a newc archive to `out` (not ended). */
export async function writeCpio(dir: string, out: Writable): Promise<void> {
  let ino = 1;
  for await (const e of walk(dir)) await write(out, cpioRecord(e, ino++));
  await write(out, cpioTrailer(ino));
}
