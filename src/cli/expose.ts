/**
 * `nestvirt expose VM PORT [--on ADDR[:PORT]] [--proto tcp|udp]` and
 * `nestvirt expose ls`. Thin; the work is in src/net/expose.ts.
 */
import type { Command, Context } from './command.js';
import { bool, str } from './command.js';
import { printJson, println, table } from './output.js';
import { stateRoot } from '../state/paths.js';
import { expose, parsePort, parseProto } from '../net/expose.js';
import { listAllExposures } from '../net/store.js';
import type { Exposure } from '../net/types.js';

function onText(e: Exposure): string {
  return `${e.onAddr ?? '*'}:${e.onPort}`;
}

const ls: Command = {
  name: 'ls',
  summary: 'list exposed ports',
  usage: 'expose ls [--json]',
  positionals: [0, 0],
  flags: { json: { type: 'boolean', help: 'print {exposures: [...]}' } },
  async run(args, ctx) {
    const list = await listAllExposures(stateRoot(ctx.env, ctx.uid));
    if (bool(args, 'json')) printJson(ctx.out, { exposures: list });
    else if (!list.length) println(ctx.out, 'no exposed ports');
    else
      println(
        ctx.out,
        table([
          ['VM', 'PORT', 'ON', 'TARGET', 'NETWORK'],
          ...list.map((e) => [
            e.vm,
            `${e.port}/${e.proto}`,
            onText(e),
            `${e.target}:${e.port}`,
            e.network,
          ]),
        ]),
      );
    return 0;
  },
};

export const exposeCommand: Command = {
  name: 'expose',
  summary: "make a VM's port reachable from other machines (alias IP or host port)",
  usage: 'expose VM PORT [--on ADDR[:PORT]] [--proto tcp|udp] [--add-alias] [--json] | expose ls',
  description: [
    'DNAT for traffic from outside (prerouting) and from the host itself (output) to the VM,',
    'masquerade for other guests reaching it through the exposed address (hairpin), and a',
    'forward accept for exactly that flow (nft table inet nestvirt; tagged iptables ACCEPT rules',
    'too when iptables FORWARD filters). IPv4 forwarding is turned on and recorded. The',
    "exposure belongs to the VM: it follows the VM's address and goes away with `nestvirt rm`.",
    'Without --on the port is exposed on every address of the host (not 127.0.0.1).',
    '',
    'examples:',
    "  nestvirt expose web 8000 --on 10.0.0.5        the seeds' alias IP (must be on the host)",
    '  nestvirt expose web 8000 --on 10.0.0.5 --add-alias   add the alias to the uplink too',
    '  nestvirt expose web 80 --on :8080             host port 8080 on every address',
    '  nestvirt expose dns 53 --proto udp',
  ].join('\n'),
  positionals: [2, 2],
  flags: {
    on: {
      type: 'string',
      arg: 'ADDR[:PORT]',
      help: 'address and/or host port (default: every address, same port)',
    },
    proto: { type: 'string', arg: 'tcp|udp', help: 'protocol (default tcp)' },
    'add-alias': {
      type: 'boolean',
      help: 'add ADDR to the uplink when missing (removed with the exposure)',
    },
    json: { type: 'boolean', help: 'print {exposure: {...}}' },
  },
  sub: [ls],
  async run(args, ctx: Context) {
    const [vm, portS] = args.positionals as [string, string];
    const e = await expose(
      { root: stateRoot(ctx.env, ctx.uid), run: ctx.run, uid: ctx.uid },
      {
        vm,
        port: parsePort(portS),
        proto: parseProto(str(args, 'proto')),
        on: str(args, 'on'),
        addAlias: bool(args, 'add-alias'),
      },
    );
    if (bool(args, 'json')) printJson(ctx.out, { exposure: e });
    else
      println(
        ctx.out,
        `${vm} ${e.port}/${e.proto} exposed on ${onText(e)} → ${e.target}:${e.port}${e.addedAlias ? ` (alias ${e.addedAlias.addr} added to ${e.addedAlias.dev})` : ''}`,
      );
    return 0;
  },
};
