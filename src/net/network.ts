/**
 * Creating, checking and removing networks: plan (pure parts in
 * subnet/nft/dnsmasq/iptables), then apply step by step, recording each
 * change in the ledger as it is made; a failure part-way undoes them all.
 */
import { chmod, mkdir, rm, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { join } from 'node:path';
import { NotPossibleError, UsageError } from '../errors.js';
import { applyPlan, type Plan, type Step } from '../host/plan.js';
import { recordChanges, readEntry, type Change } from '../state/ledger.js';
import { withLock } from '../state/lock.js';
import { checkName, writeJson } from '../state/store.js';
import { shellQuote } from '../util/exec.js';
import { NetFiles, dnsmasqArgv } from './dnsmasq.js';
import {
  iptInsert,
  iptablesForward,
  linkExists,
  links,
  nftApply,
  nftChains,
  processIs,
  readPid,
  setSysctl,
  takenByHost,
  uplink,
  type NetCtx,
} from './host.js';
import { insertArgv, networkIptRules } from './iptables.js';
import { bridgeName, owners } from './names.js';
import { networkChains, networkRuleset } from './nft.js';
import { listAttachments, listNets, netDir, netLockPath, readNet } from './store.js';
import {
  WELL_KNOWN,
  allocate,
  firstOverlap,
  formatCidr,
  layout,
  parseCidr,
  type Taken,
} from './subnet.js';
import { release } from './undo.js';
import type { NetSpec } from './types.js';

export const DEFAULT_NET = 'default';

export interface CreateOptions {
  name: string;
  subnet?: string;
  mtu?: number;
  nat: boolean;
}

/** Everything a new network must stay clear of: routes, addresses, other nestvirt networks, libvirt's and Docker's defaults. */
export async function takenSubnets(ctx: NetCtx, except?: string): Promise<Taken[]> {
  const nets = (await listNets(ctx.root)).filter((n) => n.name !== except);
  const ownBridges = new Set(nets.map((n) => n.bridge));
  const host = (await takenByHost(ctx, except ? bridgeName(except) : undefined)).filter(
    (t) => !ownBridges.has(/ on (\S+)$/.exec(t.what)?.[1] ?? ''),
  );
  return [
    ...nets.map((n) => ({
      cidr: parseCidr(n.subnet),
      what: `nestvirt network ${JSON.stringify(n.name)}`,
    })),
    ...host,
    ...WELL_KNOWN,
  ];
}

/** Computes a network's spec: subnet (given or first free), gateway, DHCP range, MTU (from the uplink). */
export async function planSpec(ctx: NetCtx, o: CreateOptions): Promise<NetSpec> {
  const taken = await takenSubnets(ctx, o.name);
  let cidr;
  if (o.subnet) {
    cidr = parseCidr(o.subnet, '--subnet');
    const hit = firstOverlap(cidr, taken);
    if (hit) {
      const free = allocate(taken, Math.min(Math.max(cidr.prefix, 16), 29));
      throw new UsageError(
        'net.subnet-overlap',
        `subnet ${formatCidr(cidr)} overlaps ${hit.what} (${formatCidr(hit.cidr)})`,
        free
          ? `use a free one: --subnet ${formatCidr(free)}`
          : 'pick a subnet no route or network uses',
      );
    }
  } else {
    cidr = allocate(taken);
    if (!cidr)
      throw new NotPossibleError(
        'net.no-free-subnet',
        'no free /24 left in 10.200.0.0/16–10.255.0.0/16 or 192.168.200–255',
        'pass --subnet CIDR',
      );
  }
  const lay = layout(cidr);
  const up = await uplink(ctx);
  if (o.mtu !== undefined && !(Number.isInteger(o.mtu) && o.mtu >= 576 && o.mtu <= 65535))
    throw new UsageError(
      'net.bad-mtu',
      `--mtu must be an integer from 576 to 65535, got ${JSON.stringify(o.mtu)}`,
    );
  return {
    name: o.name,
    bridge: bridgeName(o.name),
    subnet: formatCidr(cidr),
    gateway: lay.gateway,
    mtu: o.mtu ?? up?.mtu ?? 1500,
    mtuSource: o.mtu !== undefined ? 'flag' : up ? 'uplink' : 'default',
    uplink: up?.dev ?? null,
    nat: o.nat,
    dhcpRange: lay.dynamic,
    created: new Date().toISOString(),
  };
}

/** The plan that brings a network up on the host, each step recording its changes under `net:NAME`. */
export function upPlan(
  ctx: NetCtx,
  spec: NetSpec,
  ipt: { bin: string; filters: boolean; othersCanReach?: boolean },
): Plan {
  const owner = owners.net(spec.name);
  const rec = (c: Change[]) => (c.length ? recordChanges(ctx.root, owner, c) : Promise.resolve());
  const dir = netDir(ctx.root, spec.name);
  const prefix = spec.subnet.split('/')[1];
  const dns = dnsmasqArgv(spec, dir, 'dnsmasq', { asRoot: !ipt.othersCanReach });
  const steps: Step[] = [
    {
      title: `create bridge ${spec.bridge} (${spec.gateway}/${prefix}, MTU ${spec.mtu})`,
      shell: [
        `ip link add name ${spec.bridge} type bridge`,
        `ip link set dev ${spec.bridge} mtu ${spec.mtu}`,
        `ip addr add ${spec.gateway}/${prefix} dev ${spec.bridge}`,
        `ip link set dev ${spec.bridge} up`,
      ],
      apply: async () => {
        await ctx.run(['ip', 'link', 'add', 'name', spec.bridge, 'type', 'bridge']);
        await rec([{ kind: 'link', name: spec.bridge }]);
        await ctx.run(['ip', 'link', 'set', 'dev', spec.bridge, 'mtu', String(spec.mtu)]);
        await ctx.run(['ip', 'addr', 'add', `${spec.gateway}/${prefix}`, 'dev', spec.bridge]);
        await ctx.run(['ip', 'link', 'set', 'dev', spec.bridge, 'up']);
      },
    },
    {
      title: 'turn on IPv4 forwarding (previous value recorded)',
      shell: ['sysctl -w net.ipv4.ip_forward=1'],
      apply: async () => rec(await setSysctl(ctx, 'net.ipv4.ip_forward', '1')),
    },
    {
      title: spec.nat
        ? `masquerade ${spec.subnet} (nft table inet nestvirt)`
        : 'forwarding rules (nft table inet nestvirt)',
      shell: [`nft -f - <<'EOF'\n${networkRuleset(spec)}EOF`],
      apply: async () => {
        await nftApply(ctx, networkRuleset(spec));
        await rec([{ kind: 'nft-chains', chains: networkChains(spec) }]);
      },
    },
  ];
  if (ipt.filters)
    steps.push({
      title: `accept ${spec.bridge} traffic in ${ipt.bin}'s FORWARD chain (it filters)`,
      shell: networkIptRules(spec).map((r) => shellQuote(insertArgv(ipt.bin, r))),
      apply: async () => {
        for (const r of networkIptRules(spec)) await rec(await iptInsert(ctx, ipt.bin, [r]));
      },
    });
  steps.push({
    title: `start dnsmasq on ${spec.bridge} (DHCP ${spec.dhcpRange.join('–')}, DNS)`,
    shell: [shellQuote(dns)],
    apply: async () => {
      await mkdir(join(dir, NetFiles.hostsDir), { recursive: true, mode: 0o755 });
      await chmod(dir, 0o755);
      await chmod(join(dir, NetFiles.hostsDir), 0o755);
      await rm(join(dir, NetFiles.pid), { force: true });
      await ctx.run(dns, { timeoutMs: 30_000 });
      const pid = await readPid(join(dir, NetFiles.pid));
      if (!pid)
        throw new NotPossibleError(
          'net.dnsmasq-failed',
          `dnsmasq for ${spec.name} did not write its pid file`,
          `see ${join(dir, NetFiles.log)}`,
        );
      await rec([{ kind: 'process', pid, comm: 'dnsmasq' }]);
    },
  });
  return { title: `bring up network ${spec.name}`, steps, notes: [] };
}

/** True when every directory above `dir` lets others through (dnsmasq runs as nobody). */
export async function othersCanReach(dir: string): Promise<boolean> {
  for (let d = dirname(dir); ; d = dirname(d)) {
    try {
      if (((await stat(d)).mode & 0o001) === 0) return false;
    } catch {
      return false;
    }
    if (d === dirname(d)) return true;
  }
}

function requireRoot(uid: number): void {
  if (uid !== 0)
    throw new NotPossibleError(
      'net.not-root',
      'bridge networks need root (CAP_NET_ADMIN) to add links and firewall rules',
      'run with sudo, or use QEMU user-mode networking: nestvirt run --net user --port HOST:GUEST',
    );
}

/** Applies an up-plan; on failure undoes everything recorded under the owner. */
async function applyUp(
  ctx: NetCtx,
  spec: NetSpec,
  onStep?: (title: string) => void,
): Promise<void> {
  const ipt = await iptablesForward(ctx);
  const plan = upPlan(ctx, spec, {
    ...ipt,
    othersCanReach: await othersCanReach(netDir(ctx.root, spec.name)),
  });
  try {
    await applyPlan(plan, { onStep: (s) => onStep?.(s.title) });
  } catch (e) {
    await release(ctx, owners.net(spec.name));
    throw e;
  }
}

/** Creates a network: refuses an existing name or bridge, overlapping subnet; leaves nothing behind on failure. */
export async function createNetwork(
  ctx: NetCtx & { uid: number },
  o: CreateOptions,
  onStep?: (title: string) => void,
): Promise<NetSpec> {
  checkName('net', o.name);
  if (o.name === 'user')
    throw new UsageError(
      'net.reserved-name',
      '"user" names QEMU user-mode networking; pick another network name',
    );
  return withLock(
    netLockPath(ctx.root, o.name),
    `network ${o.name}`,
    async () => {
      if (await readNet(ctx.root, o.name))
        throw new UsageError(
          'net.exists',
          `network ${JSON.stringify(o.name)} exists`,
          `remove it first: nestvirt net rm ${o.name}`,
        );
      const spec = await planSpec(ctx, o);
      requireRoot(ctx.uid);
      if (await linkExists(ctx, spec.bridge))
        throw new NotPossibleError(
          'net.link-exists',
          `a link named ${spec.bridge} already exists and is not nestvirt's record`,
          `remove it (ip link del ${spec.bridge}) or pick another name`,
        );
      const dir = netDir(ctx.root, o.name);
      try {
        await mkdir(dir, { recursive: true });
        await applyUp(ctx, spec, onStep);
        await writeJson(join(dir, NetFiles.spec), spec);
      } catch (e) {
        await rm(dir, { recursive: true, force: true });
        throw e;
      }
      return spec;
    },
    { waitMs: 30_000 },
  );
}

export interface NetStatus {
  bridge: boolean;
  dnsmasq: boolean;
  rules: boolean;
  up: boolean;
}

/** What of a network is really there right now. */
export async function netStatus(ctx: NetCtx, spec: NetSpec): Promise<NetStatus> {
  const bridge = await linkExists(ctx, spec.bridge);
  const pid = await readPid(join(netDir(ctx.root, spec.name), NetFiles.pid));
  const dnsmasq = pid !== null && (await processIs(ctx, pid, 'dnsmasq'));
  const have = new Set(await nftChains(ctx));
  const rules = networkChains(spec).every((c) => have.has(c));
  return { bridge, dnsmasq, rules, up: bridge && dnsmasq && rules };
}

/**
 * Makes sure a network is up (after a reboot the bridge, rules and dnsmasq
 * are gone): when anything is missing, undoes what is recorded and brings
 * it up again from its spec. Creates `default` on first use.
 */
export async function ensureNetwork(
  ctx: NetCtx & { uid: number },
  name: string,
  onStep?: (t: string) => void,
): Promise<NetSpec> {
  let spec = await readNet(ctx.root, name);
  if (!spec) {
    if (name !== DEFAULT_NET)
      throw new UsageError(
        'net.not-found',
        `no network named ${JSON.stringify(name)}`,
        `create it: nestvirt net create ${name}  (or use --net default)`,
      );
    try {
      return await createNetwork(ctx, { name, nat: true }, onStep);
    } catch (e) {
      spec = await readNet(ctx.root, name);
      if (!spec) throw e; // someone else created it meanwhile: fall through
    }
  }
  const s = spec;
  return withLock(
    netLockPath(ctx.root, name),
    `network ${name}`,
    async () => {
      if ((await netStatus(ctx, s)).up) return s;
      requireRoot(ctx.uid);
      await release(ctx, owners.net(name));
      const bridgeMtu = s.mtuSource === 'uplink' ? ((await uplink(ctx))?.mtu ?? s.mtu) : s.mtu;
      const fresh = { ...s, mtu: bridgeMtu };
      await applyUp(ctx, fresh, onStep);
      await writeJson(join(netDir(ctx.root, name), NetFiles.spec), fresh);
      // Taps of running VMs lost their bridge with it: put them back.
      for (const a of (await listAttachments(ctx.root)).filter((x) => x.network === name))
        if (await linkExists(ctx, a.tap))
          await ctx.run(
            [
              'ip',
              'link',
              'set',
              'dev',
              a.tap,
              'mtu',
              String(fresh.mtu),
              'master',
              fresh.bridge,
              'up',
            ],
            { check: false },
          );
      return fresh;
    },
    { waitMs: 30_000 },
  );
}

/** Removes a network: refuses while VMs are attached (unless force), undoes exactly what was recorded. */
export async function removeNetwork(
  ctx: NetCtx & { uid: number },
  name: string,
  force = false,
): Promise<void> {
  await withLock(
    netLockPath(ctx.root, name),
    `network ${name}`,
    async () => {
      const spec = await readNet(ctx.root, name);
      if (!spec)
        throw new UsageError(
          'net.not-found',
          `no network named ${JSON.stringify(name)}`,
          'see nestvirt net ls',
        );
      const users = (await listAttachments(ctx.root))
        .filter((a) => a.network === name)
        .map((a) => a.vm);
      if (users.length && !force)
        throw new UsageError(
          'net.in-use',
          `network ${name} is used by VM(s): ${users.join(', ')}`,
          `remove them first (nestvirt rm ${users[0]}), or pass --force`,
        );
      if ((await readEntry(ctx.root, owners.net(name)))?.changes.length) requireRoot(ctx.uid);
      const errors = await release(ctx, owners.net(name));
      if (errors.length)
        throw new NotPossibleError(
          'net.rm-incomplete',
          `could not undo everything for network ${name}: ${errors[0]}`,
          'fix the cause and run nestvirt net rm again; what is left is recorded',
        );
      await rm(netDir(ctx.root, name), { recursive: true, force: true });
    },
    { waitMs: 30_000 },
  );
}

/** Links of a bridge's ports (taps). */
export async function bridgePorts(ctx: NetCtx, bridge: string): Promise<string[]> {
  return (await links(ctx)).filter((l) => l.master === bridge).map((l) => l.ifname);
}
