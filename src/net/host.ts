/**
 * Reading and changing the host's network through the Runner: links,
 * addresses, routes, sysctls, nft and iptables. Every change returns the
 * ledger record that undoes it (see undo.ts).
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Runner } from '../util/exec.js';
import type { Change } from '../state/ledger.js';
import { NFT_FAMILY, NFT_TABLE } from './names.js';
import { chainsInJson } from './nft.js';
import { forwardFilters, parseForwardChain, type IptRule, insertArgv } from './iptables.js';
import { parseLoose, type Taken } from './subnet.js';

/** What host-changing code needs: the state root, a runner, and where /proc is. */
export interface NetCtx {
  root: string;
  run: Runner;
  /** /proc, so tests can point sysctls elsewhere; /proc/sys/net is per network namespace. */
  proc?: string;
}

interface IpLink {
  ifname: string;
  mtu: number;
  operstate?: string;
  master?: string;
  flags?: string[];
  linkinfo?: { info_kind?: string };
}

/** `ip -j -d link show [dev NAME]`; [] when the link does not exist. */
export async function links(ctx: NetCtx, name?: string): Promise<IpLink[]> {
  const r = await ctx.run(['ip', '-j', '-d', 'link', 'show', ...(name ? ['dev', name] : [])], {
    check: false,
  });
  if (r.code !== 0) return [];
  return JSON.parse(r.stdout || '[]') as IpLink[];
}

export async function linkExists(ctx: NetCtx, name: string): Promise<boolean> {
  return (await links(ctx, name)).length > 0;
}

/** The default route's interface and its MTU (null when there is no default route). */
export async function uplink(ctx: NetCtx): Promise<{ dev: string; mtu: number } | null> {
  const r = await ctx.run(['ip', '-j', '-4', 'route', 'show', 'default'], { check: false });
  const routes = JSON.parse(r.stdout || '[]') as Array<{ dev?: string; metric?: number }>;
  const best = routes.filter((x) => x.dev).sort((a, b) => (a.metric ?? 0) - (b.metric ?? 0))[0];
  if (!best?.dev) return null;
  const l = (await links(ctx, best.dev))[0];
  return { dev: best.dev, mtu: l?.mtu ?? 1500 };
}

export interface Addr {
  dev: string;
  local: string;
  prefixlen: number;
}

/** IPv4 addresses on this host. */
export async function addresses(ctx: NetCtx): Promise<Addr[]> {
  const r = await ctx.run(['ip', '-j', '-4', 'addr', 'show'], { check: false });
  const list = JSON.parse(r.stdout || '[]') as Array<{
    ifname: string;
    addr_info?: Array<{ family: string; local: string; prefixlen: number }>;
  }>;
  return list.flatMap((l) =>
    (l.addr_info ?? [])
      .filter((a) => a.family === 'inet')
      .map((a) => ({ dev: l.ifname, local: a.local, prefixlen: a.prefixlen })),
  );
}

/** Routes and addresses a new subnet must not overlap (skipping `exceptDev`, e.g. our own bridge). */
export async function takenByHost(ctx: NetCtx, exceptDev?: string): Promise<Taken[]> {
  const out: Taken[] = [];
  const r = await ctx.run(['ip', '-j', '-4', 'route', 'show', 'table', 'all'], { check: false });
  const routes = JSON.parse(r.stdout || '[]') as Array<{
    dst?: string;
    dev?: string;
    type?: string;
    table?: string;
  }>;
  for (const rt of routes) {
    if (!rt.dst || rt.dst === 'default' || rt.dev === exceptDev || rt.dev === 'lo') continue;
    if (rt.type && rt.type !== 'unicast' && rt.type !== 'local') continue;
    const c = parseLoose(rt.dst);
    if (c) out.push({ cidr: c, what: `the route to ${rt.dst}${rt.dev ? ` on ${rt.dev}` : ''}` });
  }
  for (const a of await addresses(ctx)) {
    if (a.dev === exceptDev || a.dev === 'lo') continue;
    const c = parseLoose(a.local, a.prefixlen);
    if (c) out.push({ cidr: c, what: `${a.local}/${a.prefixlen} on ${a.dev}` });
  }
  return out;
}

