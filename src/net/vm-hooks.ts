/**
 * The network layer's side of the VM NIC seam (src/vm/nics.ts): the VM
 * layer calls these at create, start, stop and rm. A tap NIC carries the
 * network's name; the tap itself exists only while the VM runs.
 */
import { NotPossibleError, UsageError } from '../errors.js';
import type { Runner } from '../util/exec.js';
import { attachVm, detachVm, releaseVm, vmAddress, vmStarted } from './attach.js';
import { macFor, tapName } from './names.js';
import { DEFAULT_NET } from './network.js';
import { readAttachment, readNet } from './store.js';

export interface HookDeps {
  root: string;
  run: Runner;
  uid?: number;
}

/** A tap NIC as recorded in the VM's spec. */
export interface NetTapNic {
  kind: 'tap';
  ifname: string;
  mac: string;
  network?: string;
}

const uidOf = (d: HookDeps): number => d.uid ?? process.getuid?.() ?? 0;

/**
 * Resolves `--net NAME` at `run`: checks the network exists (or is `default`,
 * made on first start) and that bridges are possible here, and returns the
 * VM's tap NIC (deterministic tap name and MAC).
 */
export function netResolver(d: HookDeps) {
  let named = 0;
  return async (net: string, vm: string): Promise<NetTapNic> => {
    if (named++ > 0)
      throw new UsageError(
        'net.one-network',
        'a VM can be on one nestvirt network (plus --net user)',
        'drop the second --net NAME',
      );
    if (uidOf(d) !== 0)
      throw new NotPossibleError(
        'net.not-root',
        `--net ${net} needs root (CAP_NET_ADMIN) for its tap and bridge`,
        'use QEMU user-mode networking instead: --net user --port HOST:GUEST',
      );
    if (net !== DEFAULT_NET && !(await readNet(d.root, net)))
      throw new UsageError(
        'net.not-found',
        `--net ${net}: no such network`,
        `create it: nestvirt net create ${net}  (or use --net default, or --net user)`,
      );
    return { kind: 'tap', ifname: tapName(vm), mac: macFor(vm), network: net };
  };
}

/** Before QEMU starts: network up (default created on first use), tap on its bridge, address reserved. */
export async function vmNicsUp(
  d: HookDeps,
  vm: string,
  nics: ReadonlyArray<{ kind: string; network?: string }>,
): Promise<void> {
  for (const n of nics)
    if (n.kind === 'tap' && n.network) await attachVm({ ...d, uid: uidOf(d) }, vm, n.network);
}

/** After QEMU started: exposures re-pointed at the VM's current address. */
export async function vmNicsStarted(d: HookDeps, vm: string): Promise<void> {
  if (await readAttachment(d.root, vm)) await vmStarted(d, vm);
}

/** After the VM stopped (or QEMU failed to start): its tap goes. */
export async function vmNicsDown(d: HookDeps, vm: string): Promise<void> {
  if (await readAttachment(d.root, vm)) await detachVm(d, vm);
}

/** Before the VM's directory is removed: exposures, tap and reservation go. */
export async function vmNicsRemoved(d: HookDeps, vm: string): Promise<void> {
  if (await readAttachment(d.root, vm)) await releaseVm(d, vm);
}

/** The VM's addresses on nestvirt networks, for ls/info. */
export async function vmAddresses(
  root: string,
  vm: string,
): Promise<
  Array<{ network: string; ip: string; source: 'lease' | 'reserved'; mac: string; tap: string }>
> {
  const a = await vmAddress(root, vm);
  return a ? [a] : [];
}
