/**
 * `net doctor`: why traffic of a nestvirt network does not pass, each
 * problem with the exact fix. Reads only; changes nothing.
 */
import { join } from 'node:path';
import type { Problem } from './problem.js';
import {
  addresses,
  iptablesForward,
  links,
  nftChains,
  processIs,
  readPid,
  readSysctl,
  takenByHost,
  uplink,
  type NetCtx,
} from './host.js';
import { checkArgv, deleteArgv, insertArgv, networkIptRules } from './iptables.js';
import { networkChains } from './nft.js';
import { NetFiles } from './dnsmasq.js';
import { listAllExposures, listAttachments, netDir } from './store.js';
import { firstOverlap, parseCidr } from './subnet.js';
import { shellQuote } from '../util/exec.js';
import type { NetSpec } from './types.js';
import { owners } from './names.js';

export type { Problem };

interface NftChainJson {
  family: string;
  table: string;
  name: string;
  hook?: string;
  policy?: string;
  prio?: number;
}

/** Base chains of other tables that drop forwarded packets by policy. */
async function foreignForwardDrops(ctx: NetCtx): Promise<NftChainJson[]> {
  const r = await ctx.run(['nft', '-j', 'list', 'chains'], { check: false });
  if (r.code !== 0) return [];
  const doc = JSON.parse(r.stdout || '{}') as { nftables?: Array<{ chain?: NftChainJson }> };
  return (
    (doc.nftables ?? [])
      .map((o) => o.chain)
      .filter(
        (c): c is NftChainJson =>
          !!c && c.hook === 'forward' && c.policy === 'drop' && c.table !== 'nestvirt',
      )
      // iptables-nft's own FORWARD chain is handled through iptables below.
      .filter((c) => !(c.family === 'ip' && c.table === 'filter' && c.name === 'FORWARD'))
  );
}

