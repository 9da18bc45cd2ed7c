import type { Command } from './command.js';
import { bool } from './command.js';
import { printJson, println } from './output.js';
import { vmDeps, vmText } from '../vm/cli-support.js';
import { checkVmName } from '../vm/parse.js';
import { reconcile, vmInfo, vmPaths } from '../vm/state.js';
import { vmAddresses } from '../net/vm-hooks.js';

export const infoCommand: Command = {
  name: 'info',
  summary: "a VM's details: status, accelerator, level, ports, files, how it last stopped",
  usage: 'info VM [--json]',
  positionals: [1, 1],
  flags: { json: { type: 'boolean', help: 'print the VM as JSON (schema: docs/vms.md)' } },
  async run(args, ctx) {
    const name = checkVmName(args.positionals[0]!);
    const p = vmPaths(vmDeps(ctx).root, name);
    const info = {
      ...vmInfo(p, await reconcile(p, { write: 'try' })),
      addresses: await vmAddresses(vmDeps(ctx).root, name),
    };
    if (bool(args, 'json')) printJson(ctx.out, info);
    else println(ctx.out, vmText(ctx.out, info));
    return 0;
  },
};
