/**
 * `nestvirt net create | ls | rm | up | doctor`: private bridge networks.
 * Thin: parsing and printing; the work is in src/net/.
 */
import type { Command, Context, ParsedArgs } from './command.js';
import { bool, str } from './command.js';
import { printJson, println, table, paint, Progress } from './output.js';
import { UsageError } from '../errors.js';
import { stateRoot } from '../state/paths.js';
import { createNetwork, ensureNetwork, netStatus, removeNetwork } from '../net/network.js';
import { listAttachments, listNets, readNet, leasedAddress } from '../net/store.js';
import { diagnoseNetwork } from '../net/doctor.js';
import type { NetCtx } from '../net/host.js';
import type { NetSpec } from '../net/types.js';

function netCtx(ctx: Context): NetCtx & { uid: number } {
  return { root: stateRoot(ctx.env, ctx.uid), run: ctx.run, uid: ctx.uid };
}

/** A network as shown by `net ls --json` and `net create --json`. */
async function netJson(ctx: NetCtx, spec: NetSpec) {
  const status = await netStatus(ctx, spec);
  const vms = [];
  for (const a of (await listAttachments(ctx.root)).filter((x) => x.network === spec.name)) {
    const leased = await leasedAddress(ctx.root, spec.name, a.mac);
    vms.push({
      vm: a.vm,
      ip: leased ?? a.ip,
      addressSource: leased ? 'lease' : 'reserved',
      mac: a.mac,
      tap: a.tap,
    });
  }
  return { ...spec, status, vms };
}

const create: Command = {
  name: 'create',
  summary: 'create a network: bridge, DHCP/DNS (dnsmasq), NAT',
  usage: 'net create NAME [--subnet CIDR] [--mtu N] [--no-nat] [--json]',
  description: [
    'Makes a Linux bridge nv-NAME with the gateway (first address of the subnet), dnsmasq bound',
    'to that bridge only (DHCP with a stable address per VM, DNS for VM.NAME.nestvirt), IPv4',
    'forwarding and a masquerade rule in nft table `inet nestvirt`. The MTU is the uplink',
    "(default route) interface's, so 1460 on a GCE VPC. A subnet overlapping a route, an",
    "address, libvirt's 192.168.122.0/24, Docker's 172.17.0.0/16 or another nestvirt network",
    'is refused with a free one suggested; without --subnet the first free 10.200-255.x.0/24.',
    '',
    'examples:',
    '  nestvirt net create lab',
    '  nestvirt net create lab --subnet 10.210.0.0/24 --mtu 1460',
  ].join('\n'),
  positionals: [1, 1],
  flags: {
    subnet: {
      type: 'string',
      arg: 'CIDR',
      help: 'IPv4 subnet (default: first free 10.200-255.x.0/24)',
    },
    mtu: { type: 'string', arg: 'N', help: "bridge and guest MTU (default: the uplink's)" },
    'no-nat': { type: 'boolean', help: 'no masquerade: a routed network' },
    json: { type: 'boolean', help: 'print the network as JSON' },
  },
  async run(args: ParsedArgs, ctx: Context) {
    const n = netCtx(ctx);
    const mtuS = str(args, 'mtu');
    if (mtuS !== undefined && !/^\d+$/.test(mtuS))
      throw new UsageError(
        'net.bad-mtu',
        `--mtu must be an integer from 576 to 65535, got ${JSON.stringify(mtuS)}`,
      );
    const progress = new Progress(ctx.out, { quiet: bool(args, 'json') });
    const spec = await progress.step(`create network ${args.positionals[0]}`, async (update) =>
      createNetwork(
        n,
        {
          name: args.positionals[0]!,
          subnet: str(args, 'subnet'),
          mtu: mtuS === undefined ? undefined : Number(mtuS),
          nat: !bool(args, 'no-nat'),
        },
        update,
      ),
    );
    if (bool(args, 'json')) printJson(ctx.out, { network: await netJson(n, spec) });
    else
      println(
        ctx.out,
        `network ${spec.name}: bridge ${spec.bridge}, ${spec.subnet} via ${spec.gateway}, MTU ${spec.mtu} (${spec.mtuSource}${spec.uplink ? ` ${spec.uplink}` : ''})${spec.nat ? ', NAT' : ''}`,
      );
    return 0;
  },
};

