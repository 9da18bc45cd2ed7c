/**
 * A VM's NIC on a nestvirt network: a tap named after the VM, on the
 * network's bridge, a stable MAC and a reserved address. This is the seam
 * the VM layer calls: `attachVm` before starting QEMU (returns the NIC for
 * qemuArgv: `{ kind: 'tap', ifname, mac }`), `detachVm` when the VM stops,
 * `releaseVm` when it is removed.
 */
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { crypto } from '../util/lazy.js';
import { UsageError } from '../errors.js';
import { recordChanges } from '../state/ledger.js';
import { withLock } from '../state/lock.js';
import { NetFiles, hostLine } from './dnsmasq.js';
import { linkExists, type NetCtx } from './host.js';
import { macFor, owners, tapName } from './names.js';
import { ensureNetwork } from './network.js';
import {
  leasedAddress,
  listAttachments,
  netDir,
  readAttachment,
  readNet,
  vmDir,
  vmNetLockPath,
  VmNetFiles,
  writeAttachment,
} from './store.js';
import { formatIp, layout, parseCidr } from './subnet.js';
import { release } from './undo.js';
import type { Attachment, NetSpec } from './types.js';
import { unexposeAll, syncExposures } from './expose.js';

/** The NIC the VM layer passes to qemuArgv. */
export interface TapNic {
  kind: 'tap';
  ifname: string;
  mac: string;
}

/** Picks the VM's reserved address: a hash of its name into the reserved half, first free. */
export function pickAddress(spec: NetSpec, vm: string, used: Set<string>): string {
  const lay = layout(parseCidr(spec.subnet));
  const [lo, hi] = lay.reserved;
  const n = hi - lo + 1;
  const start =
    parseInt(
      crypto()
        .createHash('sha256')
        .update('ip:' + vm)
        .digest('hex')
        .slice(0, 8),
      16,
    ) % n;
  for (let i = 0; i < n; i++) {
    const ip = formatIp(lo + ((start + i) % n));
    if (!used.has(ip)) return ip;
  }
  throw new UsageError(
    'net.full',
    `network ${spec.name} has no free reserved address left (${n} in use)`,
    'create a larger network: nestvirt net create NAME --subnet 10.x.0.0/22',
  );
}

/**
 * Attaches VM to network NAME (creating `default` on first use), creates its
 * tap and returns the NIC. Idempotent: a VM already on that network keeps
 * its MAC and address; its tap is recreated when missing.
 */
export async function attachVm(
  ctx: NetCtx & { uid: number },
  vm: string,
  network: string,
): Promise<TapNic & { ip: string; network: string; bridge: string }> {
  const spec = await ensureNetwork(ctx, network);
  return withLock(
    vmNetLockPath(ctx.root, vm),
    `VM ${vm}'s network`,
    async () => {
      let a = await readAttachment(ctx.root, vm);
      if (a && a.network !== network) {
        await detachTap(ctx, vm);
        await rm(join(netDir(ctx.root, a.network), NetFiles.hostsDir, vm), { force: true });
        a = undefined;
      }
      if (!a) {
        const others = (await listAttachments(ctx.root)).filter(
          (x) => x.network === network && x.vm !== vm,
        );
        const mac = macFor(vm);
        const clash = others.find((x) => x.mac === mac);
        if (clash)
          throw new UsageError(
            'net.mac-clash',
            `VM ${vm}'s MAC ${mac} equals VM ${clash.vm}'s on ${network}`,
            'rename one of the VMs',
          );
        a = {
          vm,
          network,
          tap: tapName(vm),
          mac,
          ip: pickAddress(spec, vm, new Set([...others.map((x) => x.ip), spec.gateway])),
        };
        await writeAttachment(ctx.root, a);
      }
      await writeFile(join(netDir(ctx.root, network), NetFiles.hostsDir, vm), hostLine(a), {
        mode: 0o644,
      });
      await createTap(ctx, a, spec);
      return {
        kind: 'tap' as const,
        ifname: a.tap,
        mac: a.mac,
        ip: a.ip,
        network,
        bridge: spec.bridge,
      };
    },
    { waitMs: 30_000 },
  );
}

async function createTap(ctx: NetCtx, a: Attachment, spec: NetSpec): Promise<void> {
  const owner = owners.tap(a.vm);
  if (!(await linkExists(ctx, a.tap))) {
    await ctx.run(['ip', 'tuntap', 'add', 'dev', a.tap, 'mode', 'tap']);
    await recordChanges(ctx.root, owner, [{ kind: 'link', name: a.tap }]);
  }
  try {
    await ctx.run([
      'ip',
      'link',
      'set',
      'dev',
      a.tap,
      'mtu',
      String(spec.mtu),
      'master',
      spec.bridge,
      'up',
    ]);
  } catch (e) {
    await release(ctx, owner);
    throw e;
  }
}

async function detachTap(ctx: NetCtx, vm: string): Promise<void> {
  const errors = await release(ctx, owners.tap(vm));
  if (errors.length) throw new Error(`could not remove VM ${vm}'s tap: ${errors[0]}`);
}

/** Removes the VM's tap (VM stopped). Its MAC, address and exposures stay. */
export async function detachVm(ctx: NetCtx, vm: string): Promise<void> {
  await withLock(vmNetLockPath(ctx.root, vm), `VM ${vm}'s network`, () => detachTap(ctx, vm), {
    waitMs: 30_000,
  });
}

/** Removes everything network of a VM (VM removed): exposures, tap, reservation. */
export async function releaseVm(ctx: NetCtx, vm: string): Promise<void> {
  await unexposeAll(ctx, vm);
  await withLock(
    vmNetLockPath(ctx.root, vm),
    `VM ${vm}'s network`,
    async () => {
      await detachTap(ctx, vm);
      const a = await readAttachment(ctx.root, vm);
      if (a) await rm(join(netDir(ctx.root, a.network), NetFiles.hostsDir, vm), { force: true });
      await rm(join(vmDir(ctx.root, vm), VmNetFiles.nic), { force: true });
    },
    { waitMs: 30_000 },
  );
}

/** The VM's address: dnsmasq's lease when there is one, else the reservation. */
export async function vmAddress(
  root: string,
  vm: string,
): Promise<{
  network: string;
  ip: string;
  source: 'lease' | 'reserved';
  mac: string;
  tap: string;
} | null> {
  const a = await readAttachment(root, vm);
  if (!a) return null;
  const leased = await leasedAddress(root, a.network, a.mac);
  return {
    network: a.network,
    ip: leased ?? a.ip,
    source: leased ? 'lease' : 'reserved',
    mac: a.mac,
    tap: a.tap,
  };
}

/** Called by the VM layer after start: re-points exposures at the VM's current address. */
export async function vmStarted(ctx: NetCtx, vm: string): Promise<void> {
  await syncExposures(ctx, vm);
}
