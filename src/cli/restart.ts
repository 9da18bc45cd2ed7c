import type { Command } from './command.js';
import { bool, str } from './command.js';
import { printJson, println } from './output.js';
import { startVm, stopVm, waitReady } from '../vm/lifecycle.js';
import { vmDeps } from '../vm/cli-support.js';
import { checkVmName, parseSeconds } from '../vm/parse.js';

export const restartCommand: Command = {
  name: 'restart',
  summary: 'stop a VM (as `stop`) and start it again',
  usage: 'restart VM [--timeout S] [--force] [--wait] [--json]',
  positionals: [1, 1],
  flags: {
    timeout: {
      type: 'string',
      arg: 'SECONDS',
      help: 'how long the guest gets to power off (default 30)',
    },
    force: { type: 'boolean', help: 'do not wait for the guest to power off' },
    wait: { type: 'boolean', help: 'wait until the guest agent answers again' },
    'wait-timeout': {
      type: 'string',
      arg: 'SECONDS',
      help: 'give up waiting after this long (default 300)',
    },
    json: { type: 'boolean', help: 'print {name, stop: {how, ms}, start: {pid, accel, readyMs}}' },
  },
  async run(args, ctx) {
    const name = checkVmName(args.positionals[0]!);
    const timeoutS = parseSeconds('--timeout', str(args, 'timeout') ?? '30');
    const waitS = parseSeconds('--wait-timeout', str(args, 'wait-timeout') ?? '300');
    const deps = vmDeps(ctx);
    const stop = await stopVm(name, deps, { timeoutS, force: bool(args, 'force') });
    const start = await startVm(name, deps);
    const readyMs = bool(args, 'wait') ? (await waitReady(name, deps, waitS * 1000)).readyMs : null;
    if (bool(args, 'json'))
      printJson(ctx.out, {
        name,
        stop: { how: stop.how, ms: stop.ms },
        start: { pid: start.pid, accel: start.accel, readyMs },
      });
    else
      println(
        ctx.out,
        `${name} restarted${readyMs !== null ? `, ready in ${(readyMs / 1000).toFixed(2)} s` : ''}`,
      );
    return 0;
  },
};
