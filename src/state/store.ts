/**
 * Atomic file writes and JSON documents under the state root.
 */
import {
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  writeSync,
} from 'node:fs';
import { dirname, join, basename } from 'node:path';
import { UsageError } from '../errors.js';
import { NAME_RE } from './paths.js';

let tmpSeq = 0;

/**
 * Writes a file atomically: temp file in the same directory, fsync, rename.
 * Synchronous system calls inside: state files are small, and one blocking
 * write costs less than the promise round trips of five (it is on the path
 * of every `nestvirt run` before QEMU starts).
 */
export async function writeAtomic(
  path: string,
  data: string | Buffer,
  mode = 0o644,
): Promise<void> {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${++tmpSeq}.tmp`);
  const fd = openSync(tmp, 'w', mode);
  try {
    const buf = typeof data === 'string' ? Buffer.from(data) : data;
    for (let off = 0; off < buf.length;) off += writeSync(fd, buf, off);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}

export async function writeJson(path: string, value: unknown): Promise<void> {
  await writeAtomic(path, JSON.stringify(value, null, 2) + '\n');
}

/**
 * Reads a JSON file; undefined when it does not exist. State files are a few
 * hundred bytes: a synchronous read costs a fraction of the promise-based
 * open/fstat/read/close round trips, which dominated `ls` with 200 VMs.
 * A missing file is the common case for some (qemu.pid, nic.json of a
 * stopped VM): existsSync answers it without the thrown ENOENT, whose error
 * object and stack cost five times the lookup.
 */
export async function readJson<T>(path: string): Promise<T | undefined> {
  if (!existsSync(path)) return undefined;
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  return JSON.parse(text) as T;
}

/** Validates an object name (VM, image, network); throws a UsageError. */
export function checkName(kind: string, name: string): string {
  if (!NAME_RE.test(name))
    throw new UsageError(
      `${kind}.bad-name`,
      `invalid ${kind} name ${JSON.stringify(name)}: use a letter, then letters, digits, '-', '_' or '.' (at most 63)`,
    );
  return name;
}
