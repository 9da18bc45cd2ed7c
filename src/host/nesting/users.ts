/**
 * Who is using KVM right now: processes holding /dev/kvm (or a KVM VM file
 * descriptor) open, found by scanning <root>/proc/<pid>/fd links, named by
 * their nestvirt VM (from <state>/vms/NAME/qemu.pid), QEMU's `-name`, or
 * their command name. Used to refuse unloading a module that VMs use.
 */
import { readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { Dirs, Files } from '../../state/paths.js';
import { readRootFile } from './facts.js';

export interface KvmUser {
  pid: number;
  /** /proc/<pid>/comm, e.g. `qemu-system-x86`. */
  comm: string;
  /** The VM's name: nestvirt's VM name, else QEMU's -name, else null. */
  name: string | null;
  /** True when the VM is one nestvirt started (so `nestvirt stop NAME` works). */
  nestvirt: boolean;
}

/** A /proc fd link target that means "this process uses KVM". */
function isKvmLink(target: string): boolean {
  return target === '/dev/kvm' || /^anon_inode:kvm-(vm|vcpu)/.test(target);
}

/** QEMU's guest name from its argv (`-name web` or `-name guest=web,debug-threads=on`). */
export function qemuName(argv: string[]): string | null {
  const i = argv.findIndex((a) => a === '-name' || a === '--name');
  const v = i >= 0 ? argv[i + 1] : undefined;
  if (!v) return null;
  const parts = v.split(',');
  const guest = parts.find((p) => p.startsWith('guest='));
  if (guest) return guest.slice('guest='.length);
  return parts[0]!.includes('=') ? null : parts[0]!;
}

/** pid -> nestvirt VM name, from <stateRoot>/vms/NAME/qemu.pid. */
export async function nestvirtPids(stateRoot: string): Promise<Map<number, string>> {
  const out = new Map<number, string>();
  let names: string[] = [];
  try {
    names = await readdir(join(stateRoot, Dirs.vms));
  } catch {
    return out;
  }
  for (const n of names) {
    const pid = Number((await readRootFile(join(stateRoot, Dirs.vms, n), Files.pid))?.trim());
    if (Number.isInteger(pid) && pid > 0) out.set(pid, n);
  }
  return out;
}

/** Processes under <root>/proc that hold KVM open, sorted by pid. */
export async function findKvmUsers(root: string, stateRoot: string): Promise<KvmUser[]> {
  let entries: string[];
  try {
    entries = await readdir(join(root, 'proc'));
  } catch {
    return [];
  }
  const ours = await nestvirtPids(stateRoot);
  const users: KvmUser[] = [];
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    const pid = Number(e);
    if (pid === process.pid && root === '/') continue;
    let fds: string[];
    try {
      fds = await readdir(join(root, 'proc', e, 'fd'));
    } catch {
      continue; // gone, or not ours to read
    }
    let uses = false;
    for (const fd of fds) {
      try {
        if (isKvmLink(await readlink(join(root, 'proc', e, 'fd', fd)))) {
          uses = true;
          break;
        }
      } catch {
        /* closed meanwhile */
      }
    }
    if (!uses) continue;
    const comm = (await readRootFile(root, `proc/${e}/comm`))?.trim() || '?';
    const argv = ((await readRootFile(root, `proc/${e}/cmdline`)) ?? '')
      .split('\0')
      .filter(Boolean);
    const vm = ours.get(pid);
    users.push({ pid, comm, name: vm ?? qemuName(argv), nestvirt: vm !== undefined });
  }
  return users.sort((a, b) => a.pid - b.pid);
}

/** One line naming who uses the module, for the refusal message. */
export function describeUsers(
  module: string,
  users: KvmUser[],
  refcnt: number,
  holders: string[],
): string {
  if (users.length === 0) {
    const h = holders.length
      ? `, needed by module${holders.length > 1 ? 's' : ''} ${holders.join(', ')}`
      : '';
    return `${module} is in use (reference count ${refcnt}${h}) by processes nestvirt cannot see`;
  }
  const list = users
    .map((u) => (u.name ? `${u.name} (pid ${u.pid}, ${u.comm})` : `pid ${u.pid} (${u.comm})`))
    .join(', ');
  return `${module} is in use by ${users.length} VM${users.length > 1 ? 's' : ''}: ${list}`;
}

/** The fix for an in-use module: stop the VMs (nestvirt's by name). */
export function stopHint(users: KvmUser[]): string {
  const ours = users.filter((u) => u.nestvirt).map((u) => `nestvirt stop ${u.name}`);
  const others = users.filter((u) => !u.nestvirt).map((u) => `shut down pid ${u.pid}`);
  const cmds = [...ours, ...others];
  if (cmds.length === 0) return 'stop the VMs using KVM first (see `fuser -v /dev/kvm`) and retry';
  return `stop them first (${cmds.join(', ')}) and retry`;
}
