import type { Command } from './command.js';
import { bool } from './command.js';
import { printJson, println } from './output.js';
import { rmBroken, rmVm } from '../vm/lifecycle.js';
import { vmDeps } from '../vm/cli-support.js';
import { checkVmName } from '../vm/parse.js';

export const rmCommand: Command = {
  name: 'rm',
  summary: 'remove a VM (its disk overlay, logs and state)',
  usage: 'rm VM... [--force] [--json]',
  description:
    'Refuses a running VM unless --force (which kills it first). Base images are not touched.',
  positionals: [1, Infinity],
  flags: {
    force: {
      type: 'boolean',
      help: 'kill a running VM first; also removes a VM whose spec is unreadable',
    },
    json: { type: 'boolean', help: 'print {removed: [{name, killed}]}' },
  },
  async run(args, ctx) {
    const names = args.positionals.map(checkVmName);
    const deps = vmDeps(ctx);
    const removed: { name: string; killed: boolean }[] = [];
    for (const name of names) {
      try {
        removed.push({ name, ...(await rmVm(name, deps, { force: bool(args, 'force') })) });
      } catch (e) {
        if (
          bool(args, 'force') &&
          (e as { code?: string }).code === 'vm.corrupt' &&
          (await rmBroken(name, deps))
        )
          removed.push({ name, killed: false });
        else throw e;
      }
      if (!bool(args, 'json'))
        println(
          ctx.out,
          `${name} removed${removed.at(-1)!.killed ? ' (was running: killed)' : ''}`,
        );
    }
    if (bool(args, 'json')) printJson(ctx.out, { removed });
    return 0;
  },
};
