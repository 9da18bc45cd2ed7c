/**
 * A VM's directory and how its recorded state is reconciled with reality.
 * Nothing recorded is trusted blindly: a pid counts as this VM's QEMU only
 * when /proc/PID/cmdline carries this VM's pidfile path (QEMU's argv holds
 * it), so a stale pidfile, a reused pid or a QEMU killed with -9 all show as
 * `stopped`, with the last console lines kept in runtime.json.
 */
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { readFile, readdir, open } from 'node:fs/promises';
import { join } from 'node:path';
import { NotPossibleError } from '../errors.js';
import { Dirs, Files, NAME_RE } from '../state/paths.js';
import { readJson, writeJson } from '../state/store.js';
import { acquire } from '../state/lock.js';
import type { LastExit, VmInfo, VmRuntime, VmSpec } from './types.js';

export interface VmPaths {
  name: string;
  dir: string;
  spec: string;
  runtime: string;
  pid: string;
  qmp: string;
  qga: string;
  serial: string;
  serialLog: string;
  qemuLog: string;
  overlay: string;
  seed: string;
  /** The per-VM lock lives outside the VM dir so removing the dir never races a waiter. */
  lock: string;
}

/** Longest unix socket path Linux accepts (sun_path is 108 bytes with the NUL). */
export const MAX_SOCKET_PATH = 107;

export function vmsDir(root: string): string {
  return join(root, Dirs.vms);
}

export function vmPaths(root: string, name: string): VmPaths {
  // One join: the file names are plain names, so `${dir}/${file}` is already
  // normal (ls builds these for every VM).
  const dir = join(root, Dirs.vms, name);
  const f = (file: string): string => `${dir}/${file}`;
  return {
    name,
    dir,
    spec: f(Files.spec),
    runtime: f(Files.runtime),
    pid: f(Files.pid),
    qmp: f(Files.qmp),
    qga: f(Files.qga),
    serial: f(Files.serial),
    serialLog: f(Files.serialLog),
    qemuLog: f(Files.qemuLog),
    overlay: f(Files.overlay),
    seed: f(Files.seed),
    lock: join(root, Dirs.locks, `vm.${name}.lock`),
  };
}

/** Takes the VM's lock (waiting up to waitMs for another command). */
export function lockVm(p: VmPaths, waitMs = 10_000) {
  return acquire(p.lock, `VM ${JSON.stringify(p.name)}`, { waitMs });
}

/** Reads spec.json; throws NotPossibleError naming the VM when it does not exist. */
export async function loadSpec(p: VmPaths): Promise<VmSpec> {
  let spec: VmSpec | undefined;
  try {
    spec = await readJson<VmSpec>(p.spec);
  } catch (e) {
    throw new NotPossibleError(
      'vm.corrupt',
      `VM ${JSON.stringify(p.name)} has an unreadable ${p.spec}: ${(e as Error).message}`,
      `remove it: nestvirt rm --force ${p.name}`,
    );
  }
  if (!spec)
    throw new NotPossibleError(
      'vm.not-found',
      `no VM named ${JSON.stringify(p.name)}`,
      'see `nestvirt ls` for the VMs there are',
    );
  return spec;
}

export async function loadRuntime(p: VmPaths): Promise<VmRuntime> {
  try {
    return (await readJson<VmRuntime>(p.runtime)) ?? { state: 'stopped', pid: null, accel: null };
  } catch {
    return { state: 'stopped', pid: null, accel: null };
  }
}

/** True when PID is a live process whose argv holds `marker` (this VM's pidfile path). */
export async function pidIsOurs(pid: number | null | undefined, marker: string): Promise<boolean> {
  if (!pid || !Number.isInteger(pid) || pid <= 0) return false;
  let cmdline: string;
  try {
    cmdline = await readFile(`/proc/${pid}/cmdline`, 'latin1');
  } catch {
    return false;
  }
  if (!cmdline) return false; // a zombie has an empty cmdline
  return cmdline.split('\0').includes(marker);
}

/** The pid of this VM's QEMU if it is running, else null (pidfile first, then runtime.json). */
export async function livePid(p: VmPaths, rt: VmRuntime): Promise<number | null> {
  let filePid: number | null = null;
  try {
    if (existsSync(p.pid)) filePid = Number(readFileSync(p.pid, 'utf8').trim()) || null;
  } catch {
    /* no pidfile */
  }
  for (const pid of [filePid, rt.pid]) if (await pidIsOurs(pid, p.pid)) return pid;
  return null;
}

