/**
 * `logs`: the VM's serial console log (serial.log, kept across starts), in
 * full or its last lines, and followed (`-f`) until the VM stops.
 */
import { open, stat } from 'node:fs/promises';
import type { Writable } from 'node:stream';
import { pidIsOurs, type VmPaths } from './state.js';

/** Copies bytes [from, to) of a file to out; returns the new offset. */
async function copyRange(path: string, from: number, out: Writable): Promise<number> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch {
    return from;
  }
  try {
    const size = (await fh.stat()).size;
    if (size < from) from = 0; // truncated: start over
    let pos = from;
    const buf = Buffer.alloc(64 * 1024);
    while (pos < size) {
      const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, size - pos), pos);
      if (bytesRead <= 0) break;
      out.write(Buffer.from(buf.subarray(0, bytesRead)));
      pos += bytesRead;
    }
    return pos;
  } finally {
    await fh.close();
  }
}

/** Offset where the last `n` lines of a file start. */
async function offsetOfLastLines(path: string, n: number): Promise<number> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch {
    return 0;
  }
  try {
    const size = (await fh.stat()).size;
    const len = Math.min(size, 1024 * 1024);
    const buf = Buffer.alloc(len);
    await fh.read(buf, 0, len, size - len);
    let count = 0;
    for (let i = len - 1; i >= 0; i--) {
      if (buf[i] === 0x0a && i !== len - 1 && ++count >= n) return size - len + i + 1;
    }
    return size - len;
  } finally {
    await fh.close();
  }
}

/** Prints the log (all of it, or the last `lines`), then follows it while the VM runs. */
export async function printLogs(
  p: VmPaths,
  out: Writable,
  opts: { lines?: number; follow?: boolean; pid?: number | null; signal?: AbortSignal } = {},
): Promise<void> {
  let pos = opts.lines !== undefined ? await offsetOfLastLines(p.serialLog, opts.lines) : 0;
  pos = await copyRange(p.serialLog, pos, out);
  if (!opts.follow) return;
  let lastAlive = Date.now();
  for (;;) {
    if (opts.signal?.aborted) return;
    await new Promise((r) => setTimeout(r, 150));
    pos = await copyRange(p.serialLog, pos, out);
    if (Date.now() - lastAlive > 1000) {
      if (!(await pidIsOurs(opts.pid ?? null, p.pid))) {
        pos = await copyRange(p.serialLog, pos, out);
        return;
      }
      try {
        await stat(p.dir);
      } catch {
        return;
      }
      lastAlive = Date.now();
    }
  }
}