const ls: Command = {
  name: 'ls',
  summary: 'list networks, their state and VMs',
  usage: 'net ls [--json]',
  positionals: [0, 0],
  flags: { json: { type: 'boolean', help: 'print {networks: [...]} as JSON' } },
  async run(args, ctx) {
    const n = netCtx(ctx);
    const nets = [];
    for (const s of await listNets(n.root)) nets.push(await netJson(n, s));
    if (bool(args, 'json')) {
      printJson(ctx.out, { networks: nets });
      return 0;
    }
    if (!nets.length) {
      println(ctx.out, 'no networks (nestvirt net create NAME, or run --net default)');
      return 0;
    }
    const rows = [['NAME', 'BRIDGE', 'SUBNET', 'GATEWAY', 'MTU', 'NAT', 'STATE', 'VMS']];
    for (const x of nets)
      rows.push([
        x.name,
        x.bridge,
        x.subnet,
        x.gateway,
        String(x.mtu),
        x.nat ? 'yes' : 'no',
        x.status.up ? paint(ctx.out, 'green', 'up') : paint(ctx.out, 'red', 'down'),
        x.vms.map((v) => `${v.vm}=${v.ip}`).join(' ') || '-',
      ]);
    println(ctx.out, table(rows));
    return 0;
  },
};

const rmCmd: Command = {
  name: 'rm',
  summary: 'remove a network and exactly what it added to the host',
  usage: 'net rm NAME [--force]',
  positionals: [1, 1],
  flags: {
    force: {
      type: 'boolean',
      help: 'remove even while VMs are attached (their taps lose the bridge)',
    },
    json: { type: 'boolean', help: 'print {removed: NAME}' },
  },
  async run(args, ctx) {
    await removeNetwork(netCtx(ctx), args.positionals[0]!, bool(args, 'force'));
    if (bool(args, 'json')) printJson(ctx.out, { removed: args.positionals[0] });
    else println(ctx.out, `network ${args.positionals[0]} removed`);
    return 0;
  },
};

const up: Command = {
  name: 'up',
  summary: 'bring a network back (after a reboot): bridge, rules, dnsmasq',
  usage: 'net up NAME [--json]',
  positionals: [1, 1],
  flags: { json: { type: 'boolean', help: 'print the network as JSON' } },
  async run(args, ctx) {
    const n = netCtx(ctx);
    const spec = await ensureNetwork(n, args.positionals[0]!);
    if (bool(args, 'json')) printJson(ctx.out, { network: await netJson(n, spec) });
    else println(ctx.out, `network ${spec.name} is up`);
    return 0;
  },
};

const doctor: Command = {
  name: 'doctor',
  summary: "find why a network's traffic does not pass, with fixes",
  usage: 'net doctor [NAME] [--json]',
  description: [
    'Checks: bridge and dnsmasq present, ip_forward, nestvirt nft chains (masquerade), iptables',
    'FORWARD policy and earlier DROP rules, other nft tables dropping forwarded traffic,',
    'br_netfilter, MTU of bridge/taps against the uplink, overlapping subnets, exposures on',
    'addresses this host no longer has. Exit 1 when a problem is found.',
  ].join('\n'),
  positionals: [0, 1],
  flags: { json: { type: 'boolean', help: 'print {networks: [{name, problems}], problems, ok}' } },
  async run(args, ctx) {
    const n = netCtx(ctx);
    let specs: NetSpec[];
    if (args.positionals[0]) {
      const s = await readNet(n.root, args.positionals[0]);
      if (!s)
        throw new UsageError(
          'net.not-found',
          `no network named ${JSON.stringify(args.positionals[0])}`,
          'see nestvirt net ls',
        );
      specs = [s];
    } else specs = await listNets(n.root);
    const networks = [];
    for (const s of specs) networks.push({ name: s.name, problems: await diagnoseNetwork(n, s) });
    const problems = networks.flatMap((x) => x.problems.map((p) => ({ network: x.name, ...p })));
    if (bool(args, 'json')) printJson(ctx.out, { networks, problems, ok: problems.length === 0 });
    else {
      if (!specs.length) println(ctx.out, 'no networks');
      for (const x of networks) {
        println(
          ctx.out,
          `${x.problems.length ? paint(ctx.out, 'red', '✗') : paint(ctx.out, 'green', '✓')} ${x.name}`,
        );
        for (const p of x.problems) {
          println(ctx.out, `  ${p.message}`);
          println(ctx.out, `    ${paint(ctx.out, 'yellow', 'fix:')} ${p.fix}`);
        }
      }
    }
    return problems.length ? 1 : 0;
  },
};

export const netCommand: Command = {
  name: 'net',
  summary: 'private networks: bridge, DHCP/DNS, NAT (create, ls, rm, up, doctor)',
  usage: 'net create | ls | rm | up | doctor',
  description: 'See docs/networks.md for the design and the alias-IP walk-through.',
  sub: [create, ls, rmCmd, up, doctor],
};
