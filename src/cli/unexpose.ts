/** `nestvirt unexpose VM PORT [--proto tcp|udp]`: removes exactly what expose added. */
import type { Command } from './command.js';
import { bool, str } from './command.js';
import { printJson, println } from './output.js';
import { stateRoot } from '../state/paths.js';
import { parsePort, parseProto, unexpose } from '../net/expose.js';

export const unexposeCommand: Command = {
  name: 'unexpose',
  summary: 'stop exposing a VM port; removes exactly its rules (and alias, if nestvirt added it)',
  usage: 'unexpose VM PORT [--proto tcp|udp] [--json]',
  positionals: [2, 2],
  flags: {
    proto: { type: 'string', arg: 'tcp|udp', help: 'protocol (default tcp)' },
    json: { type: 'boolean', help: 'print {removed: {...}}' },
  },
  async run(args, ctx) {
    const [vm, portS] = args.positionals as [string, string];
    const e = await unexpose(
      { root: stateRoot(ctx.env, ctx.uid), run: ctx.run },
      vm,
      parsePort(portS),
      parseProto(str(args, 'proto')),
    );
    if (bool(args, 'json')) printJson(ctx.out, { removed: e });
    else println(ctx.out, `${vm} ${e.port}/${e.proto} no longer exposed`);
    return 0;
  },
};
