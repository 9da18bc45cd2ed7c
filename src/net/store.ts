/**
 * Where networks and VM attachments live on disk, and reading them.
 *   <root>/nets/NAME/spec.json, dnsmasq.pid, dnsmasq.leases, dnsmasq.log, dhcp-hosts/VM
 *   <root>/vms/VM/nic.json, exposures.json
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Dirs } from '../state/paths.js';
import { readJson, writeJson } from '../state/store.js';
import { NetFiles, parseLeases } from './dnsmasq.js';
import type { Attachment, Exposure, NetSpec } from './types.js';

/** File names in a VM's directory owned by the network layer. */
export const VmNetFiles = { nic: 'nic.json', exposures: 'exposures.json' } as const;

export const netDir = (root: string, name: string): string => join(root, Dirs.nets, name);
export const vmDir = (root: string, vm: string): string => join(root, Dirs.vms, vm);
export const netLockPath = (root: string, name: string): string =>
  join(root, Dirs.locks, `net-${name}.lock`);
export const vmNetLockPath = (root: string, vm: string): string =>
  join(root, Dirs.locks, `vmnet-${vm}.lock`);

export async function readNet(root: string, name: string): Promise<NetSpec | undefined> {
  return readJson<NetSpec>(join(netDir(root, name), NetFiles.spec));
}

export async function listNets(root: string): Promise<NetSpec[]> {
  let names: string[] = [];
  try {
    names = await readdir(join(root, Dirs.nets));
  } catch {
    return [];
  }
  const out: NetSpec[] = [];
  for (const n of names.sort()) {
    const s = await readNet(root, n).catch(() => undefined);
    if (s) out.push(s);
  }
  return out;
}

export async function readAttachment(root: string, vm: string): Promise<Attachment | undefined> {
  return readJson<Attachment>(join(vmDir(root, vm), VmNetFiles.nic));
}

export async function writeAttachment(root: string, a: Attachment): Promise<void> {
  await writeJson(join(vmDir(root, a.vm), VmNetFiles.nic), a);
}

/** Every VM attachment (all networks). */
export async function listAttachments(root: string): Promise<Attachment[]> {
  let names: string[] = [];
  try {
    names = await readdir(join(root, Dirs.vms));
  } catch {
    return [];
  }
  const out: Attachment[] = [];
  for (const n of names.sort()) {
    const a = await readAttachment(root, n).catch(() => undefined);
    if (a) out.push(a);
  }
  return out;
}

export async function readExposures(root: string, vm: string): Promise<Exposure[]> {
  return (await readJson<Exposure[]>(join(vmDir(root, vm), VmNetFiles.exposures))) ?? [];
}

export async function writeExposures(root: string, vm: string, list: Exposure[]): Promise<void> {
  await writeJson(join(vmDir(root, vm), VmNetFiles.exposures), list);
}

/** Every exposure of every VM. */
export async function listAllExposures(root: string): Promise<Exposure[]> {
  let names: string[] = [];
  try {
    names = await readdir(join(root, Dirs.vms));
  } catch {
    return [];
  }
  const out: Exposure[] = [];
  for (const n of names.sort()) out.push(...(await readExposures(root, n).catch(() => [])));
  return out;
}

/** The address dnsmasq leased to a MAC on a network, if any. */
export async function leasedAddress(
  root: string,
  net: string,
  mac: string,
): Promise<string | null> {
  let text = '';
  try {
    text = await readFile(join(netDir(root, net), NetFiles.leases), 'utf8');
  } catch {
    return null;
  }
  const l = parseLeases(text).find((x) => x.mac === mac.toLowerCase());
  return l?.ip ?? null;
}
