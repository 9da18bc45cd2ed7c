/**
 * Atomic file writes and JSON documents under the state root.
 */
import { mkdir, open, rename, rm } from 'node:fs/promises';
import { dirname, join, basename } from 'node:path';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { UsageError } from '../errors.js';
import { NAME_RE } from './paths.js';

/** Writes a file atomically: temp file in the same directory, fsync, rename. */
export async function writeAtomic(
  path: string,
  data: string | Buffer,
  mode = 0o644,
): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(4).toString('hex')}.tmp`);
  const fh = await open(tmp, 'w', mode);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
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
 */
export async function readJson<T>(path: string): Promise<T | undefined> {
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
