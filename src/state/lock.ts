/**
 * Per-object locks. A lock is a file created with O_EXCL holding the pid
 * and command of its holder; a lock whose holder is dead is stale and is
 * taken over, so a crashed command blocks nobody.
 */
import { readFile, rm, stat } from 'node:fs/promises';
import { closeSync, mkdirSync, openSync, rmSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { BusyError } from '../errors.js';

export interface Lock {
  path: string;
  release(): Promise<void>;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Takes the lock at `path`. Waits up to `waitMs` for a live holder, then
 * throws BusyError naming it.
 */
export async function acquire(
  path: string,
  what: string,
  opts: { waitMs?: number } = {},
): Promise<Lock> {
  mkdirSync(dirname(path), { recursive: true });
  const deadline = Date.now() + (opts.waitMs ?? 0);
  const me = JSON.stringify({
    pid: process.pid,
    cmd: process.argv.slice(2).join(' '),
    at: new Date().toISOString(),
  });
  for (;;) {
    try {
      // Synchronous: taking a free lock is on the path of every command.
      const fd = openSync(path, 'wx');
      try {
        writeSync(fd, me);
      } finally {
        closeSync(fd);
      }
      return {
        path,
        release: async () => {
          rmSync(path, { force: true });
        },
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    let holder: { pid?: number; cmd?: string } = {};
    try {
      holder = JSON.parse(await readFile(path, 'utf8')) as typeof holder;
    } catch {
      // Being written right now, or garbage: treat garbage older than 2 s as stale.
      holder = {};
    }
    if (typeof holder.pid === 'number' && !alive(holder.pid)) {
      // Stale: remove only if it is still the same stale content.
      await takeOverStale(path, holder.pid);
      continue;
    }
    if (holder.pid === undefined && (await ageMs(path)) > 2000) {
      await rm(path, { force: true });
      continue;
    }
    if (Date.now() >= deadline)
      throw new BusyError(
        what,
        holder.pid ? `pid ${holder.pid} (nestvirt ${holder.cmd ?? ''})`.trim() : 'another command',
      );
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function takeOverStale(path: string, pid: number): Promise<void> {
  try {
    const now = JSON.parse(await readFile(path, 'utf8')) as { pid?: number };
    if (now.pid === pid) await rm(path, { force: true });
  } catch {
    /* gone already */
  }
}

async function ageMs(path: string): Promise<number> {
  try {
    return Date.now() - (await stat(path)).mtimeMs;
  } catch {
    return 0;
  }
}

/** Runs fn while holding the lock. */
export async function withLock<T>(
  path: string,
  what: string,
  fn: () => Promise<T>,
  opts: { waitMs?: number } = {},
): Promise<T> {
  const lock = await acquire(path, what, opts);
  try {
    return await fn();
  } finally {
    await lock.release();
  }
}