function sysctlPath(ctx: NetCtx, key: string): string {
  return join(ctx.proc ?? '/proc', 'sys', ...key.split('.'));
}

export async function readSysctl(ctx: NetCtx, key: string): Promise<string | null> {
  try {
    return (await readFile(sysctlPath(ctx, key), 'utf8')).trim();
  } catch {
    return null;
  }
}

/** Sets a sysctl; returns the undo record when the value changed. */
export async function setSysctl(ctx: NetCtx, key: string, value: string): Promise<Change[]> {
  const prev = await readSysctl(ctx, key);
  if (prev === value) return [];
  await writeFile(sysctlPath(ctx, key), value + '\n');
  return [{ kind: 'sysctl', key, prev, value }];
}

/** Runs an nft script as one transaction. */
export async function nftApply(ctx: NetCtx, script: string): Promise<void> {
  await ctx.run(['nft', '-f', '-'], { input: script });
}

/** Chains currently in nestvirt's table ([] when the table does not exist). */
export async function nftChains(ctx: NetCtx): Promise<string[]> {
  const r = await ctx.run(['nft', '-j', 'list', 'table', NFT_FAMILY, NFT_TABLE], { check: false });
  if (r.code !== 0) return [];
  return chainsInJson(r.stdout);
}

/** Deletes nestvirt's table when no chain is left in it. */
export async function nftDropEmptyTable(ctx: NetCtx): Promise<void> {
  const r = await ctx.run(['nft', '-j', 'list', 'table', NFT_FAMILY, NFT_TABLE], { check: false });
  if (r.code === 0 && chainsInJson(r.stdout).length === 0)
    await ctx.run(['nft', 'delete', 'table', NFT_FAMILY, NFT_TABLE], { check: false });
}

/** The iptables front end in use and whether its FORWARD chain can drop our traffic. */
export async function iptablesForward(ctx: NetCtx): Promise<{
  bin: string;
  backend: 'nf_tables' | 'legacy' | 'none';
  policy: string;
  rules: string[];
  filters: boolean;
}> {
  const none = {
    bin: 'iptables',
    backend: 'none' as const,
    policy: 'ACCEPT',
    rules: [],
    filters: false,
  };
  const v = await ctx.run(['iptables', '-V'], { check: false }).catch(() => null);
  if (!v || v.code !== 0) return none;
  const backend = v.stdout.includes('nf_tables') ? 'nf_tables' : 'legacy';
  if (backend === 'nf_tables') {
    // Listing through iptables-nft would create its tables; look with nft first.
    const t = await ctx.run(['nft', '-j', 'list', 'chain', 'ip', 'filter', 'FORWARD'], {
      check: false,
    });
    if (t.code !== 0) return { ...none, backend };
  }
  const s = await ctx.run(['iptables', '-w', '-S', 'FORWARD'], { check: false });
  if (s.code !== 0) return { ...none, backend };
  const chain = parseForwardChain(s.stdout);
  return { bin: 'iptables', backend, ...chain, filters: forwardFilters(chain) };
}

/** Inserts iptables rules, returning their undo records. Reverts the ones inserted on failure. */
export async function iptInsert(ctx: NetCtx, bin: string, rules: IptRule[]): Promise<Change[]> {
  const done: Change[] = [];
  for (const rule of rules) {
    await ctx.run(insertArgv(bin, rule));
    done.push({ kind: 'iptables', bin, rule });
  }
  return done;
}

/** True when pid is alive and is `comm`. */
export async function processIs(ctx: NetCtx, pid: number, comm: string): Promise<boolean> {
  try {
    return (await readFile(join(ctx.proc ?? '/proc', String(pid), 'comm'), 'utf8')).trim() === comm;
  } catch {
    return false;
  }
}

export async function readPid(file: string): Promise<number | null> {
  try {
    const n = Number((await readFile(file, 'utf8')).trim());
    return Number.isInteger(n) && n > 0 ? n : null;
  } catch {
    return null;
  }
}
