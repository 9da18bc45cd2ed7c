/**
 * Deterministic names for what nestvirt adds to the host: bridges, taps,
 * MACs and nft chains. Deterministic names are how teardown finds exactly
 * what nestvirt made, and how a reader of `ip link` tells it apart.
 */
import { crypto } from '../util/lazy.js';

/** Linux interface names are at most 15 bytes (IFNAMSIZ - 1). */
export const IFNAME_MAX = 15;
export const BRIDGE_PREFIX = 'nv-';
export const TAP_PREFIX = 'nvt-';

function hex(s: string, n: number): string {
  return crypto().createHash('sha256').update(s).digest('hex').slice(0, n);
}

/** The bridge of network NAME: `nv-NAME` when it fits, else `nv-` + 12 hex of a hash. */
export function bridgeName(net: string): string {
  const plain = BRIDGE_PREFIX + net;
  if (plain.length <= IFNAME_MAX && /^[a-zA-Z0-9_-]+$/.test(net)) return plain;
  return BRIDGE_PREFIX + hex('net:' + net, IFNAME_MAX - BRIDGE_PREFIX.length);
}

/** The tap of VM NAME: `nvt-` + 11 hex of a hash of the name. */
export function tapName(vm: string): string {
  return TAP_PREFIX + hex('vm:' + vm, IFNAME_MAX - TAP_PREFIX.length);
}

/** A stable, locally administered unicast MAC for VM NAME (QEMU's 52:54:00 OUI prefix). */
export function macFor(vm: string): string {
  const h = hex('mac:' + vm, 6);
  return ['52', '54', '00', h.slice(0, 2), h.slice(2, 4), h.slice(4, 6)].join(':');
}

/** Name of nestvirt's own nft table (family inet). */
export const NFT_TABLE = 'nestvirt';
export const NFT_FAMILY = 'inet';

/** nft chain for a network's purpose, e.g. `nat.default`. */
export function netChain(purpose: 'nat' | 'fwd', net: string): string {
  return `${purpose}.${net}`;
}

/** nft chain for an exposure's purpose, e.g. `pre.web.8000-tcp`. */
export function exposeChain(
  purpose: 'pre' | 'out' | 'post' | 'fwd',
  vm: string,
  port: number,
  proto: string,
): string {
  return `${purpose}.${vm}.${port}-${proto}`;
}

/** Comment tag on iptables rules nestvirt adds (`-m comment --comment`). */
export function iptTag(owner: string): string {
  return `nestvirt:${owner}`;
}

/** Ledger owners. */
export const owners = {
  net: (name: string) => `net:${name}`,
  tap: (vm: string) => `tap:${vm}`,
  expose: (vm: string, port: number, proto: string) => `expose:${vm}:${port}/${proto}`,
};
