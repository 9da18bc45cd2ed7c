import type { Command } from './command.js';
import { bool } from './command.js';
import { printJson, println } from './output.js';
import { killVm } from '../vm/lifecycle.js';
import { vmDeps } from '../vm/cli-support.js';
import { checkVmName } from '../vm/parse.js';

export const killCommand: Command = {
  name: 'kill',
  summary: "kill a VM's QEMU at once (no guest shutdown)",
  usage: 'kill VM [--json]',
  positionals: [1, 1],
  flags: { json: { type: 'boolean', help: 'print {name, killed}' } },
  async run(args, ctx) {
    const name = checkVmName(args.positionals[0]!);
    const r = await killVm(name, vmDeps(ctx));
    if (bool(args, 'json')) printJson(ctx.out, { name, killed: r.killed });
    else println(ctx.out, r.killed ? `${name} killed` : `${name} is not running`);
    return 0;
  },
};
