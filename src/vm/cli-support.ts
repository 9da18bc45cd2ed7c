/**
 * What the thin VM commands in src/cli/ share: dependencies from the command
 * context, the image lookup, and rendering of a VM for people.
 */
import type { Context } from '../cli/command.js';
import { eprintln, paint, table, type Output } from '../cli/output.js';
import { stateRoot } from '../state/paths.js';
import { formatBytes } from './parse.js';
import type { VmDeps, ImageLookup } from './lifecycle.js';
import type { VmInfo } from './types.js';
import { imageLookup } from './images.js';

/** Lifecycle dependencies for a CLI command: state root, runner, notes on stderr. */
export function vmDeps(ctx: Context, opts: { quiet?: boolean } = {}): VmDeps {
  return {
    root: stateRoot(ctx.env, ctx.uid),
    run: ctx.run,
    env: ctx.env,
    note: (line) => {
      if (!opts.quiet) eprintln(ctx.out, `${paint(ctx.out, 'yellow', 'note:')} ${line}`);
    },
  };
}

/** The image store's lookup (src/image/store.ts), when this build has it. */
export function images(): ImageLookup | undefined {
  return imageLookup;
}

function ports(v: VmInfo): string {
  return (
    v.ports
      .map(
        (f) =>
          `${f.hostAddr === '127.0.0.1' ? '' : f.hostAddr + ':'}${f.hostPort}->${f.guestPort}${f.proto === 'udp' ? '/udp' : ''}`,
      )
      .join(',') || '-'
  );
}

/** The `ls` table. */
export function vmTable(out: Output, vms: VmInfo[]): string {
  const rows = [
    ['NAME', 'STATUS', 'IMAGE', 'CPUS', 'MEMORY', 'ACCEL', 'LEVEL', 'PORTS', 'ADDRESS'],
  ];
  for (const v of vms)
    rows.push([
      v.name,
      v.status === 'running' ? paint(out, 'green', 'running') : paint(out, 'gray', 'stopped'),
      v.image ?? '(kernel)',
      String(v.cpus),
      formatBytes(v.memoryMiB * 1024 * 1024),
      v.accel.effective ?? v.accel.requested,
      v.level === null ? '-' : String(v.level),
      ports(v),
      (v.addresses ?? []).map((a) => `${a.ip} (${a.network})`).join(' ') || '-',
    ]);
  return table(rows);
}

/** `info` for people. */
export function vmText(out: Output, v: VmInfo): string {
  const lines: string[] = [];
  const kv = (k: string, val: string): void =>
    void lines.push(`${paint(out, 'bold', k.padEnd(9))} ${val}`);
  kv('name', v.name);
  kv(
    'status',
    v.status === 'running'
      ? `running (pid ${v.pid}, since ${v.startedAt}${v.readyMs !== null ? `, ready in ${(v.readyMs / 1000).toFixed(1)} s` : ''})`
      : 'stopped',
  );
  kv('image', v.image ?? '(direct kernel boot)');
  kv('cpus', `${v.cpus}${v.nested ? ' (nested: VT-x/AMD-V exposed)' : ''}`);
  kv('memory', formatBytes(v.memoryMiB * 1024 * 1024));
  kv(
    'accel',
    `${v.accel.effective ?? '-'} (asked: ${v.accel.requested})${v.accel.note ? `; ${v.accel.note}` : ''}`,
  );
  if (v.chain)
    kv(
      'level',
      `${v.level ?? '?'} (relative ${v.chain.relative}): ${v.chain.chain.map((h) => `${h.name}[${h.runner}]`).join(' → ')}`,
    );
  kv(
    'network',
    v.nics
      .map((n) =>
        n.kind === 'user'
          ? `user (NAT)${n.forwards.length ? ', ports ' + ports(v) : ''}`
          : `tap ${n.ifname} ${n.mac}${n.network ? ` on ${n.network}` : ''}`,
      )
      .join('; ') || 'none',
  );
  for (const a of v.addresses ?? [])
    kv(
      'address',
      `${a.ip} on ${a.network} (${a.source === 'lease' ? 'DHCP lease' : 'reserved, no lease yet'})`,
    );
  if (v.disk)
    kv(
      'disk',
      `${v.disk.path} (${formatBytes(v.disk.sizeBytes)}${v.disk.backing ? `, over ${v.disk.backing}` : ''})`,
    );
  kv('dir', v.dir);
  if (v.lastExit && v.status === 'stopped') {
    const why = {
      stopped: 'stopped by nestvirt',
      killed: 'killed by nestvirt',
      exited: 'QEMU ended without nestvirt (guest powered off, crashed, or was killed)',
    }[v.lastExit.reason];
    kv('last exit', `${v.lastExit.at}: ${why}`);
    if (v.lastExit.qemuTail.length) kv('qemu said', v.lastExit.qemuTail.join(' | '));
    if (v.lastExit.consoleTail.length) {
      lines.push(paint(out, 'bold', 'last console lines:'));
      for (const l of v.lastExit.consoleTail) lines.push(`  ${l}`);
    }
  }
  return lines.join('\n');
}
