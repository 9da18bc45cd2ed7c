import type { Command } from './command.js';
import { bool } from './command.js';
import { eprintln, printJson, println } from './output.js';
import { vmDeps, vmTable } from '../vm/cli-support.js';
import { listVms } from '../vm/list.js';

export const lsCommand: Command = {
  name: 'ls',
  summary: 'list VMs with their real status',
  usage: 'ls [--json]',
  positionals: [0, 0],
  flags: {
    json: { type: 'boolean', help: 'print {vms: [VM...], errors: [...]} (schema: docs/vms.md)' },
  },
  async run(args, ctx) {
    const { vms, errors } = await listVms(vmDeps(ctx).root);
    if (bool(args, 'json')) printJson(ctx.out, { vms, errors });
    else {
      if (vms.length === 0 && errors.length === 0)
        println(ctx.out, 'no VMs; start one with: nestvirt run --wait');
      else if (vms.length) println(ctx.out, vmTable(ctx.out, vms));
      for (const e of errors)
        eprintln(ctx.out, `nestvirt: ${e.name}: ${e.message}${e.hint ? ` (fix: ${e.hint})` : ''}`);
    }
    return 0;
  },
};
