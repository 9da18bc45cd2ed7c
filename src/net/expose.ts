/**
 * Exposing a VM's port: DNAT from outside and from the host, hairpin for
 * other guests, forward accept for exactly that flow, on an alias address
 * or a host port. Exposures are stored with the VM (vms/VM/exposures.json),
 * their host changes in the ledger under `expose:VM:PORT/proto`.
 */
import { NotPossibleError, UsageError } from '../errors.js';
import { recordChanges, type Change } from '../state/ledger.js';
import { withLock } from '../state/lock.js';
import {
  addresses,
  iptInsert,
  iptablesForward,
  nftApply,
  setSysctl,
  uplink,
  type NetCtx,
} from './host.js';
import { exposureIptRules } from './iptables.js';
import { owners } from './names.js';
import { exposureChains, exposureRuleset } from './nft.js';
import { existsSync } from 'node:fs';
import {
  vmDir,
  leasedAddress,
  listAllExposures,
  readAttachment,
  readExposures,
  readNet,
  vmNetLockPath,
  writeExposures,
} from './store.js';
import { contains, parseCidr, parseIp } from './subnet.js';
import { release } from './undo.js';
import type { Exposure, Proto } from './types.js';

/** Parses `--on ADDR`, `ADDR:PORT` or `:PORT`. */
export function parseOn(
  on: string | undefined,
  port: number,
): { addr: string | null; port: number } {
  if (on === undefined || on === '') return { addr: null, port };
  const m = /^([0-9.]*)(?::(\d+))?$/.exec(on);
  const addr = m?.[1] ? m[1] : null;
  const p = m?.[2] !== undefined ? Number(m[2]) : port;
  if (
    !m ||
    (addr !== null && parseIp(addr) === undefined) ||
    !(p >= 1 && p <= 65535) ||
    (addr === null && m[2] === undefined)
  )
    throw new UsageError(
      'expose.bad-on',
      `--on must be ADDR, ADDR:PORT or :PORT (IPv4), got ${JSON.stringify(on)}`,
    );
  return { addr, port: p };
}

export function parsePort(s: string): number {
  const n = Number(s);
  if (!/^\d+$/.test(s) || n < 1 || n > 65535)
    throw new UsageError('expose.bad-port', `PORT must be 1–65535, got ${JSON.stringify(s)}`);
  return n;
}

export function parseProto(s: string | undefined): Proto {
  const p = (s ?? 'tcp').toLowerCase();
  if (p !== 'tcp' && p !== 'udp')
    throw new UsageError(
      'expose.bad-proto',
      `--proto must be tcp or udp, got ${JSON.stringify(s)}`,
    );
  return p;
}

export interface ExposeOptions {
  vm: string;
  port: number;
  proto: Proto;
  on?: string;
  addAlias?: boolean;
}

/** The current address of a VM on its network (lease, else reservation). */
async function currentTarget(root: string, vm: string): Promise<{ ip: string; network: string }> {
  const a = await readAttachment(root, vm);
  if (!a && !existsSync(vmDir(root, vm)))
    throw new UsageError('vm.not-found', `no VM named ${JSON.stringify(vm)}`, 'see nestvirt ls');
  if (!a)
    throw new UsageError(
      'expose.not-on-network',
      `VM ${vm} is not on a nestvirt network`,
      `start it with --net NAME (bridge); with --net user use --port HOST:GUEST instead`,
    );
  return { ip: (await leasedAddress(root, a.network, a.mac)) ?? a.ip, network: a.network };
}

async function applyExposure(
  ctx: NetCtx,
  e: Exposure,
  aliasCidr: string | null,
  aliasDev: string | null,
): Promise<Exposure> {
  const owner = owners.expose(e.vm, e.port, e.proto);
  const rec = (c: Change[]) => (c.length ? recordChanges(ctx.root, owner, c) : Promise.resolve());
  const spec = await readNet(ctx.root, e.network);
  if (!spec)
    throw new UsageError('net.not-found', `VM ${e.vm}'s network ${e.network} does not exist`);
  try {
    if (aliasCidr && aliasDev) {
      await ctx.run(['ip', 'addr', 'add', aliasCidr, 'dev', aliasDev]);
      await rec([{ kind: 'addr', addr: aliasCidr, dev: aliasDev }]);
    }
    await rec(await setSysctl(ctx, 'net.ipv4.ip_forward', '1'));
    await nftApply(ctx, exposureRuleset(e, spec));
    await rec([{ kind: 'nft-chains', chains: exposureChains(e) }]);
    const ipt = await iptablesForward(ctx);
    if (ipt.filters)
      for (const r of exposureIptRules(e, spec)) await rec(await iptInsert(ctx, ipt.bin, [r]));
  } catch (err) {
    await release(ctx, owner);
    throw err;
  }
  return e;
}