/** The last `n` non-empty lines of a file (reads at most the last 64 KiB). */
export async function tailLines(path: string, n: number): Promise<string[]> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch {
    return [];
  }
  try {
    const size = (await fh.stat()).size;
    const len = Math.min(size, 64 * 1024);
    const buf = Buffer.alloc(len);
    await fh.read(buf, 0, len, size - len);
    return (
      buf
        .toString('utf8')
        // eslint-disable-next-line no-control-regex
        .replace(/\x1b\[[0-9;?]*[a-zA-Z]/g, '')
        .split(/\r?\n|\r/)
        .map((l) => l.replace(/[\x00-\x08\x0b-\x1f\x7f]/g, '').trimEnd())
        .filter((l) => l.trim() !== '')
        .slice(-n)
    );
  } finally {
    await fh.close();
  }
}

/** Builds the record of how a VM stopped from its logs. */
export async function lastExit(p: VmPaths, reason: LastExit['reason']): Promise<LastExit> {
  return {
    at: new Date().toISOString(),
    reason,
    consoleTail: await tailLines(p.serialLog, 10),
    qemuTail: (await tailLines(p.qemuLog, 5)).filter((l) => !/^=== /.test(l)),
  };
}

/** Removes runtime files of a stopped VM (sockets, pidfile) so nothing stale remains. */
export async function clearRuntimeFiles(p: VmPaths): Promise<void> {
  for (const f of [p.qmp, p.qga, p.serial, p.pid]) rmSync(f, { force: true });
}

export interface Reconciled {
  spec: VmSpec;
  runtime: VmRuntime;
  pid: number | null;
  /** The record said running but QEMU is gone: runtime was updated. */
  changed: boolean;
}

/**
 * Reconciles a VM's record with what runs. When the record says running and
 * QEMU is gone, the VM becomes stopped with reason `exited` and its last
 * console lines; written back when `write` (the caller holds the lock) or
 * when the lock is free right now.
 */
export async function reconcile(
  p: VmPaths,
  opts: { write?: 'locked' | 'try' | 'no' } = {},
): Promise<Reconciled> {
  const spec = await loadSpec(p);
  const runtime = await loadRuntime(p);
  const pid = await livePid(p, runtime);
  if (pid !== null)
    return {
      spec,
      runtime: { ...runtime, state: 'running', pid },
      pid,
      changed: runtime.pid !== pid,
    };
  if (runtime.state !== 'running')
    return { spec, runtime: { ...runtime, pid: null }, pid: null, changed: false };
  const fixed: VmRuntime = {
    ...runtime,
    state: 'stopped',
    pid: null,
    lastExit: await lastExit(p, 'exited'),
  };
  const mode = opts.write ?? 'try';
  if (mode === 'locked') {
    await writeJson(p.runtime, fixed);
    await clearRuntimeFiles(p);
  } else if (mode === 'try') {
    try {
      const l = await acquire(p.lock, `VM ${p.name}`, { waitMs: 0 });
      try {
        // Re-check under the lock: a `start` may have just finished.
        const again = await loadRuntime(p);
        if (again.state === 'running' && (await livePid(p, again)) === null) {
          await writeJson(p.runtime, fixed);
          await clearRuntimeFiles(p);
        }
      } finally {
        await l.release();
      }
    } catch {
      /* busy: another command is on it; report without writing */
    }
  }
  return { spec, runtime: fixed, pid: null, changed: true };
}

/** Names of the VMs defined under root (directories with a valid name). */
export async function vmNames(root: string): Promise<string[]> {
  let entries: string[];
  try {
    entries = await readdir(vmsDir(root));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  return entries.filter((n) => NAME_RE.test(n)).sort();
}

/** The `ls`/`info` view of a reconciled VM. */
export function vmInfo(p: VmPaths, r: Reconciled): VmInfo {
  const { spec, runtime } = r;
  const ports = spec.nics.flatMap((n) => (n.kind === 'user' ? n.forwards : []));
  return {
    name: spec.name,
    status: runtime.state,
    image: spec.image,
    cpus: spec.cpus,
    memoryMiB: spec.memoryMiB,
    nested: spec.nested,
    accel: {
      requested: spec.accel,
      effective: runtime.accel ?? null,
      note: runtime.accelNote ?? null,
    },
    pid: r.pid,
    startedAt: runtime.state === 'running' ? (runtime.startedAt ?? null) : null,
    readyMs: runtime.state === 'running' ? (runtime.readyMs ?? null) : null,
    level: runtime.chain?.level ?? null,
    chain: runtime.chain ?? null,
    ports,
    nics: spec.nics,
    disk: spec.disk
      ? { path: spec.disk.path, backing: spec.disk.backing ?? null, sizeBytes: spec.disk.sizeBytes }
      : null,
    dir: p.dir,
    sockets: { qmp: p.qmp, qga: p.qga, serial: p.serial },
    logs: { serial: p.serialLog, qemu: p.qemuLog },
    createdAt: spec.createdAt,
    lastExit: runtime.state === 'stopped' ? (runtime.lastExit ?? null) : null,
  };
}
