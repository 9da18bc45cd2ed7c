import type { Command } from './command.js';
import { bool, str } from './command.js';
import { printJson, println } from './output.js';
import { stopVm } from '../vm/lifecycle.js';
import { vmDeps } from '../vm/cli-support.js';
import { checkVmName, parseSeconds } from '../vm/parse.js';

export const stopCommand: Command = {
  name: 'stop',
  summary: 'shut a VM down (ACPI power button, then forced after --timeout)',
  usage: 'stop VM [--timeout S] [--force] [--json]',
  description: [
    'Presses the virtual power button (QMP system_powerdown) and waits for the guest to',
    'power off; after --timeout seconds QEMU is told to quit, and killed if it does not.',
    '',
    'example:',
    '  nestvirt stop t1 --timeout 10',
  ].join('\n'),
  positionals: [1, 1],
  flags: {
    timeout: {
      type: 'string',
      arg: 'SECONDS',
      help: 'how long the guest gets to power off (default 30)',
    },
    force: { type: 'boolean', help: 'do not wait for the guest: quit QEMU now' },
    json: { type: 'boolean', help: 'print {name, status, how, ms}; how: powerdown|quit|kill|none' },
  },
  async run(args, ctx) {
    const name = checkVmName(args.positionals[0]!);
    const timeoutS = parseSeconds('--timeout', str(args, 'timeout') ?? '30');
    const r = await stopVm(name, vmDeps(ctx), { timeoutS, force: bool(args, 'force') });
    if (bool(args, 'json')) printJson(ctx.out, { name, status: 'stopped', how: r.how, ms: r.ms });
    else
      println(
        ctx.out,
        r.how === 'none'
          ? `${name} is not running`
          : r.how === 'powerdown'
            ? `${name} shut down (${(r.ms / 1000).toFixed(1)} s)`
            : `${name} stopped by force (${r.how}) after ${(r.ms / 1000).toFixed(1)} s: the guest did not power off in time`,
      );
    return 0;
  },
};
