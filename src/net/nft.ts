/**
 * nftables rule text for networks and exposures. Pure: each function
 * returns the script fed to `nft -f -` (one atomic transaction).
 *
 * Everything lives in nestvirt's own table `inet nestvirt`; every network
 * and every exposure owns base chains of its own named `<purpose>.<name>`
 * (after Incus's nftables driver), so adding one is `add chain` + rules and
 * removing it is deleting exactly those chains — no rule handles, no
 * edits to chains shared with anything else.
 */
import { NFT_FAMILY, NFT_TABLE, exposeChain, netChain, owners } from './names.js';
import type { Exposure, NetSpec } from './types.js';

const T = `${NFT_FAMILY} ${NFT_TABLE}`;

/** Base-chain declarations by purpose. */
const HOOKS = {
  nat: 'type nat hook postrouting priority srcnat; policy accept;',
  post: 'type nat hook postrouting priority srcnat; policy accept;',
  pre: 'type nat hook prerouting priority dstnat; policy accept;',
  out: 'type nat hook output priority -100; policy accept;',
  fwd: 'type filter hook forward priority filter; policy accept;',
} as const;

function comment(owner: string): string {
  return `comment "nestvirt:${owner}"`;
}

/** The chains a network owns. */
export function networkChains(spec: NetSpec): string[] {
  return [netChain('fwd', spec.name), ...(spec.nat ? [netChain('nat', spec.name)] : [])];
}

/**
 * A network's rules: masquerade for traffic leaving the subnet (unless
 * --no-nat) and, for NAT networks, no new connections from outside into
 * the bridge except the ones an exposure DNATs there.
 */
export function networkRuleset(spec: NetSpec): string {
  const c = comment(owners.net(spec.name));
  const fwd = netChain('fwd', spec.name);
  const lines = [`add table ${T}`, `add chain ${T} ${fwd} { ${HOOKS.fwd} }`];
  if (spec.nat) {
    lines.push(
      `add rule ${T} ${fwd} iifname != "${spec.bridge}" oifname "${spec.bridge}" ct state new ct status & dnat == 0 drop ${c}`,
    );
    const nat = netChain('nat', spec.name);
    lines.push(
      `add chain ${T} ${nat} { ${HOOKS.nat} }`,
      `add rule ${T} ${nat} ip saddr ${spec.subnet} ip daddr != ${spec.subnet} masquerade ${c}`,
    );
  } else {
    lines.push(`add rule ${T} ${fwd} oifname "${spec.bridge}" accept ${c}`);
  }
  return lines.join('\n') + '\n';
}

/** The chains an exposure owns. */
export function exposureChains(e: Pick<Exposure, 'vm' | 'port' | 'proto'>): string[] {
  return (['pre', 'out', 'post', 'fwd'] as const).map((p) => exposeChain(p, e.vm, e.port, e.proto));
}

/**
 * An exposure's rules: DNAT from outside (prerouting) and from the host
 * itself (output) to the guest, masquerade for guests of the same subnet
 * reaching it through the exposed address (hairpin), and a forward accept
 * for exactly the DNATed flow.
 */
export function exposureRuleset(e: Exposure, spec: Pick<NetSpec, 'subnet' | 'bridge'>): string {
  const c = comment(owners.expose(e.vm, e.port, e.proto));
  const [pre, out, post, fwd] = exposureChains(e) as [string, string, string, string];
  const match = `${e.onAddr ? `ip daddr ${e.onAddr}` : 'fib daddr type local'} ${e.proto} dport ${e.onPort}`;
  const to = `dnat ip to ${e.target}:${e.port}`;
  return (
    [
      `add table ${T}`,
      `add chain ${T} ${pre} { ${HOOKS.pre} }`,
      `add rule ${T} ${pre} ${match} ${to} ${c}`,
      `add chain ${T} ${out} { ${HOOKS.out} }`,
      `add rule ${T} ${out} ${match} ${to} ${c}`,
      `add chain ${T} ${post} { ${HOOKS.post} }`,
      `add rule ${T} ${post} ip saddr ${spec.subnet} ip daddr ${e.target} ${e.proto} dport ${e.port} ct status dnat masquerade ${c}`,
      `add chain ${T} ${fwd} { ${HOOKS.fwd} }`,
      `add rule ${T} ${fwd} oifname "${spec.bridge}" ip daddr ${e.target} ${e.proto} dport ${e.port} ct status dnat accept ${c}`,
    ].join('\n') + '\n'
  );
}

/** Deletes chains (flush first, so a chain with rules goes in one transaction). */
export function deleteChains(chains: string[]): string {
  return chains.map((ch) => `flush chain ${T} ${ch}\ndelete chain ${T} ${ch}`).join('\n') + '\n';
}

/** Chain names of nestvirt's table in `nft -j list table inet nestvirt` output. */
export function chainsInJson(json: string): string[] {
  const doc = JSON.parse(json) as {
    nftables?: Array<{ chain?: { name: string; table: string; family: string } }>;
  };
  return (doc.nftables ?? [])
    .filter((o) => o.chain && o.chain.table === NFT_TABLE && o.chain.family === NFT_FAMILY)
    .map((o) => o.chain!.name);
}
