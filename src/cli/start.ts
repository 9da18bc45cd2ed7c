import type { Command } from './command.js';
import { bool, str } from './command.js';
import { printJson, println } from './output.js';
import { startVm, waitReady } from '../vm/lifecycle.js';
import { vmDeps } from '../vm/cli-support.js';
import { checkVmName, parseSeconds } from '../vm/parse.js';

export const startCommand: Command = {
  name: 'start',
  summary: 'start a stopped VM',
  usage: 'start VM [--wait] [--wait-timeout S] [--json]',
  description:
    "Starts the VM's QEMU in the background (nothing happens when it already runs).\n\nexample:\n  nestvirt start t1 --wait",
  positionals: [1, 1],
  flags: {
    wait: { type: 'boolean', help: 'wait until the guest agent answers' },
    'wait-timeout': {
      type: 'string',
      arg: 'SECONDS',
      help: 'give up waiting after this long (default 300)',
    },
    json: {
      type: 'boolean',
      help: 'print {name, status, pid, accel, alreadyRunning, readyMs, notes}',
    },
  },
  async run(args, ctx) {
    const name = checkVmName(args.positionals[0]!);
    const waitS = parseSeconds('--wait-timeout', str(args, 'wait-timeout') ?? '300');
    const deps = vmDeps(ctx);
    const s = await startVm(name, deps);
    const readyMs = bool(args, 'wait') ? (await waitReady(name, deps, waitS * 1000)).readyMs : null;
    if (bool(args, 'json'))
      printJson(ctx.out, {
        name,
        status: 'running',
        pid: s.pid,
        accel: s.accel,
        alreadyRunning: s.alreadyRunning,
        readyMs,
        notes: s.notes,
      });
    else
      println(
        ctx.out,
        s.alreadyRunning
          ? `${name} is already running (pid ${s.pid})`
          : readyMs !== null
            ? `${name} ready in ${(readyMs / 1000).toFixed(2)} s`
            : `${name} started`,
      );
    return 0;
  },
};