/** Checks one network. */
export async function diagnoseNetwork(ctx: NetCtx, spec: NetSpec): Promise<Problem[]> {
  const p: Problem[] = [];
  const [bridge] = await links(ctx, spec.bridge);
  if (!bridge)
    p.push({
      id: 'net.bridge-missing',
      message: `bridge ${spec.bridge} of network ${spec.name} does not exist (host rebooted?)`,
      fix: `nestvirt net up ${spec.name}`,
    });
  else if (!(bridge.flags ?? []).includes('UP'))
    p.push({
      id: 'net.bridge-down',
      message: `bridge ${spec.bridge} is down`,
      fix: `ip link set dev ${spec.bridge} up`,
    });
  const pid = await readPid(join(netDir(ctx.root, spec.name), NetFiles.pid));
  if (!(pid !== null && (await processIs(ctx, pid, 'dnsmasq'))))
    p.push({
      id: 'net.dnsmasq-down',
      message: `dnsmasq for ${spec.name} is not running: guests get no DHCP/DNS`,
      fix: `nestvirt net up ${spec.name}`,
    });
  if ((await readSysctl(ctx, 'net.ipv4.ip_forward')) !== '1')
    p.push({
      id: 'net.ip-forward-off',
      message: 'net.ipv4.ip_forward is 0: the host does not route guest traffic',
      fix: 'sysctl -w net.ipv4.ip_forward=1',
    });
  const have = new Set(await nftChains(ctx));
  const missing = networkChains(spec).filter((c) => !have.has(c));
  if (missing.length)
    p.push({
      id:
        spec.nat && missing.includes(`nat.${spec.name}`)
          ? 'net.masquerade-missing'
          : 'net.rules-missing',
      message: `nft chain(s) ${missing.join(', ')} of table inet nestvirt are missing${spec.nat ? ': guest traffic leaves unmasqueraded' : ''}`,
      fix: `nestvirt net up ${spec.name}`,
    });
  // iptables FORWARD: a DROP policy, or a rule earlier than ours that drops.
  const ipt = await iptablesForward(ctx);
  if (ipt.filters) {
    for (const r of networkIptRules(spec)) {
      const chk = await ctx.run(checkArgv(ipt.bin, r), { check: false });
      if (chk.code !== 0)
        p.push({
          id: 'net.forward-drop',
          message: `${ipt.bin} FORWARD (policy ${ipt.policy}${ipt.rules.length ? `, ${ipt.rules.length} rules` : ''}) has no accept for ${spec.bridge}: it drops guest traffic`,
          fix: shellQuote(insertArgv(ipt.bin, r)),
        });
    }
    const firstOurs = ipt.rules.findIndex((r) => r.includes('nestvirt:'));
    const shadow = ipt.rules.findIndex(
      (r) => / -j (DROP|REJECT)/.test(r) && !r.includes('nestvirt:'),
    );
    if (firstOurs >= 0 && shadow >= 0 && shadow < firstOurs)
      p.push({
        id: 'net.rule-shadowed',
        message: `${ipt.bin} FORWARD rule ${shadow + 1} ("${ipt.rules[shadow]}") comes before nestvirt's accept and can drop guest traffic`,
        fix: networkIptRules(spec)
          .map(
            (r) => `${shellQuote(deleteArgv(ipt.bin, r))} && ${shellQuote(insertArgv(ipt.bin, r))}`,
          )
          .join('; '),
      });
  }
  for (const c of await foreignForwardDrops(ctx))
    p.push({
      id: 'net.nft-forward-drop',
      message: `nft chain ${c.family} ${c.table} ${c.name} drops forwarded packets by policy; an accept in nestvirt's table cannot override it`,
      fix: `nft insert rule ${c.family} ${c.table} ${c.name} iifname "${spec.bridge}" accept; nft insert rule ${c.family} ${c.table} ${c.name} oifname "${spec.bridge}" ct state established,related accept`,
    });
  // br_netfilter makes bridged guest-to-guest traffic traverse iptables.
  const brnf = await readSysctl(ctx, 'net.bridge.bridge-nf-call-iptables');
  if (brnf === '1' && ipt.filters && p.some((x) => x.id === 'net.forward-drop'))
    p.push({
      id: 'net.br-netfilter',
      message:
        'br_netfilter passes bridged traffic through iptables (bridge-nf-call-iptables=1): guests on the same bridge are filtered too',
      fix: 'sysctl -w net.bridge.bridge-nf-call-iptables=0  (or accept the bridge in FORWARD, as above)',
    });
  // MTU: the bridge against the uplink, and each tap against the bridge.
  const up = await uplink(ctx);
  if (bridge && up && spec.mtuSource !== 'flag' && bridge.mtu > up.mtu)
    p.push({
      id: 'net.mtu-mismatch',
      message: `bridge ${spec.bridge} MTU ${bridge.mtu} is larger than uplink ${up.dev} MTU ${up.mtu}: large packets are dropped or fragmented`,
      fix: `ip link set dev ${spec.bridge} mtu ${up.mtu}  (and restart the VMs so they get the new MTU by DHCP)`,
    });
  if (bridge)
    for (const l of (await links(ctx)).filter(
      (x) => x.master === spec.bridge && x.mtu !== bridge.mtu,
    ))
      p.push({
        id: 'net.mtu-mismatch',
        message: `port ${l.ifname} of ${spec.bridge} has MTU ${l.mtu}, the bridge ${bridge.mtu}`,
        fix: `ip link set dev ${l.ifname} mtu ${bridge.mtu}`,
      });
  // Overlaps with routes/addresses that are not the bridge's own.
  const hit = firstOverlap(parseCidr(spec.subnet), await takenByHost(ctx, spec.bridge));
  if (hit)
    p.push({
      id: 'net.subnet-overlap',
      message: `subnet ${spec.subnet} of ${spec.name} overlaps ${hit.what}: replies may take the wrong route`,
      fix: `nestvirt net rm ${spec.name} && nestvirt net create ${spec.name}  (a free subnet is picked)`,
    });
  // Exposures on addresses that are no longer here.
  const local = new Set((await addresses(ctx)).map((a) => a.local));
  const vms = new Set(
    (await listAttachments(ctx.root)).filter((a) => a.network === spec.name).map((a) => a.vm),
  );
  for (const e of (await listAllExposures(ctx.root)).filter((x) => vms.has(x.vm))) {
    if (e.onAddr && !local.has(e.onAddr))
      p.push({
        id: 'expose.address-missing',
        message: `${e.vm} ${e.port}/${e.proto} is exposed on ${e.onAddr}, which is not an address of this host`,
        fix: `ip addr add ${e.onAddr}/32 dev ${up?.dev ?? 'UPLINK'}`,
      });
    const chains = [`pre.${e.vm}.${e.port}-${e.proto}`];
    if (!chains.every((c) => have.has(c)))
      p.push({
        id: 'expose.rules-missing',
        message: `rules of ${owners.expose(e.vm, e.port, e.proto)} are missing`,
        fix: `nestvirt unexpose ${e.vm} ${e.port} --proto ${e.proto} && nestvirt expose ${e.vm} ${e.port} --proto ${e.proto}${e.onAddr || e.onPort !== e.port ? ` --on ${e.onAddr ?? ''}:${e.onPort}` : ''}`,
      });
  }
  return p;
}
