/**
 * iptables coexistence. nft base chains of different tables are all
 * traversed: an `accept` in nestvirt's table does not stop a DROP policy
 * in iptables' FORWARD chain (Docker sets one; so do many hardening
 * guides). When iptables' filter FORWARD chain exists and drops by policy
 * or has rules, nestvirt inserts ACCEPT rules for its own flows at the top,
 * each tagged `-m comment --comment nestvirt:OWNER`, records their exact
 * spec, and deletes exactly those specs on teardown. Pure planning here.
 */
import { iptTag, owners } from './names.js';
import type { Exposure, NetSpec } from './types.js';

/** An iptables rule: table, chain and the rule spec (what follows `-A CHAIN`). */
export interface IptRule {
  table: 'filter';
  chain: 'FORWARD';
  spec: string[];
}

/** Rules letting a network's traffic through a filtering FORWARD chain. */
export function networkIptRules(spec: NetSpec): IptRule[] {
  const tag = ['-m', 'comment', '--comment', iptTag(owners.net(spec.name))];
  return [
    { table: 'filter', chain: 'FORWARD', spec: ['-i', spec.bridge, ...tag, '-j', 'ACCEPT'] },
    {
      table: 'filter',
      chain: 'FORWARD',
      spec: [
        '-o',
        spec.bridge,
        '-m',
        'conntrack',
        '--ctstate',
        'RELATED,ESTABLISHED',
        ...tag,
        '-j',
        'ACCEPT',
      ],
    },
  ];
}

/** The rule letting an exposure's DNATed flow through a filtering FORWARD chain. */
export function exposureIptRules(e: Exposure, spec: Pick<NetSpec, 'bridge'>): IptRule[] {
  const tag = ['-m', 'comment', '--comment', iptTag(owners.expose(e.vm, e.port, e.proto))];
  return [
    {
      table: 'filter',
      chain: 'FORWARD',
      spec: [
        '-o',
        spec.bridge,
        '-d',
        `${e.target}/32`,
        '-p',
        e.proto,
        '-m',
        e.proto,
        '--dport',
        String(e.port),
        '-m',
        'conntrack',
        '--ctstate',
        'DNAT',
        ...tag,
        '-j',
        'ACCEPT',
      ],
    },
  ];
}

/** argv inserting a rule at the top of its chain. */
export function insertArgv(bin: string, r: IptRule): string[] {
  return [bin, '-w', '-t', r.table, '-I', r.chain, '1', ...r.spec];
}
/** argv deleting exactly that rule. */
export function deleteArgv(bin: string, r: IptRule): string[] {
  return [bin, '-w', '-t', r.table, '-D', r.chain, ...r.spec];
}
/** argv checking that rule exists (exit 0) or not (exit 1). */
export function checkArgv(bin: string, r: IptRule): string[] {
  return [bin, '-w', '-t', r.table, '-C', r.chain, ...r.spec];
}

/** What `iptables -S FORWARD` says about filtering: its policy and whether it has rules. */
export function parseForwardChain(s: string): { policy: string; rules: string[] } {
  let policy = 'ACCEPT';
  const rules: string[] = [];
  for (const line of s.split('\n')) {
    const m = /^-P FORWARD (\S+)/.exec(line);
    if (m) policy = m[1]!;
    else if (line.startsWith('-A FORWARD ')) rules.push(line);
  }
  return { policy, rules };
}

/** True when FORWARD can drop traffic that nestvirt's nft table accepts. */
export function forwardFilters(chain: { policy: string; rules: string[] }): boolean {
  return chain.policy !== 'ACCEPT' || chain.rules.some((r) => !r.includes('nestvirt:'));
}
