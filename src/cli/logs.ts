import type { Command } from './command.js';
import { bool, str } from './command.js';
import { printJson } from './output.js';
import { vmDeps } from '../vm/cli-support.js';
import { checkVmName } from '../vm/parse.js';
import { reconcile, tailLines, vmPaths } from '../vm/state.js';
import { printLogs } from '../vm/logs.js';
import { UsageError } from '../errors.js';

export const logsCommand: Command = {
  name: 'logs',
  summary: "a VM's serial console output (kept across starts)",
  usage: 'logs VM [-f] [-n LINES] [--json]',
  description:
    'examples:\n  nestvirt logs t1 -n 20\n  nestvirt logs t1 -f      # follow until the VM stops (Ctrl-C to quit)',
  positionals: [1, 1],
  flags: {
    follow: { type: 'boolean', short: 'f', help: 'keep printing new output while the VM runs' },
    lines: { type: 'string', short: 'n', arg: 'N', help: 'only the last N lines' },
    json: {
      type: 'boolean',
      help: 'print {name, lines: [...]} (console text, control codes removed)',
    },
  },
  async run(args, ctx) {
    const name = checkVmName(args.positionals[0]!);
    const p = vmPaths(vmDeps(ctx).root, name);
    const r = await reconcile(p, { write: 'try' });
    const n = str(args, 'lines');
    if (n !== undefined && !/^\d+$/.test(n))
      throw new UsageError(
        'vm.bad-lines',
        `--lines must be a whole number, got ${JSON.stringify(n)}`,
      );
    if (bool(args, 'json')) {
      printJson(ctx.out, {
        name,
        lines: await tailLines(p.serialLog, n !== undefined ? Number(n) : 100_000),
      });
      return 0;
    }
    const ac = new AbortController();
    const onInt = (): void => ac.abort();
    process.once('SIGINT', onInt);
    try {
      await printLogs(p, ctx.out.stdout, {
        ...(n !== undefined ? { lines: Number(n) } : {}),
        follow: bool(args, 'follow'),
        pid: r.pid,
        signal: ac.signal,
      });
    } finally {
      process.removeListener('SIGINT', onInt);
    }
    return 0;
  },
};