/** Exposes a VM's port. Refuses a duplicate or a port already exposed on the same address. */
export async function expose(ctx: NetCtx & { uid: number }, o: ExposeOptions): Promise<Exposure> {
  return withLock(
    vmNetLockPath(ctx.root, o.vm),
    `VM ${o.vm}'s network`,
    async () => {
      const on = parseOn(o.on, o.port);
      const target = await currentTarget(ctx.root, o.vm);
      const mine = await readExposures(ctx.root, o.vm);
      if (mine.some((x) => x.port === o.port && x.proto === o.proto))
        throw new UsageError(
          'expose.exists',
          `port ${o.port}/${o.proto} of VM ${o.vm} is already exposed`,
          `nestvirt unexpose ${o.vm} ${o.port}${o.proto === 'udp' ? ' --proto udp' : ''}`,
        );
      const clash = (await listAllExposures(ctx.root)).find(
        (x) =>
          x.proto === o.proto &&
          x.onPort === on.port &&
          (x.onAddr === null || on.addr === null || x.onAddr === on.addr),
      );
      if (clash)
        throw new UsageError(
          'expose.port-taken',
          `${on.addr ?? '*'}:${on.port}/${o.proto} is already exposed for VM ${clash.vm} port ${clash.port}`,
          'pick another --on address or port',
        );
      if (ctx.uid !== 0)
        throw new NotPossibleError(
          'expose.not-root',
          'exposing a port needs root (CAP_NET_ADMIN) for firewall rules',
          'run with sudo; with --net user use --port instead',
        );
      let aliasCidr: string | null = null;
      let aliasDev: string | null = null;
      if (on.addr) {
        const addrs = await addresses(ctx);
        if (!addrs.some((a) => a.local === on.addr)) {
          const up = await uplink(ctx);
          if (!o.addAlias)
            throw new NotPossibleError(
              'expose.no-such-address',
              `${on.addr} is not an address of this host`,
              `add it as an alias: pass --add-alias, or ip addr add ${on.addr}/32 dev ${up?.dev ?? 'UPLINK'}`,
            );
          if (!up)
            throw new NotPossibleError(
              'expose.no-uplink',
              'no default route: cannot tell which interface gets the alias',
              `ip addr add ${on.addr}/32 dev IFACE`,
            );
          // Same prefix as the uplink's own address when the alias is in its subnet.
          const ip = parseIp(on.addr)!;
          const same = addrs.find(
            (a) =>
              a.dev === up.dev &&
              contains(parseCidr(`${maskBase(a.local, a.prefixlen)}/${a.prefixlen}`), ip),
          );
          aliasCidr = `${on.addr}/${same ? same.prefixlen : 32}`;
          aliasDev = up.dev;
        }
      }
      const e: Exposure = {
        vm: o.vm,
        port: o.port,
        proto: o.proto,
        onAddr: on.addr,
        onPort: on.port,
        target: target.ip,
        network: target.network,
        addedAlias: aliasCidr && aliasDev ? { dev: aliasDev, addr: aliasCidr } : null,
        created: new Date().toISOString(),
      };
      await applyExposure(ctx, e, aliasCidr, aliasDev);
      await writeExposures(ctx.root, o.vm, [...mine, e]);
      return e;
    },
    { waitMs: 30_000 },
  );
}

function maskBase(ip: string, prefix: number): string {
  const n = parseIp(ip)!;
  const m = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  const b = (n & m) >>> 0;
  return [b >>> 24, (b >>> 16) & 255, (b >>> 8) & 255, b & 255].join('.');
}

async function unexposeLocked(
  ctx: NetCtx,
  vm: string,
  port: number,
  proto: Proto,
): Promise<Exposure> {
  const mine = await readExposures(ctx.root, vm);
  const e = mine.find((x) => x.port === port && x.proto === proto);
  if (!e)
    throw new UsageError(
      'expose.not-found',
      `port ${port}/${proto} of VM ${vm} is not exposed`,
      `see nestvirt expose ls`,
    );
  const errors = await release(ctx, owners.expose(vm, port, proto));
  if (errors.length)
    throw new NotPossibleError(
      'expose.undo-failed',
      `could not remove every rule of ${vm} ${port}/${proto}: ${errors[0]}`,
      'fix the cause and run unexpose again; what is left is recorded',
    );
  await writeExposures(
    ctx.root,
    vm,
    mine.filter((x) => x !== e),
  );
  return e;
}

/** Removes one exposure, exactly what it added. */
export async function unexpose(
  ctx: NetCtx,
  vm: string,
  port: number,
  proto: Proto,
): Promise<Exposure> {
  return withLock(
    vmNetLockPath(ctx.root, vm),
    `VM ${vm}'s network`,
    () => unexposeLocked(ctx, vm, port, proto),
    { waitMs: 30_000 },
  );
}

/** Removes every exposure of a VM (VM removed). */
export async function unexposeAll(ctx: NetCtx, vm: string): Promise<void> {
  await withLock(
    vmNetLockPath(ctx.root, vm),
    `VM ${vm}'s network`,
    async () => {
      for (const e of await readExposures(ctx.root, vm))
        await unexposeLocked(ctx, vm, e.port, e.proto);
    },
    { waitMs: 30_000 },
  );
}

/** Re-points a VM's exposures at its current address (after start, or when the lease changed). */
export async function syncExposures(ctx: NetCtx, vm: string): Promise<number> {
  return withLock(
    vmNetLockPath(ctx.root, vm),
    `VM ${vm}'s network`,
    async () => {
      const list = await readExposures(ctx.root, vm);
      if (!list.length) return 0;
      const { ip } = await currentTarget(ctx.root, vm);
      let changed = 0;
      const next: Exposure[] = [];
      for (const e of list) {
        if (e.target === ip) {
          next.push(e);
          continue;
        }
        // Rules and any alias nestvirt added are redone together under the same owner.
        await release(ctx, owners.expose(vm, e.port, e.proto));
        const moved = { ...e, target: ip };
        await applyExposure(ctx, moved, e.addedAlias?.addr ?? null, e.addedAlias?.dev ?? null);
        next.push(moved);
        changed++;
      }
      await writeExposures(ctx.root, vm, next);
      return changed;
    },
    { waitMs: 30_000 },
  );
}
